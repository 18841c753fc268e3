//! The OpenAPI document, generated from the handlers, and the Swagger UI served from the binary.
//! tests/openapi.rs runs the document against the server.

use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder, Type};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

use super::{
    about, auth, config, fs, ingest, log, memfs, metadata, monitor, pages, process, session,
    sessions, skills, webrtc, whep, whip,
};

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()),
        );
    }
}

/// The WHEP and WHIP paths the router serves under `/api/v3` as well.
const SIGNALLING: [&str; 2] = ["/whep/", "/whip/"];

/// The second path the router serves a documented path at, and the prefix of its operation ids.
fn alias_of(path: &str) -> Option<(String, &'static str)> {
    if SIGNALLING.iter().any(|p| path.starts_with(p)) {
        Some((format!("/api/v3{path}"), "api_v3_"))
    } else if path == "/player" {
        Some(("/player/".into(), "slash_"))
    } else {
        None
    }
}

/// What the router and the extractors do around the handlers, which their annotations cannot
/// see: the admin guard on `/api/v3`, the body limit, unreadable parameters (see
/// [`super::params`]), and the second home of WHEP and WHIP. Also makes the
/// operation ids unique (handlers of different modules share names such as `post`).
struct RouterLayers;

impl Modify for RouterLayers {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let paths = &mut openapi.paths.paths;
        shared_with_whip(paths);
        for item in paths.values_mut() {
            for operation in operations(item) {
                unique_id(operation);
                if operation.request_body.is_some() {
                    error_response(operation, 413, "The body is over http.max_body_bytes", None);
                }
                // The pages read their parameters in the browser.
                let pages = operation.tags.iter().flatten().any(|t| t == "pages");
                if operation.parameters.as_ref().is_some_and(|p| !p.is_empty()) && !pages {
                    error_response(operation, 400, "A parameter that cannot be read", None);
                }
            }
        }
        let aliases: Vec<(String, PathItem)> = paths
            .iter()
            .filter_map(|(path, item)| {
                let (alias, id_prefix) = alias_of(path)?;
                let mut item = item.clone();
                for operation in operations(&mut item) {
                    operation.operation_id = operation
                        .operation_id
                        .as_ref()
                        .map(|id| format!("{id_prefix}{id}"));
                }
                Some((alias, item))
            })
            .collect();
        paths.extend(aliases);
        for (path, item) in paths.iter_mut() {
            let guarded = path.starts_with("/api/v3/")
                && !SIGNALLING.iter().any(|p| path[7..].starts_with(p));
            if !guarded {
                continue;
            }
            for operation in operations(item) {
                operation.security =
                    Some(vec![SecurityRequirement::new("bearer", [] as [&str; 0])]);
                error_response(
                    operation,
                    401,
                    "Missing or invalid access token",
                    Some("WWW-Authenticate"),
                );
                error_response(
                    operation,
                    403,
                    "A client on another host while no credentials are set, or a browser page of a site http.cors_origins does not name (docs/security.md)",
                    None,
                );
            }
        }
    }
}

/// The session handlers (and OPTIONS on the endpoint) serve WHEP and WHIP alike and are
/// documented at the WHEP paths: the same operations at the WHIP paths, tagged `whip`.
fn shared_with_whip(paths: &mut utoipa::openapi::path::PathsMap<String, PathItem>) {
    let retag = |operation: &Operation| {
        let mut operation = operation.clone();
        operation.tags = Some(vec!["whip".into()]);
        operation
    };
    if let Some(session) = paths.get("/whep/{id}/{resource}") {
        let mut item = session.clone();
        for operation in operations(&mut item) {
            *operation = retag(operation);
        }
        paths.insert("/whip/{id}/{resource}".into(), item);
    }
    let options = paths
        .get("/whep/{id}")
        .and_then(|endpoint| endpoint.options.as_ref())
        .map(retag);
    if let (Some(options), Some(endpoint)) = (options, paths.get_mut("/whip/{id}")) {
        endpoint.options = Some(options);
    }
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

/// `{tag}_{handler}`, unless the handler's name already starts with the tag.
fn unique_id(operation: &mut Operation) {
    let tag = operation.tags.as_ref().and_then(|t| t.first()).cloned();
    if let (Some(tag), Some(id)) = (tag, operation.operation_id.as_mut()) {
        if *id != tag && !id.starts_with(&format!("{tag}_")) {
            *id = format!("{tag}_{id}");
        }
    }
}

/// Declares an `ErrorBody` answer (with a required header) unless the handler declares its own.
fn error_response(operation: &mut Operation, status: u16, description: &str, header: Option<&str>) {
    let responses = &mut operation.responses.responses;
    if responses.contains_key(&status.to_string()) {
        return;
    }
    let mut response = ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("ErrorBody")))
            .build(),
    );
    if let Some(name) = header {
        response = response.header(
            name,
            HeaderBuilder::new()
                .schema(utoipa::openapi::ObjectBuilder::new().schema_type(Type::String))
                .build(),
        );
    }
    responses.insert(status.to_string(), response.build().into());
}

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(title = "streamcore", description = "datarhei Core v3 compatible process API"),
    modifiers(&BearerAuth, &RouterLayers),
    paths(
        super::ping, super::prometheus,
        about::about, auth::login, auth::refresh,
        process::list, process::create, process::get_one, process::update, process::delete,
        process::command, process::config, process::state, process::report, process::probe,
        metadata::process_all, metadata::process_get, metadata::process_put,
        metadata::system_all, metadata::system_get, metadata::system_put,
        skills::get, skills::reload,
        fs::list_filesystems, fs::list_files, fs::get_file, fs::put_file, fs::delete_file,
        memfs::get, memfs::put, memfs::post, memfs::delete,
        config::get, config::put, config::reload, sessions::summary, sessions::active,
        monitor::describe, monitor::query, log::get,
        ingest::rtmp, ingest::srt,
        webrtc::info, webrtc::issue_token, webrtc::sessions, webrtc::kick,
        whep::list, whep::post, whep::endpoint_head,
        session::endpoint_options, session::session_patch, session::session_delete,
        session::session_get, session::session_options,
        webrtc::whip_info, webrtc::issue_publish_token,
        whip::post, whip::endpoint_get,
        pages::index, pages::player, pages::player_js, pages::publish,
        pages::publish_js, pages::webrtc_js,
    )
)]
pub struct ApiDoc;

const DOC_PATH: &str = "/api/swagger/doc.json";

/// Router serving `/api/swagger/index.html` and `/api/swagger/doc.json`.
pub fn swagger<S: Clone + Send + Sync + 'static>() -> axum::Router<S> {
    let ui: axum::Router<S> = SwaggerUi::new("/api/swagger")
        .config(utoipa_swagger_ui::Config::from(DOC_PATH))
        .into();
    ui.route(DOC_PATH, axum::routing::get(doc))
}

/// The document, built on its first request and kept as JSON (~120 KB): built at start and
/// kept as utoipa's structure, as `SwaggerUi::url` does, it held ~2.5 MiB of heap for a page
/// few servers are ever asked for.
async fn doc() -> axum::response::Response {
    use axum::response::IntoResponse;
    static JSON: std::sync::OnceLock<axum::body::Bytes> = std::sync::OnceLock::new();
    let json = match JSON.get() {
        Some(json) => json.clone(),
        None => {
            let built = tokio::task::spawn_blocking(|| {
                let json = JSON
                    .get_or_init(|| {
                        serde_json::to_vec(&ApiDoc::openapi())
                            .unwrap_or_default()
                            .into()
                    })
                    .clone();
                // Building it took ~2.5 MiB that glibc would otherwise keep (measured: idle
                // RSS 37 → 41 MiB after the first request).
                #[cfg(target_env = "gnu")]
                // SAFETY: malloc_trim only hands free heap pages back; it takes no pointers.
                unsafe {
                    libc::malloc_trim(0);
                }
                json
            })
            .await;
            match built {
                Ok(json) if !json.is_empty() => json,
                _ => return axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response(),
            }
        }
    };
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        json,
    )
        .into_response()
}

//! The HTTP API: router, shared state and middleware. Handlers live in the submodules.

pub mod about;
pub mod auth;
pub mod client;
pub mod config;
pub mod error;
pub mod files;
pub mod fs;
pub mod ingest;
pub mod json;
pub mod log;
pub mod login_limit;
pub mod memfs;
pub mod metadata;
pub mod monitor;
pub mod openapi;
pub mod pages;
pub mod params;
pub mod process;
pub mod redact;
pub mod session;
pub mod sessions;
pub mod signalling;
pub mod skills;
pub mod webrtc;
pub mod whep;
pub mod whip;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use tower::ServiceExt;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::services::ServeDir;
use tower_http::trace::TraceLayer;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::process::Registry;
use crate::store::Store;
use crate::webrtc::sdp_limits;
use error::ApiError;

/// Identity of this server instance, shown by `GET /api`.
#[derive(Debug, Clone)]
pub struct Instance {
    /// Persistent id.
    pub id: String,
    /// Persistent name.
    pub name: String,
    /// When this process started.
    pub started_at: chrono::DateTime<chrono::Utc>,
}

/// State shared by every handler.
#[derive(Clone)]
pub struct AppState {
    /// The processes.
    pub registry: Arc<Registry>,
    /// The WebRTC media engine; `None` when it is off.
    pub media: Option<Arc<crate::media::Media>>,
    /// The store (system metadata is read and written directly).
    pub store: Arc<Store>,
    /// Token issuer and checker; `None` when auth is off.
    pub auth: Option<Arc<Authenticator>>,
    /// Issuer and checker of WHEP viewer tokens (present with auth off too).
    pub process_tokens: Arc<crate::webrtc::token::ProcessTokens>,
    /// The configuration in force.
    pub config: Arc<Config>,
    /// Prometheus families.
    pub metrics: Arc<Metrics>,
    /// ffmpeg capabilities, refreshed by `/api/v3/skills/reload`.
    pub skills: Arc<skills::SkillsCache>,
    /// Who we are.
    pub instance: Arc<Instance>,
    /// Per-client lockout of `POST /api/login`.
    pub login_limiter: Arc<login_limit::LoginLimiter>,
    /// The `disk` and `mem` file systems.
    pub filesystems: crate::fs::Filesystems,
    /// The datarhei view of the configuration and the reload signal.
    pub core_config: Arc<crate::coreconfig::ConfigState>,
    /// Session collectors.
    pub sessions: Arc<crate::sessions::Sessions>,
    /// The metrics history of `POST /api/v3/metrics`.
    pub history: Arc<crate::history::History>,
    /// The RTMP and SRT servers.
    pub ingest: Arc<crate::ingest::Ingest>,
}

/// Builds the whole router.
pub fn router(state: AppState) -> Router {
    let v3 = Router::new()
        .route("/process", get(process::list).post(process::create))
        .route(
            "/process/{id}",
            get(process::get_one)
                .put(process::update)
                .delete(process::delete),
        )
        .route("/process/{id}/command", put(process::command))
        .route("/process/{id}/config", get(process::config))
        .route("/process/{id}/state", get(process::state))
        .route("/process/{id}/report", get(process::report))
        .route("/process/{id}/probe", get(process::probe))
        .route("/process/{id}/metadata", get(metadata::process_all))
        .route(
            "/process/{id}/metadata/{key}",
            get(metadata::process_get).put(metadata::process_put),
        )
        .route("/metadata", get(metadata::system_all))
        .route(
            "/metadata/{key}",
            get(metadata::system_get).put(metadata::system_put),
        )
        .route("/rtmp", get(ingest::rtmp))
        .route("/srt", get(ingest::srt))
        .route("/skills", get(skills::get))
        .route("/skills/reload", get(skills::reload))
        .route("/process/{id}/webrtc", get(webrtc::info))
        .route("/process/{id}/webrtc/token", post(webrtc::issue_token))
        .route("/process/{id}/whip", get(webrtc::whip_info))
        .route(
            "/process/{id}/whip/token",
            post(webrtc::issue_publish_token),
        )
        .route("/fs", get(fs::list_filesystems))
        .route("/fs/{name}", get(fs::list_files))
        .route(
            "/fs/{name}/{*path}",
            get(fs::get_file).put(fs::put_file).delete(fs::delete_file),
        )
        .route("/config", get(config::get).put(config::put))
        .route("/config/reload", get(config::reload))
        .route("/session", get(sessions::summary))
        .route("/session/active", get(sessions::active))
        .route("/metrics", get(monitor::describe).post(monitor::query))
        .route("/log", get(log::get))
        .route("/webrtc/sessions", get(webrtc::sessions))
        .route(
            "/webrtc/sessions/{resource}",
            axum::routing::delete(webrtc::kick),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_access,
        ))
        .layer(CompressionLayer::new().gzip(true));

    let mut api = Router::new()
        .route("/api", get(about::about))
        .nest("/api/v3", v3)
        .merge(openapi::swagger());
    if state.auth.is_some() {
        api = api
            .route(
                "/api/login",
                post(auth::login)
                    .layer(axum::extract::DefaultBodyLimit::max(auth::LOGIN_BODY_LIMIT)),
            )
            .route("/api/login/refresh", get(auth::refresh));
    }
    // The control API: only the origins the operator named may use it from a browser.
    let api = api.layer(cors(cors_origins(&state.config.http.cors_origins)));

    let mut whep = Router::new().route("/whep", get(whep::list));
    // The same WHEP resources at the datarhei-style path; neither is behind the admin guard.
    // SDP bodies have their own, much smaller size limits (see webrtc::sdp_limits); a route's
    // limit replaces the server's, so the smaller of the two applies.
    let max_body = state.config.http.max_body_bytes;
    let offer_limit = move || DefaultBodyLimit::max(sdp_limits::MAX_OFFER_BYTES.min(max_body));
    let fragment_limit =
        move || DefaultBodyLimit::max(sdp_limits::MAX_FRAGMENT_BYTES.min(max_body));
    // One handler set for WHEP and WHIP sessions; each handler tells the two apart by its path.
    let session_routes = move || {
        axum::routing::patch(session::session_patch)
            .layer(fragment_limit())
            .delete(session::session_delete)
            .get(session::session_get)
            .options(session::session_options)
    };
    for prefix in ["/whep", "/api/v3/whep"] {
        whep = whep
            .route(
                &format!("{prefix}/{{id}}"),
                post(whep::post)
                    .layer(offer_limit())
                    .get(whep::endpoint_head)
                    .options(session::endpoint_options),
            )
            .route(&format!("{prefix}/{{id}}/{{resource}}"), session_routes());
    }
    // WHIP at the same two places; the endpoint checks its own tokens.
    for prefix in ["/whip", "/api/v3/whip"] {
        whep = whep
            .route(
                &format!("{prefix}/{{id}}"),
                post(whip::post)
                    .layer(offer_limit())
                    .get(whip::endpoint_get)
                    .options(session::endpoint_options),
            )
            .route(&format!("{prefix}/{{id}}/{{resource}}"), session_routes());
    }
    // WHEP/WHIP are made for players and publishers on any site; their tokens travel in the
    // Authorization header, never in cookies, so any origin may call them.
    let whep = whep.layer(cors(AllowOrigin::any()));
    // The memory file system: players on any site read it; writes need its Basic credentials.
    let memfs = Router::new()
        .route("/memfs", get(memfs::root))
        .route("/memfs/", get(memfs::root))
        .route(
            "/memfs/{*path}",
            put(memfs::put)
                .post(memfs::post)
                .delete(memfs::delete)
                .route_layer(middleware::from_fn_with_state(
                    state.clone(),
                    memfs::require_basic,
                ))
                .get(memfs::get),
        )
        .layer(cors(AllowOrigin::any()));
    Router::new()
        .route("/ping", get(ping))
        .route("/player", get(pages::index))
        .route("/player/", get(pages::index))
        .route("/player/{id}", get(pages::player))
        .route("/player.js", get(pages::player_js))
        .route("/publish/{id}", get(pages::publish))
        .route("/publish.js", get(pages::publish_js))
        .route("/webrtc.js", get(pages::webrtc_js))
        .merge(whep)
        .merge(memfs)
        .route("/metrics", get(prometheus))
        .merge(api)
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .fallback(fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(
            state.config.http.max_body_bytes,
        ))
        // Outside the CORS layers, so its preflight answers get the WHEP headers too.
        .layer(middleware::from_fn(signalling::cors_headers))
        // A panic in a handler is a JSON 500 that does not repeat the panic message.
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal Server Error",
                "internal error; the server log has the cause",
            )
            .into_response()
        }))
        // Tokens in query strings never reach the log (see redact).
        .layer(TraceLayer::new_for_http().make_span_with(redact::request_span))
        .with_state(state)
}

fn cors_origins(origins: &[String]) -> AllowOrigin {
    if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    }
}

fn cors(allow: AllowOrigin) -> CorsLayer {
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([
            Method::GET,
            Method::HEAD,
            Method::PUT,
            Method::POST,
            Method::DELETE,
            Method::PATCH,
        ])
        .allow_headers([
            header::ORIGIN,
            header::CONTENT_LENGTH,
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            header::IF_MATCH,
        ])
        .max_age(std::time::Duration::from_secs(86400))
}

/// Unknown routes: JSON 404 under `/api`, files of the public directory everywhere else.
async fn fallback(State(state): State<AppState>, req: Request) -> Response {
    let path = req.uri().path();
    let response = if path == "/api" || path.starts_with("/api/") {
        ApiError::status(StatusCode::NOT_FOUND).into_response()
    } else {
        let files = ServeDir::new(state.config.storage.public_path())
            .append_index_html_on_directories(true)
            .not_found_service(tower::service_fn(|_| async {
                Ok::<_, std::convert::Infallible>(
                    ApiError::status(StatusCode::NOT_FOUND).into_response(),
                )
            }));
        let mut response = sessions::track(&state.sessions, req, |req| async move {
            match files.oneshot(req).await {
                Ok(response) => response.into_response(),
                Err(never) => match never {},
            }
        })
        .await;
        // Public files (HLS playlists and segments) are meant for players on any site.
        response.headers_mut().insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        response
    };
    state
        .metrics
        .http_request("-", "fallback", response.status().as_u16());
    response
}

async fn method_not_allowed() -> ApiError {
    ApiError::status(StatusCode::METHOD_NOT_ALLOWED)
}

/// Liveness.
#[utoipa::path(get, path = "/ping", tag = "about",
    responses((status = 200, body = String, content_type = "text/plain", example = "pong")))]
async fn ping() -> &'static str {
    "pong"
}

/// Prometheus metrics (text exposition format 0.0.4).
#[utoipa::path(get, path = "/metrics", tag = "about",
    responses((status = 200, body = String, content_type = "text/plain")))]
async fn prometheus(State(state): State<AppState>) -> impl IntoResponse {
    // Rendering reads every viewer's webrtcbin stats, which blocks.
    let text = tokio::task::spawn_blocking(move || state.metrics.render(&state.registry))
        .await
        .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}

async fn count_requests(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let response = next.run(req).await;
    let status = response.status().as_u16();
    state.metrics.http_request(&method, &route, status);
    if route.starts_with("/whip") || route.starts_with("/api/v3/whip") {
        state.metrics.whip_request(&method, &route, status);
    }
    if route.starts_with("/whep") || route.starts_with("/api/v3/whep") {
        state.metrics.whep_request(&method, &route, status);
    }
    response
}

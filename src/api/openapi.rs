//! The OpenAPI document, generated from the handlers, and the Swagger UI served from the binary.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

use super::{about, auth, metadata, process, skills, webrtc, whep, whip};

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
    }
}

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(title = "streamcore", description = "datarhei Core v3 compatible process API"),
    modifiers(&BearerAuth),
    paths(
        about::about, auth::login, auth::refresh,
        process::list, process::create, process::get_one, process::update, process::delete,
        process::command, process::config, process::state, process::report, process::probe,
        metadata::process_all, metadata::process_get, metadata::process_put,
        metadata::system_all, metadata::system_get, metadata::system_put,
        skills::get, skills::reload,
        webrtc::info, webrtc::issue_token, webrtc::sessions, webrtc::kick,
        whep::list, whep::post, whep::endpoint_head, whep::endpoint_options, whep::patch, whep::delete,
        webrtc::whip_info, webrtc::issue_publish_token,
        whip::post, whip::endpoint_get, whip::endpoint_options, whip::patch, whip::delete,
    )
)]
pub struct ApiDoc;

/// Router serving `/api/swagger/index.html` and `/api/swagger/doc.json`.
pub fn swagger<S: Clone + Send + Sync + 'static>() -> axum::Router<S> {
    SwaggerUi::new("/api/swagger")
        .url("/api/swagger/doc.json", ApiDoc::openapi())
        .into()
}

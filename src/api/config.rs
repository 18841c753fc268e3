//! `GET/PUT /api/v3/config` and `GET /api/v3/config/reload` (datarhei Core's v3 config API).

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{extract::State, Json};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::error::{ApiError, ApiResult, ErrorBody};
use super::json::JsonBody;
use super::AppState;
use crate::coreconfig::document::{self, Identity};

/// The configuration in force.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConfigAnswer {
    /// When the stored configuration was made (RFC 3339).
    pub created_at: String,
    /// When this run of the server loaded it.
    pub loaded_at: String,
    /// When it last changed.
    pub updated_at: String,
    /// datarhei Core's v3 document with streamcore's own sections (docs/configuration.md).
    pub config: Value,
    /// Settings the environment decides, which a PUT cannot change.
    pub overrides: Vec<String>,
}

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// The document in force, without the request-dependent host names.
fn current(state: &AppState) -> (Value, String) {
    let stored = state
        .core_config
        .stored
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let created_at = rfc3339(stored.created_at);
    let doc = document::render(
        &state.config,
        &stored.config,
        &Identity {
            id: &state.instance.id,
            name: &state.instance.name,
            created_at: &created_at,
        },
    );
    (doc, created_at)
}

/// The host part of a `Host` header.
fn request_host(headers: &HeaderMap) -> Option<String> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    (!name.is_empty()).then(|| name.to_string())
}

/// The configuration in force (file < stored < environment).
#[utoipa::path(get, path = "/api/v3/config", tag = "config", security(("bearer" = [])),
    responses((status = 200, body = ConfigAnswer), (status = 401, body = ErrorBody)))]
pub async fn get(State(state): State<AppState>, headers: HeaderMap) -> Json<ConfigAnswer> {
    let (mut doc, created_at) = current(&state);
    // Core detects its public names; a client needs one for player and embed URLs, and the name
    // it reached us by is the best there is.
    if state.config.host.name.is_empty() && state.config.host.auto {
        if let Some(host) = request_host(&headers) {
            doc["host"]["name"] = Value::Array(vec![Value::String(host)]);
        }
    }
    let updated_at = *state
        .core_config
        .updated_at
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    Json(ConfigAnswer {
        created_at,
        loaded_at: rfc3339(state.core_config.loaded_at),
        updated_at: rfc3339(updated_at),
        config: doc,
        overrides: state.core_config.source.overrides(),
    })
}

/// Stores a configuration, merged over the stored one; it takes effect on reload. Answers 409
/// with `{"<key>": ["message", …]}` when a setting is invalid.
#[utoipa::path(put, path = "/api/v3/config", tag = "config", security(("bearer" = [])),
    request_body(content = Value, description = "a (partial) v3 document with `\"version\": 3`"),
    responses((status = 200, body = String, content_type = "application/json", example = json!("OK")),
        (status = 400, body = ErrorBody),
        (status = 409, body = std::collections::BTreeMap<String, Vec<String>>, description = "invalid settings by key"),
        (status = 500, body = ErrorBody)))]
pub async fn put(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Response> {
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "Invalid JSON",
            "the configuration must be an object",
        ));
    }
    match body.get("version").and_then(Value::as_u64) {
        Some(3) => {}
        Some(1 | 2) => {
            return Err(ApiError::bad_request(
                "Invalid config version",
                "only version 3 documents are accepted",
            ))
        }
        _ => {
            return Err(ApiError::bad_request(
                "Invalid config version",
                "version must be 3",
            ))
        }
    }
    let (in_force, _) = current(&state);
    let mut errors = document::check_body(&body, &in_force);
    let mut merged = state
        .core_config
        .stored
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .config
        .clone();
    document::merge(&mut merged, &body);
    if let Some(object) = merged.as_object_mut() {
        // Timestamps are the server's to set.
        object.remove("created_at");
    }
    if errors.is_empty() {
        let source = state.core_config.source.clone();
        let check = merged.clone();
        let data_dir = state.config.storage.data_dir.clone();
        // Reads the configuration file again.
        errors = tokio::task::spawn_blocking(move || {
            document::check_config(source.load_with(&check), &data_dir)
        })
        .await
        .map_err(|e| ApiError::internal("Cannot check the configuration", &e))?;
    }
    if !errors.is_empty() {
        return Ok((StatusCode::CONFLICT, Json(errors)).into_response());
    }
    let now = chrono::Utc::now();
    let core = state.core_config.clone();
    tokio::task::spawn_blocking(move || {
        core.stored
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(merged, now)
    })
    .await
    .map_err(|e| ApiError::internal("Cannot store the configuration", &e))?
    .map_err(|e| ApiError::internal("Cannot store the configuration", &e))?;
    *state
        .core_config
        .updated_at
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = now;
    tracing::info!("configuration stored; it takes effect on reload");
    Ok(Json("OK").into_response())
}

/// Restarts the server's services with the stored configuration: the HTTP listener (kept open
/// while its address stays the same), auth, the media engine and the processes, which resume as
/// their orders say. Answers before the restart.
#[utoipa::path(get, path = "/api/v3/config/reload", tag = "config", security(("bearer" = [])),
    responses((status = 200, body = String, content_type = "application/json", example = json!("OK")),
        (status = 401, body = ErrorBody)))]
pub async fn reload(State(state): State<AppState>) -> Json<&'static str> {
    tracing::info!("configuration reload requested");
    // The serve loop stops accepting and lets this answer finish before it restarts.
    state.core_config.reload.notify_one();
    Json("OK")
}

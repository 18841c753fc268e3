//! Admin side of WebRTC (under the `/api/v3` guard): a stream's state, viewer tokens, the viewer
//! sessions with their transport figures, and a WHIP input's state and publish tokens.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ApiResult, ErrorBody};
use super::json::OptionalJson;
use super::params::Path;
use super::AppState;
use crate::media::ingest::{Ingest, IngestInfo};
use crate::media::{stats, Stream, StreamInfo};

/// Longest viewer token lifetime a request may ask for: a year.
const MAX_TTL_SECONDS: u64 = 365 * 24 * 3600;

fn stream_of(state: &AppState, id: &str) -> ApiResult<std::sync::Arc<Stream>> {
    let entry = state
        .registry
        .get(id)
        .ok_or_else(|| ApiError::not_found("Unknown process ID", "unknown process"))?;
    entry
        .stream()
        .cloned()
        .ok_or_else(|| ApiError::not_found("WebRTC is not enabled for this process", id))
}

/// The WebRTC stream of a process: its tracks and how they reach viewers, whether media flows,
/// how many viewers watch.
#[utoipa::path(get, path = "/api/v3/process/{id}/webrtc", tag = "webrtc", params(("id" = String, Path)),
    security(("bearer" = [])),
    responses((status = 200, body = StreamInfo), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn info(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<StreamInfo>> {
    Ok(Json(stream_of(&state, &id)?.info()))
}

/// Body of a token request; every field is optional.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct TokenRequest {
    /// Lifetime in seconds; default `webrtc.viewer_token_seconds` (viewer tokens) or
    /// `webrtc.publish_token_seconds` (publish tokens).
    #[schema(minimum = 1, maximum = 31536000)]
    pub ttl_seconds: Option<u64>,
}

/// A viewer token.
#[derive(Debug, Serialize, ToSchema)]
pub struct ViewerToken {
    /// The JWT: `Authorization: Bearer <token>` or `?token=<token>` on the WHEP POST.
    pub token: String,
    /// Expiry, unix seconds.
    pub expires_at: u64,
}

/// Mints a viewer token that opens the WHEP endpoint of this process (and nothing else).
#[utoipa::path(post, path = "/api/v3/process/{id}/webrtc/token", tag = "webrtc", params(("id" = String, Path)),
    request_body(content = Option<TokenRequest>, description = "optional"),
    security(("bearer" = [])),
    responses((status = 200, body = ViewerToken), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn issue_token(
    State(state): State<AppState>,
    Path(id): Path<String>,
    OptionalJson(request): OptionalJson<TokenRequest>,
) -> ApiResult<Json<ViewerToken>> {
    stream_of(&state, &id)?;
    let ttl = requested_ttl(request, state.config.webrtc.viewer_token_seconds)?;
    let issued = state.process_tokens.issue(&id, ttl);
    Ok(Json(ViewerToken {
        token: issued.token,
        expires_at: issued.expires_at,
    }))
}

/// The lifetime a token request asks for (`default` when it names none).
fn requested_ttl(request: TokenRequest, default: u64) -> ApiResult<u64> {
    let ttl = request.ttl_seconds.unwrap_or(default);
    if ttl == 0 || ttl > MAX_TTL_SECONDS {
        return Err(ApiError::bad_request(
            "Invalid ttl_seconds",
            format!("ttl_seconds must be between 1 and {MAX_TTL_SECONDS}"),
        ));
    }
    Ok(ttl)
}

fn ingest_of(state: &AppState, id: &str) -> ApiResult<std::sync::Arc<Ingest>> {
    let entry = state
        .registry
        .get(id)
        .ok_or_else(|| ApiError::not_found("Unknown process ID", "unknown process"))?;
    entry.ingest().cloned().ok_or_else(|| {
        ApiError::not_found(
            "This process has no WHIP input",
            "no input address is {whip}",
        )
    })
}

/// The WHIP input of a process: the ports and SDP file FFmpeg reads, and the publisher.
#[utoipa::path(get, path = "/api/v3/process/{id}/whip", tag = "whip", params(("id" = String, Path)),
    security(("bearer" = [])),
    responses((status = 200, body = IngestInfo), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 500, body = ErrorBody)))]
pub async fn whip_info(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<IngestInfo>> {
    let ingest = ingest_of(&state, &id)?;
    let info = tokio::task::spawn_blocking(move || ingest.info())
        .await
        .map_err(|e| ApiError::internal("Cannot read the WHIP input", &e))?;
    Ok(Json(info))
}

/// A publish token.
#[derive(Debug, Serialize, ToSchema)]
pub struct PublishToken {
    /// The JWT: `Authorization: Bearer <token>` (or `?token=<token>`) on the WHIP POST.
    pub token: String,
    /// Expiry, unix seconds.
    pub expires_at: u64,
    /// The WHIP endpoint it opens (path; prefix the server's address).
    pub url: String,
}

/// Mints a publish token that opens the WHIP endpoint of this process (and nothing else: not
/// the API, not the WHEP side).
#[utoipa::path(post, path = "/api/v3/process/{id}/whip/token", tag = "whip", params(("id" = String, Path)),
    request_body(content = Option<TokenRequest>, description = "optional"),
    security(("bearer" = [])),
    responses((status = 200, body = PublishToken), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn issue_publish_token(
    State(state): State<AppState>,
    Path(id): Path<String>,
    OptionalJson(request): OptionalJson<TokenRequest>,
) -> ApiResult<Json<PublishToken>> {
    ingest_of(&state, &id)?;
    let ttl = requested_ttl(request, state.config.webrtc.publish_token_seconds)?;
    let issued = state.process_tokens.issue_publish(&id, ttl);
    Ok(Json(PublishToken {
        token: issued.token,
        expires_at: issued.expires_at,
        url: format!("/whip/{}", super::signalling::urlencoding(&id)),
    }))
}

/// One WHEP viewer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Session {
    /// Resource id (the last segment of its WHEP session URL).
    pub resource: String,
    /// The process watched.
    pub process: String,
    /// Peer connection state (`new`, `connecting`, `connected`, ...).
    pub state: String,
    /// Codecs sent.
    pub codecs: Vec<String>,
    /// Seconds since the POST.
    pub age_seconds: u64,
    /// Transport figures from webrtcbin; all zero/absent when they could not be read.
    #[serde(flatten)]
    pub stats: stats::ViewerStats,
}

/// Every WHEP viewer, with its transport figures.
#[utoipa::path(get, path = "/api/v3/webrtc/sessions", tag = "webrtc", security(("bearer" = [])),
    responses((status = 200, body = [Session]), (status = 401, body = ErrorBody), (status = 500, body = ErrorBody)))]
pub async fn sessions(State(state): State<AppState>) -> ApiResult<Json<Vec<Session>>> {
    let registry = state.registry.clone();
    // get-stats waits on each viewer's webrtcbin: keep it off the runtime.
    let list = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        for entry in registry.list() {
            let Some(stream) = entry.stream() else {
                continue;
            };
            for session in stream.sessions() {
                let stats = stream
                    .viewer_webrtcbin(&session.id)
                    .and_then(|bin| stats::collect(&bin).ok())
                    .unwrap_or_default();
                out.push(Session {
                    resource: session.id,
                    process: entry.record.config.id.clone(),
                    state: session.state,
                    codecs: session.codecs,
                    age_seconds: session.age_seconds,
                    stats,
                });
            }
        }
        out.sort_by(|a, b| (&a.process, &a.resource).cmp(&(&b.process, &b.resource)));
        out
    })
    .await
    .map_err(|e| ApiError::internal("Cannot list sessions", &e))?;
    Ok(Json(list))
}

/// Disconnects a viewer.
#[utoipa::path(delete, path = "/api/v3/webrtc/sessions/{resource}", tag = "webrtc",
    params(("resource" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = String, content_type = "application/json", example = json!("OK")), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 500, body = ErrorBody)))]
pub async fn kick(
    State(state): State<AppState>,
    Path(resource): Path<String>,
) -> ApiResult<Json<&'static str>> {
    let stream = state
        .registry
        .list()
        .into_iter()
        .filter_map(|e| e.stream().cloned())
        .find(|s| s.has_viewer(&resource))
        .ok_or_else(|| ApiError::not_found("Unknown WHEP session", "no such resource"))?;
    let removed = tokio::task::spawn_blocking(move || stream.remove_viewer(&resource))
        .await
        .map_err(|e| ApiError::internal("Cannot remove the viewer", &e))?;
    if removed {
        Ok(Json("OK"))
    } else {
        // It left between the lookup and the removal.
        Err(ApiError::status(StatusCode::NOT_FOUND))
    }
}

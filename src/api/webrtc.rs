//! Admin side of WebRTC (under the `/api/v3` guard): a stream's state, viewer tokens, every
//! session (viewers and publishers, from the media layer's registry) with its transport figures,
//! and a WHIP input's state and publish tokens.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ApiResult, ErrorBody};
use super::json::OptionalJson;
use super::params::Path;
use super::session::{endpoint, ingest_of, process, stream_of, Protocol};
use super::AppState;
use crate::media::ingest::IngestInfo;
use crate::media::{StreamInfo, ViewerStats};
use crate::webrtc::token::Issued;

/// Longest viewer token lifetime a request may ask for: a year.
const MAX_TTL_SECONDS: u64 = 365 * 24 * 3600;

/// The WebRTC stream of a process: its tracks and how they reach viewers, whether media flows,
/// how many viewers watch.
#[utoipa::path(get, path = "/api/v3/process/{id}/webrtc", tag = "webrtc", params(("id" = String, Path)),
    security(("bearer" = [])),
    responses((status = 200, body = StreamInfo), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn info(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<StreamInfo>> {
    Ok(Json(stream_of(&*process(&state, &id)?)?.info()))
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
    let issued = issue(&state, &id, Protocol::Whep, request)?;
    Ok(Json(ViewerToken {
        token: issued.token,
        expires_at: issued.expires_at,
    }))
}

/// The one token issuer: a viewer (WHEP) or publish (WHIP) token for a process that has that
/// endpoint, for the lifetime asked (or the configured default).
fn issue(
    state: &AppState,
    id: &str,
    protocol: Protocol,
    request: TokenRequest,
) -> ApiResult<Issued> {
    endpoint(state, id, protocol)?;
    let webrtc = &state.config.webrtc;
    let ttl = request.ttl_seconds.unwrap_or(match protocol {
        Protocol::Whep => webrtc.viewer_token_seconds,
        Protocol::Whip => webrtc.publish_token_seconds,
    });
    if ttl == 0 || ttl > MAX_TTL_SECONDS {
        return Err(ApiError::bad_request(
            "Invalid ttl_seconds",
            format!("ttl_seconds must be between 1 and {MAX_TTL_SECONDS}"),
        ));
    }
    Ok(match protocol {
        Protocol::Whep => state.process_tokens.issue(id, ttl),
        Protocol::Whip => state.process_tokens.issue_publish(id, ttl),
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
    let ingest = ingest_of(&*process(&state, &id)?)?;
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
    let issued = issue(&state, &id, Protocol::Whip, request)?;
    Ok(Json(PublishToken {
        token: issued.token,
        expires_at: issued.expires_at,
        url: format!("/whip/{}", super::signalling::urlencoding(&id)),
    }))
}

/// One session: a WHEP viewer or a WHIP publisher.
#[derive(Debug, Serialize, ToSchema)]
pub struct Session {
    /// Resource id (the last segment of its session URL).
    pub resource: String,
    /// The process watched or published to.
    pub process: String,
    /// `whep` (a viewer) or `whip` (a publisher).
    pub kind: &'static str,
    /// Peer connection state (`new`, `connecting`, `connected`, ...).
    pub state: String,
    /// Codecs sent (WHEP) or received (WHIP).
    pub codecs: Vec<String>,
    /// Seconds since the POST.
    pub age_seconds: u64,
    /// Transport figures from webrtcbin; all zero/absent when they could not be read.
    #[serde(flatten)]
    pub stats: ViewerStats,
}

/// Every session, viewers and publishers, with its transport figures.
#[utoipa::path(get, path = "/api/v3/webrtc/sessions", tag = "webrtc", security(("bearer" = [])),
    responses((status = 200, body = [Session]), (status = 401, body = ErrorBody), (status = 500, body = ErrorBody)))]
pub async fn sessions(State(state): State<AppState>) -> ApiResult<Json<Vec<Session>>> {
    let Some(media) = &state.media else {
        return Ok(Json(Vec::new()));
    };
    let mut out = Vec::new();
    for session in media.sessions().list() {
        let info = session.info();
        out.push(Session {
            resource: info.id,
            process: session.process().to_string(),
            kind: info.kind,
            state: info.state,
            codecs: info.codecs,
            age_seconds: info.age_seconds,
            stats: session.stats().await,
        });
    }
    out.sort_by(|a, b| (&a.process, &a.resource).cmp(&(&b.process, &b.resource)));
    Ok(Json(out))
}

/// Ends a session: disconnects a viewer or a publisher.
#[utoipa::path(delete, path = "/api/v3/webrtc/sessions/{resource}", tag = "webrtc",
    params(("resource" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = String, content_type = "application/json", example = json!("OK")), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 500, body = ErrorBody)))]
pub async fn kick(
    State(state): State<AppState>,
    Path(resource): Path<String>,
) -> ApiResult<Json<&'static str>> {
    let session = state
        .media
        .as_ref()
        .and_then(|media| media.sessions().get(&resource))
        .ok_or_else(|| ApiError::not_found("Unknown session", "no such resource"))?;
    if session.close().await {
        Ok(Json("OK"))
    } else {
        // It left between the lookup and the removal.
        Err(ApiError::status(StatusCode::NOT_FOUND))
    }
}

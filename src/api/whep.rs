//! WHEP (draft-ietf-wish-whep-03, with the RFC 9725 machinery it reuses): viewers POST an SDP
//! offer and get a `sendonly` answer; PATCH trickles candidates or restarts ICE; DELETE leaves.
//!
//! Routes (each also under `/api/v3`): `GET /whep` (the public stream list), `POST|GET|HEAD|OPTIONS
//! /whep/{id}` (the endpoint) and `PATCH|DELETE|GET|OPTIONS /whep/{id}/{resource}` (a session).
//! None of them is behind the admin guard: a process with `webrtc.access = "token"` checks its
//! own tokens (see [`super::auth::may_view`]), and a session URL is an unguessable capability.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::params::{Path, Query};
use super::signalling::{
    self, content_type_is, unknown_session, unsupported_media_type, urlencoding, with_retry,
    TokenQuery,
};
use super::AppState;
use crate::media::ice;
use crate::media::viewer::ViewerError;
use crate::media::AddError;
use crate::model::process::Access;

/// Looks a WebRTC-enabled process up and checks the viewer may watch it.
fn stream_for(
    state: &AppState,
    id: &str,
    token: Option<&str>,
) -> Result<Arc<crate::media::Stream>, ApiError> {
    let entry = state
        .registry
        .get(id)
        .ok_or_else(|| ApiError::not_found("Unknown process ID", "unknown process"))?;
    let stream = entry
        .stream()
        .cloned()
        .ok_or_else(|| ApiError::not_found("WebRTC is not enabled for this process", id))?;
    if entry.record.config.webrtc.access == Access::Token
        && !super::auth::may_view(state, token, id)
    {
        return Err(ApiError::unauthorized(
            "a valid bearer token is required to watch this stream",
        ));
    }
    Ok(stream)
}

/// One stream in the public list.
#[derive(Debug, Serialize, ToSchema)]
pub struct WhepStream {
    /// Process id.
    pub id: String,
    /// The process reference.
    pub reference: String,
    /// `public` or `token`.
    pub access: Access,
    /// The player page.
    pub player: String,
}

/// The processes that can be watched over WHEP (for the player index page).
#[utoipa::path(get, path = "/whep", tag = "whep",
    responses((status = 200, body = [WhepStream])))]
pub async fn list(State(state): State<AppState>) -> Json<Vec<WhepStream>> {
    let mut out: Vec<WhepStream> = state
        .registry
        .list()
        .into_iter()
        .filter(|e| e.stream().is_some())
        .map(|e| {
            let config = &e.record.config;
            WhepStream {
                id: config.id.clone(),
                reference: config.reference.clone(),
                access: config.webrtc.access,
                player: format!("/player/{}", urlencoding(&config.id)),
            }
        })
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Json(out)
}

/// Start watching: SDP offer in, SDP answer out.
#[utoipa::path(post, path = "/whep/{id}", tag = "whep",
    params(("id" = String, Path), ("token" = Option<String>, Query, description = "viewer or admin token, for players that cannot send Authorization")),
    request_body(content = String, content_type = "application/sdp"),
    responses(
        (status = 201, description = "SDP answer; Location, ETag and Link (ice-server) headers", body = String, content_type = "application/sdp"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 406, description = "no common codec", body = ErrorBody),
        (status = 409, description = "no media yet; see Retry-After", body = ErrorBody),
        (status = 415, body = ErrorBody),
        (status = 422, description = "more than one video or audio track", body = ErrorBody),
        (status = 503, description = "viewer cap reached; see Retry-After", body = ErrorBody),
        (status = 500, body = ErrorBody), (status = 504, description = "ICE gathering or a webrtcbin step timed out", body = ErrorBody)))]
pub async fn post(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<TokenQuery>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    if !content_type_is(&headers, "application/sdp") {
        return unsupported_media_type("application/sdp");
    }
    let token = super::auth::bearer(&headers).or(query.token.as_deref());
    let stream = match stream_for(&state, &id, token) {
        Ok(stream) => stream,
        Err(e) => return e.into_response(),
    };
    let offer = match signalling::body_of(body) {
        Ok(body) => signalling::offer_of(body).await,
        Err(refused) => Err(refused),
    };
    let offer = match offer {
        Ok(offer) => offer,
        Err(refused) => return refused.into_response(),
    };
    let negotiating = stream.clone();
    // Negotiations are CPU work: running a burst of them all at once makes every one of them
    // slow, while taking them a few at a time answers most of the burst quickly.
    let _slot = match &state.media {
        Some(media) => Some(media.negotiation_slot().await),
        None => None,
    };
    let metrics = state.metrics.clone();
    let added = tokio::task::spawn_blocking(move || {
        let (resource, answer) = negotiating.add_viewer(&offer)?;
        // Reading the connection state takes webrtcbin's negotiation lock: off the runtime too.
        if let Some(webrtcbin) = negotiating.viewer_webrtcbin(&resource) {
            ice::on_connected(&webrtcbin, move || metrics.ice_connected(started.elapsed()));
        }
        Ok((resource, answer))
    })
    .await;
    let (resource, answer) = match added {
        Ok(Ok(done)) => done,
        Ok(Err(e)) => return add_error(&state, e),
        Err(e) => return signalling::panicked("Negotiation failed", e).into_response(),
    };
    signalling::created(&state, &uri, "whep", &id, &resource, answer)
}

/// Maps a failed negotiation to its WHEP status.
fn add_error(state: &AppState, error: AddError) -> Response {
    match error {
        AddError::NotReady => with_retry(ApiError::new(
            StatusCode::CONFLICT,
            "No media yet",
            "the process is not sending media yet",
        )),
        cap @ (AddError::StreamFull | AddError::ServerFull) => {
            let which = if matches!(cap, AddError::ServerFull) {
                "total"
            } else {
                "stream"
            };
            state.metrics.viewer_rejected(which);
            with_retry(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "Viewer limit reached",
                cap.to_string(),
            ))
        }
        AddError::Codec(why) => {
            ApiError::new(StatusCode::NOT_ACCEPTABLE, "No common codec", why).into_response()
        }
        AddError::Viewer(ViewerError::GatherTimeout) => signalling::timed_out("ICE gathering"),
        AddError::Viewer(ViewerError::Timeout(what)) => signalling::timed_out(what),
        e => ApiError::bad_request("Negotiation failed", e.to_string()).into_response(),
    }
}

/// `GET`/`HEAD` on the endpoint: 200 with `Content-Type: application/sdp` and no body, so generic
/// players can tell a WHEP URL (WHEP editor's copy after -03).
#[utoipa::path(get, path = "/whep/{id}", tag = "whep", params(("id" = String, Path)),
    responses((status = 200, description = "a WHEP endpoint (Content-Type: application/sdp, no body)"), (status = 404, body = ErrorBody)))]
pub async fn endpoint_head(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    if state
        .registry
        .get(&id)
        .and_then(|e| e.stream().cloned())
        .is_none()
    {
        return ApiError::not_found(
            "Unknown WHEP endpoint",
            "unknown process or WebRTC not enabled",
        )
        .into_response();
    }
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/sdp")]).into_response()
}

/// `OPTIONS` on the endpoint (see [`signalling::options`]).
#[utoipa::path(options, path = "/whep/{id}", tag = "whep", params(("id" = String, Path)),
    responses((status = 200, description = "CORS preflight; Accept-Post: application/sdp"), (status = 204, description = "no CORS layer in front")))]
pub async fn endpoint_options() -> Response {
    signalling::options().await
}

/// `OPTIONS` on a session (see [`signalling::options`]).
#[utoipa::path(options, path = "/whep/{id}/{resource}", tag = "whep", params(("id" = String, Path), ("resource" = String, Path)),
    responses((status = 200, description = "CORS preflight"), (status = 204, description = "no CORS layer in front")))]
pub async fn session_options() -> Response {
    signalling::options().await
}

/// `GET`/`HEAD` on a session: it has no representation (RFC 9725 §4.1: 2xx, no content).
#[utoipa::path(get, path = "/whep/{id}/{resource}", tag = "whep", params(("id" = String, Path), ("resource" = String, Path)),
    responses((status = 204, description = "the session exists"), (status = 404, body = ErrorBody)))]
pub async fn resource_get(
    State(state): State<AppState>,
    Path((id, resource)): Path<(String, String)>,
) -> Response {
    match viewer_webrtcbin(&state, &id, &resource) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => unknown_session(),
    }
}

fn viewer_webrtcbin(state: &AppState, id: &str, resource: &str) -> Option<gstreamer::Element> {
    state
        .registry
        .get(id)
        .and_then(|e| e.stream().cloned())
        .and_then(|s| s.viewer_webrtcbin(resource))
}

/// Trickle candidates (204) or restart ICE (200 with the server's new credentials).
#[utoipa::path(patch, path = "/whep/{id}/{resource}", tag = "whep",
    params(("id" = String, Path), ("resource" = String, Path)),
    request_body(content = String, content_type = "application/trickle-ice-sdpfrag"),
    responses(
        (status = 200, description = "ICE restarted: the server's new ufrag/pwd and candidates; new ETag", body = String, content_type = "application/trickle-ice-sdpfrag"),
        (status = 204, description = "candidates added"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 412, description = "If-Match does not match the ICE session's ETag", body = ErrorBody),
        (status = 415, body = ErrorBody),
        (status = 428, description = "If-Match missing", body = ErrorBody), (status = 500, body = ErrorBody)))]
pub async fn patch(
    State(state): State<AppState>,
    Path((id, resource)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match viewer_webrtcbin(&state, &id, &resource) {
        Some(webrtcbin) => signalling::patch(&state, webrtcbin, &headers, body).await,
        None => unknown_session(),
    }
}

/// Stop watching.
#[utoipa::path(delete, path = "/whep/{id}/{resource}", tag = "whep",
    params(("id" = String, Path), ("resource" = String, Path)),
    responses((status = 200, description = "gone (also when it already was)")))]
pub async fn delete(
    State(state): State<AppState>,
    Path((id, resource)): Path<(String, String)>,
) -> Response {
    if let Some(stream) = state.registry.get(&id).and_then(|e| e.stream().cloned()) {
        let _ = tokio::task::spawn_blocking(move || stream.remove_viewer(&resource)).await;
    }
    // Idempotent: a resource that is already gone is deleted all the same.
    StatusCode::OK.into_response()
}

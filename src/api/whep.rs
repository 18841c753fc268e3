//! WHEP (draft-ietf-wish-whep-03, with the RFC 9725 machinery it reuses): viewers POST an SDP
//! offer and get a `sendonly` answer; PATCH trickles candidates or restarts ICE; DELETE leaves.
//!
//! Routes (each also under `/api/v3`): `GET /whep` (the public stream list), `POST|GET|HEAD /whep/{id}`
//! (the endpoint, here) and `OPTIONS` on it and `PATCH|DELETE|GET|OPTIONS /whep/{id}/{resource}`
//! (a session, in [`super::session`], shared with WHIP).
//! None of them is behind the admin guard: a process with `webrtc.access = "token"` checks its
//! own tokens (see [`super::auth::may_view`]), and a session URL is an unguessable capability.

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
use super::session::{process, stream_of, Protocol};
use super::signalling::{self, content_type_is, unsupported_media_type, urlencoding, TokenQuery};
use super::AppState;
use crate::media::Endpoint;
use crate::model::process::Access;

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
    let stream = match process(&state, &id).and_then(|entry| {
        let stream = stream_of(&entry)?;
        let token = super::auth::bearer(&headers).or(query.token.as_deref());
        if entry.record.config.webrtc.access == Access::Token
            && !super::auth::may_view(&state, token, &id)
        {
            return Err(ApiError::unauthorized(
                "a valid bearer token is required to watch this stream",
            ));
        }
        Ok(stream)
    }) {
        Ok(stream) => stream,
        Err(e) => return e.into_response(),
    };
    let metrics = state.metrics.clone();
    let on_connected = Box::new(move || metrics.ice_connected(started.elapsed()));
    match signalling::negotiate(&state, Endpoint::Viewers(stream), body, Some(on_connected)).await {
        Ok(answered) => signalling::created(&state, &uri, Protocol::Whep, &id, answered),
        Err(refused) => refused,
    }
}

/// `GET`/`HEAD` on the endpoint: 200 with `Content-Type: application/sdp` and no body, so generic
/// players can tell a WHEP URL (WHEP editor's copy after -03).
#[utoipa::path(get, path = "/whep/{id}", tag = "whep", params(("id" = String, Path)),
    responses((status = 200, description = "a WHEP endpoint (Content-Type: application/sdp, no body)"), (status = 404, body = ErrorBody)))]
pub async fn endpoint_head(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match super::session::endpoint(&state, &id, Protocol::Whep) {
        Ok(_) => (StatusCode::OK, [(header::CONTENT_TYPE, "application/sdp")]).into_response(),
        Err(_) => ApiError::not_found(
            "Unknown WHEP endpoint",
            "unknown process or WebRTC not enabled",
        )
        .into_response(),
    }
}

//! WHIP (RFC 9725): a publisher POSTs an SDP offer to the endpoint of a process whose input is
//! `{whip}` and gets a `recvonly` answer; what it sends becomes that input of FFmpeg. PATCH
//! trickles or restarts ICE, DELETE ends the session.
//!
//! Routes (each also under `/api/v3`): `POST|GET|HEAD /whip/{id}` (the endpoint, here) and
//! `OPTIONS` on it and `PATCH|DELETE|GET|OPTIONS /whip/{id}/{resource}` (a session, in
//! [`super::session`], shared with WHEP). The endpoint wants a bearer token
//! (an admin access token or a publish token for the process) whenever admin auth is on; a session
//! URL is an unguessable capability, as in WHEP.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, ErrorBody};
use super::params::{Path, Query};
use super::session::{ingest_of, process, Protocol};
use super::signalling::{self, content_type_is, unsupported_media_type, TokenQuery};
use super::AppState;
use crate::media::Endpoint;

/// Start publishing: SDP offer in, SDP answer out.
#[utoipa::path(post, path = "/whip/{id}", tag = "whip",
    params(("id" = String, Path), ("token" = Option<String>, Query, description = "publish or admin token, for clients that cannot send Authorization")),
    request_body(content = String, content_type = "application/sdp"),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "SDP answer; Location, ETag and Link (ice-server) headers", body = String, content_type = "application/sdp"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 406, description = "nothing the server takes: H264 or VP8 video, Opus audio", body = ErrorBody),
        (status = 409, description = "another publisher is live on this process", body = ErrorBody),
        (status = 415, body = ErrorBody),
        (status = 422, description = "more than one video or audio track", body = ErrorBody),
        (status = 500, body = ErrorBody), (status = 504, description = "ICE gathering or a webrtcbin step timed out", body = ErrorBody)))]
pub async fn post(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<TokenQuery>,
    uri: Uri,
    client: super::client::Client,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if !content_type_is(&headers, "application/sdp") {
        return unsupported_media_type("application/sdp");
    }
    let (entry, ingest) = match process(&state, &id).and_then(|e| Ok((ingest_of(&e)?, e))) {
        Ok((ingest, entry)) => (entry, ingest),
        Err(e) => return e.into_response(),
    };
    let token = super::auth::bearer(&headers).or(query.token.as_deref());
    if !super::auth::may_publish(&state, client, token, &id) {
        return ApiError::unauthorized("a valid bearer token is required to publish here")
            .into_response();
    }
    let answered =
        match signalling::negotiate(&state, Endpoint::Publisher(ingest), body, None).await {
            Ok(answered) => answered,
            Err(refused) => return refused,
        };
    if answered.media_changed {
        // FFmpeg reads the SDP file once, when it starts.
        tracing::info!(process = %id, "the published codecs changed: restarting FFmpeg");
        entry.runner().restart();
    }
    signalling::created(&state, &uri, Protocol::Whip, &id, answered)
}

/// `GET`/`HEAD` on the endpoint: 204 when the process takes WHIP (RFC 9725 §4.1: 2xx, no body).
#[utoipa::path(get, path = "/whip/{id}", tag = "whip", params(("id" = String, Path)),
    responses((status = 204, description = "a WHIP endpoint"), (status = 404, body = ErrorBody)))]
pub async fn endpoint_get(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match super::session::endpoint(&state, &id, Protocol::Whip) {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}

//! WHIP (RFC 9725): a publisher POSTs an SDP offer to the endpoint of a process whose input is
//! `{whip}` and gets a `recvonly` answer; what it sends becomes that input of FFmpeg. PATCH
//! trickles or restarts ICE, DELETE ends the session.
//!
//! Routes (each also under `/api/v3`): `POST|GET|HEAD|OPTIONS /whip/{id}` (the endpoint) and
//! `PATCH|DELETE|GET|OPTIONS /whip/{id}/{resource}` (a session). The endpoint wants a bearer token
//! (an admin access token or a publish token for the process) whenever admin auth is on; a session
//! URL is an unguessable capability, as in WHEP.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, ErrorBody};
use super::params::{Path, Query};
use super::signalling::{
    self, content_type_is, unknown_session, unsupported_media_type, TokenQuery,
};
use super::AppState;
use crate::media::ingest::{Ingest, PublishError};
use crate::media::peer::NegotiationError;
use crate::process::registry::Entry;

fn entry_for(state: &AppState, id: &str) -> Result<(Arc<Entry>, Arc<Ingest>), ApiError> {
    let entry = state
        .registry
        .get(id)
        .ok_or_else(|| ApiError::not_found("Unknown process ID", "unknown process"))?;
    let ingest = entry.ingest().cloned().ok_or_else(|| {
        ApiError::not_found(
            "This process has no WHIP input",
            "no input address is {whip}",
        )
    })?;
    Ok((entry, ingest))
}

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
    let (entry, ingest) = match entry_for(&state, &id) {
        Ok(found) => found,
        Err(e) => return e.into_response(),
    };
    let token = super::auth::bearer(&headers).or(query.token.as_deref());
    if !super::auth::may_publish(&state, client, token, &id) {
        return ApiError::unauthorized("a valid bearer token is required to publish here")
            .into_response();
    }
    let offer = match signalling::body_of(body) {
        Ok(body) => signalling::offer_of(body).await,
        Err(refused) => Err(refused),
    };
    let offer = match offer {
        Ok(offer) => offer,
        Err(refused) => return refused.into_response(),
    };
    let published = tokio::task::spawn_blocking(move || ingest.publish(&offer)).await;
    let published = match published {
        Ok(Ok(published)) => published,
        Ok(Err(e)) => return publish_error(e),
        Err(e) => return signalling::panicked("Negotiation failed", e).into_response(),
    };
    if published.media_changed {
        // FFmpeg reads the SDP file once, when it starts.
        tracing::info!(process = %id, "the published codecs changed: restarting FFmpeg");
        entry.runner().restart();
    }
    signalling::created(
        &state,
        &uri,
        "whip",
        &id,
        &published.resource,
        published.answer,
    )
}

fn publish_error(error: PublishError) -> Response {
    match error {
        PublishError::Busy => ApiError::new(
            StatusCode::CONFLICT,
            "Another publisher is live",
            "this process takes one publisher at a time; DELETE its session first",
        )
        .into_response(),
        PublishError::Codec(why) => {
            ApiError::new(StatusCode::NOT_ACCEPTABLE, "No common codec", why).into_response()
        }
        PublishError::Negotiation(NegotiationError::GatherTimeout) => {
            signalling::timed_out("ICE gathering")
        }
        PublishError::Negotiation(NegotiationError::Timeout(what)) => signalling::timed_out(what),
        PublishError::Negotiation(e) => {
            ApiError::bad_request("Negotiation failed", e.to_string()).into_response()
        }
        PublishError::Closed => ApiError::new(
            StatusCode::CONFLICT,
            "The input was closed",
            "the process stopped while the publisher negotiated; POST again",
        )
        .into_response(),
        PublishError::Io(why) => ApiError::internal("Cannot publish", &why).into_response(),
    }
}

/// `GET`/`HEAD` on the endpoint: 204 when the process takes WHIP (RFC 9725 §4.1: 2xx, no body).
#[utoipa::path(get, path = "/whip/{id}", tag = "whip", params(("id" = String, Path)),
    responses((status = 204, description = "a WHIP endpoint"), (status = 404, body = ErrorBody)))]
pub async fn endpoint_get(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match entry_for(&state, &id) {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}

/// `OPTIONS` on the endpoint (see [`signalling::options`]).
#[utoipa::path(options, path = "/whip/{id}", tag = "whip", params(("id" = String, Path)),
    responses((status = 200, description = "CORS preflight; Accept-Post: application/sdp"), (status = 204, description = "no CORS layer in front")))]
pub async fn endpoint_options() -> Response {
    signalling::options().await
}

fn publisher_webrtcbin(state: &AppState, id: &str, resource: &str) -> Option<gstreamer::Element> {
    state
        .registry
        .get(id)
        .and_then(|e| e.ingest().cloned())
        .and_then(|i| i.webrtcbin(resource))
}

/// `OPTIONS` on a session (see [`signalling::options`]).
#[utoipa::path(options, path = "/whip/{id}/{resource}", tag = "whip", params(("id" = String, Path), ("resource" = String, Path)),
    responses((status = 200, description = "CORS preflight"), (status = 204, description = "no CORS layer in front")))]
pub async fn session_options() -> Response {
    signalling::options().await
}

/// `GET`/`HEAD` on a session: it has no representation (2xx, no content).
#[utoipa::path(get, path = "/whip/{id}/{resource}", tag = "whip", params(("id" = String, Path), ("resource" = String, Path)),
    responses((status = 204, description = "the session exists"), (status = 404, body = ErrorBody)))]
pub async fn resource_get(
    State(state): State<AppState>,
    Path((id, resource)): Path<(String, String)>,
) -> Response {
    match publisher_webrtcbin(&state, &id, &resource) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => unknown_session(),
    }
}

/// Trickle candidates (204) or restart ICE (200 with the server's new credentials).
#[utoipa::path(patch, path = "/whip/{id}/{resource}", tag = "whip",
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
    match publisher_webrtcbin(&state, &id, &resource) {
        Some(webrtcbin) => signalling::patch(&state, webrtcbin, &headers, body).await,
        None => unknown_session(),
    }
}

/// Stop publishing.
#[utoipa::path(delete, path = "/whip/{id}/{resource}", tag = "whip",
    params(("id" = String, Path), ("resource" = String, Path)),
    responses((status = 200, description = "gone (also when it already was)")))]
pub async fn delete(
    State(state): State<AppState>,
    Path((id, resource)): Path<(String, String)>,
) -> Response {
    if let Some(ingest) = state.registry.get(&id).and_then(|e| e.ingest().cloned()) {
        let _ = tokio::task::spawn_blocking(move || ingest.unpublish(&resource)).await;
    }
    // Idempotent: a session that is already gone is deleted all the same.
    StatusCode::OK.into_response()
}

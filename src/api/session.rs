//! What WHEP and WHIP share past the POST: one process lookup (and its 404s), and one handler
//! set for a session resource, `PATCH|DELETE|GET|HEAD|OPTIONS /{whep|whip}/{id}/{resource}`,
//! which asks the media layer's session registry and never touches GStreamer.
//!
//! The handlers are documented once, at the WHEP paths; [`super::openapi`] copies them to WHIP.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, ErrorBody};
use super::params::Path;
use super::signalling::{
    body_of, content_type_is, if_match_matches, panicked, timed_out, unknown_session,
    unsupported_media_type,
};
use super::AppState;
use crate::media::ingest::Ingest;
use crate::media::{Endpoint, Patched, Session, SessionError, Stream};
use crate::process::registry::Entry;
use crate::webrtc::sdpfrag;

/// Which protocol a request speaks, from its path (`/whep/…`, `/whip/…`, either under
/// `/api/v3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Egress to a viewer (draft-ietf-wish-whep-03).
    Whep,
    /// Ingest from a publisher (RFC 9725).
    Whip,
}

impl Protocol {
    fn of(path: &str) -> Option<Protocol> {
        let path = path.strip_prefix("/api/v3").unwrap_or(path);
        if path.starts_with("/whep/") {
            Some(Protocol::Whep)
        } else if path.starts_with("/whip/") {
            Some(Protocol::Whip)
        } else {
            None
        }
    }

    /// The path segment.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Whep => "whep",
            Protocol::Whip => "whip",
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Protocol {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Protocol::of(parts.uri.path())
            .ok_or_else(|| ApiError::not_found("Unknown endpoint", "not a WHEP or WHIP path"))
    }
}

/// The process with this id (404 when there is none).
pub fn process(state: &AppState, id: &str) -> Result<Arc<Entry>, ApiError> {
    state
        .registry
        .get(id)
        .ok_or_else(|| ApiError::not_found("Unknown process ID", "unknown process"))
}

/// The WebRTC stream of a process (404 when WebRTC is off for it).
pub fn stream_of(entry: &Entry) -> Result<Arc<Stream>, ApiError> {
    entry.stream().cloned().ok_or_else(|| {
        ApiError::not_found(
            "WebRTC is not enabled for this process",
            entry.record.config.id.clone(),
        )
    })
}

/// The WHIP input of a process (404 when no input is `{whip}`).
pub fn ingest_of(entry: &Entry) -> Result<Arc<Ingest>, ApiError> {
    entry.ingest().cloned().ok_or_else(|| {
        ApiError::not_found(
            "This process has no WHIP input",
            "no input address is {whip}",
        )
    })
}

/// What `protocol` reaches on the process `id`: its viewers or its input.
pub fn endpoint(state: &AppState, id: &str, protocol: Protocol) -> Result<Endpoint, ApiError> {
    let entry = process(state, id)?;
    match protocol {
        Protocol::Whep => stream_of(&entry).map(Endpoint::Viewers),
        Protocol::Whip => ingest_of(&entry).map(Endpoint::Publisher),
    }
}

fn session(state: &AppState, protocol: Protocol, id: &str, resource: &str) -> Option<Arc<Session>> {
    endpoint(state, id, protocol).ok()?.session(resource)
}

/// `OPTIONS` on an endpoint. In this router the CORS layer answers every OPTIONS request itself
/// (tower-http treats each one as a preflight) and [`super::signalling::cors_headers`] adds
/// `Accept-Post` and the method and header lists; this handler only answers when no CORS layer
/// is in front.
#[utoipa::path(options, path = "/whep/{id}", tag = "whep", params(("id" = String, Path)),
    responses((status = 200, description = "CORS preflight; Accept-Post: application/sdp"), (status = 204, description = "no CORS layer in front")))]
pub async fn endpoint_options() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// `OPTIONS` on a session (see [`endpoint_options`]).
#[utoipa::path(options, path = "/whep/{id}/{resource}", tag = "whep", params(("id" = String, Path), ("resource" = String, Path)),
    responses((status = 200, description = "CORS preflight"), (status = 204, description = "no CORS layer in front")))]
pub async fn session_options() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// `GET`/`HEAD` on a session: it has no representation (RFC 9725 §4.1: 2xx, no content).
#[utoipa::path(get, path = "/whep/{id}/{resource}", tag = "whep", params(("id" = String, Path), ("resource" = String, Path)),
    responses((status = 204, description = "the session exists"), (status = 404, body = ErrorBody)))]
pub async fn session_get(
    State(state): State<AppState>,
    protocol: Protocol,
    Path((id, resource)): Path<(String, String)>,
) -> Response {
    match session(&state, protocol, &id, &resource) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => unknown_session(),
    }
}

/// End the session (stop watching or publishing).
#[utoipa::path(delete, path = "/whep/{id}/{resource}", tag = "whep",
    params(("id" = String, Path), ("resource" = String, Path)),
    responses((status = 200, description = "gone (also when it already was)")))]
pub async fn session_delete(
    State(state): State<AppState>,
    protocol: Protocol,
    Path((id, resource)): Path<(String, String)>,
) -> Response {
    if let Some(session) = session(&state, protocol, &id, &resource) {
        session.close().await;
    }
    // Idempotent: a session that is already gone is deleted all the same.
    StatusCode::OK.into_response()
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
        (status = 428, description = "If-Match missing", body = ErrorBody), (status = 500, body = ErrorBody),
        (status = 504, description = "a webrtcbin step of the ICE restart timed out", body = ErrorBody)))]
pub async fn session_patch(
    State(state): State<AppState>,
    protocol: Protocol,
    Path((id, resource)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Some(session) = session(&state, protocol, &id, &resource) else {
        return unknown_session();
    };
    if !content_type_is(&headers, sdpfrag::CONTENT_TYPE) {
        return unsupported_media_type(sdpfrag::CONTENT_TYPE);
    }
    // Preconditions come before the body is looked at (RFC 9110 §13.2.1).
    let if_match: Vec<String> = headers
        .get_all(header::IF_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect();
    if if_match.is_empty() {
        return ApiError::new(
            StatusCode::PRECONDITION_REQUIRED,
            "Precondition Required",
            "PATCH needs If-Match: the session's ETag, or * for an ICE restart",
        )
        .into_response();
    }
    if !if_match_matches(&if_match, &session.etag()) {
        return precondition_failed();
    }
    let body = match body_of(body) {
        Ok(body) => body,
        Err(refused) => return refused.into_response(),
    };
    let parsed = tokio::task::spawn_blocking(move || {
        std::str::from_utf8(&body)
            .map_err(|_| sdpfrag::Malformed("not UTF-8".into()))
            .and_then(sdpfrag::parse)
    })
    .await;
    let fragment = match parsed {
        Ok(Ok(fragment)) => fragment,
        Ok(Err(e)) => {
            return ApiError::bad_request("Malformed sdpfrag", e.to_string()).into_response()
        }
        Err(e) => return panicked("Malformed sdpfrag", e).into_response(),
    };
    match session
        .patch(fragment, move |current| {
            if_match_matches(&if_match, current)
        })
        .await
    {
        Ok(Patched::Trickled) => StatusCode::NO_CONTENT.into_response(),
        Ok(Patched::Restarted { fragment, etag }) => {
            let mut response = (
                StatusCode::OK,
                [(header::CONTENT_TYPE, sdpfrag::CONTENT_TYPE)],
                fragment,
            )
                .into_response();
            if let Ok(v) = HeaderValue::from_str(&etag) {
                response.headers_mut().insert(header::ETAG, v);
            }
            response
        }
        Err(SessionError::Gone) => unknown_session(),
        Err(SessionError::Precondition) => precondition_failed(),
        Err(SessionError::Malformed(why)) => {
            ApiError::bad_request("Malformed sdpfrag", why).into_response()
        }
        Err(SessionError::Timeout(what)) => timed_out(what),
        Err(e @ SessionError::Failed(_)) => {
            ApiError::internal("ICE restart failed", &e).into_response()
        }
    }
}

fn precondition_failed() -> Response {
    ApiError::new(
        StatusCode::PRECONDITION_FAILED,
        "Precondition Failed",
        "If-Match does not match the ICE session's current ETag",
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_from_path() {
        assert_eq!(Protocol::of("/whep/a/b"), Some(Protocol::Whep));
        assert_eq!(Protocol::of("/api/v3/whip/a"), Some(Protocol::Whip));
        assert_eq!(Protocol::of("/api/v3/process/a"), None);
        assert_eq!(Protocol::of("/whepx/a"), None);
    }
}

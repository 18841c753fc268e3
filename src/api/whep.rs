//! WHEP (draft-ietf-wish-whep-03): viewers POST an SDP offer and get a `sendonly` answer.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::AppState;
use crate::media::sdp::{parse_offer, SdpError};
use crate::media::AddError;
use crate::process::config::Access;

/// Seconds a viewer should wait before retrying a 409 or 503.
const RETRY_AFTER: &str = "2";

fn content_type_is(headers: &HeaderMap, expected: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(expected))
}

fn with_retry(error: ApiError) -> Response {
    let mut response = error.into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER));
    response
}

/// Looks a WebRTC-enabled process up and checks the viewer may watch it.
fn stream_for(
    state: &AppState,
    id: &str,
    headers: &HeaderMap,
) -> Result<std::sync::Arc<crate::media::Stream>, ApiError> {
    let entry = state
        .registry
        .get(id)
        .ok_or_else(|| ApiError::not_found("Unknown process ID", "unknown process"))?;
    let stream = entry
        .stream()
        .cloned()
        .ok_or_else(|| ApiError::not_found("WebRTC is not enabled for this process", id))?;
    if entry.record.config.webrtc.access == Access::Token
        && !super::auth::may_view(state, headers, id)
    {
        return Err(ApiError::unauthorized(
            "a valid bearer token is required to watch this stream",
        ));
    }
    Ok(stream)
}

/// Start watching: SDP offer in, SDP answer out.
pub async fn post(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !content_type_is(&headers, "application/sdp") {
        return ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported Media Type",
            "the offer must be application/sdp",
        )
        .into_response();
    }
    let stream = match stream_for(&state, &id, &headers) {
        Ok(stream) => stream,
        Err(e) => return e.into_response(),
    };
    let offer = match std::str::from_utf8(&body)
        .map_err(|_| SdpError::Malformed("not UTF-8".into()))
        .and_then(parse_offer)
    {
        Ok(offer) => offer,
        Err(e @ SdpError::TooManyTracks(_)) => {
            return ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Unprocessable Entity",
                e.to_string(),
            )
            .into_response()
        }
        Err(e) => return ApiError::bad_request("Malformed SDP", e.to_string()).into_response(),
    };
    let added = tokio::task::spawn_blocking(move || stream.add_viewer(&offer)).await;
    let (resource, answer) = match added {
        Ok(Ok(done)) => done,
        Ok(Err(AddError::NotReady)) => {
            return with_retry(ApiError::new(
                StatusCode::CONFLICT,
                "No media yet",
                "the process is not sending media yet",
            ))
        }
        Ok(Err(AddError::Full)) => {
            return with_retry(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "Viewer limit reached",
                "try again later",
            ))
        }
        Ok(Err(AddError::Codec(why))) => {
            return ApiError::new(StatusCode::NOT_ACCEPTABLE, "No common codec", why)
                .into_response()
        }
        Ok(Err(AddError::Viewer(crate::media::viewer::ViewerError::GatherTimeout))) => {
            return ApiError::new(StatusCode::GATEWAY_TIMEOUT, "ICE gathering timed out", "")
                .into_response()
        }
        Ok(Err(e)) => {
            return ApiError::bad_request("Negotiation failed", e.to_string()).into_response()
        }
        Err(e) => return ApiError::internal("Negotiation failed", &e).into_response(),
    };
    let location = format!("/whep/{}/{}", urlencoding(&id), resource);
    let etag = etag_of(&answer);
    let mut response = (
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/sdp")],
        answer,
    )
        .into_response();
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&location) {
        headers.insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, v);
    }
    response
}

/// The strong entity-tag of an ICE session: its local ufrag, which changes on every restart.
pub fn etag_of(answer: &str) -> String {
    let ufrag = gstreamer_sdp::SDPMessage::parse_buffer(answer.as_bytes())
        .ok()
        .and_then(|m| {
            m.medias()
                .find_map(|media| media.attribute_val("ice-ufrag").map(str::to_string))
                .or_else(|| m.attribute_val("ice-ufrag").map(str::to_string))
        })
        .unwrap_or_default();
    format!("\"{ufrag}\"")
}

fn urlencoding(id: &str) -> String {
    id.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b':' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Stop watching.
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

//! What WHIP (RFC 9725) and WHEP (draft-ietf-wish-whep-03) share on the HTTP side: content
//! types, the offer's checks, the negotiation and its error statuses, the 201 with
//! `Location`/`ETag`/`Link`, the `If-Match` rule, and the CORS headers a browser needs to use any
//! of it. The POST handlers in [`super::whep`] and [`super::whip`] check who may call them; the
//! session handlers are in [`super::session`].

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::error::ApiError;
use super::session::Protocol;
use super::AppState;
use crate::media::sdp::{offer_text, parse_offer, Offer, SdpError};
use crate::media::{Answered, Endpoint, NegotiationError, OfferError};
use crate::webrtc::ice_servers;

/// Seconds a client should wait before retrying a 409 or 503.
const RETRY_AFTER: &str = "2";

/// Methods a browser may use on WHIP/WHEP URLs (the CORS preflight answer).
const ALLOW_METHODS: &str = "OPTIONS, GET, HEAD, POST, PATCH, DELETE";
/// Request headers a browser client sends.
const ALLOW_HEADERS: &str = "Authorization, Content-Type, If-Match";
/// Response headers a browser client must be able to read: without Location it cannot PATCH or
/// DELETE, without ETag it cannot restart ICE, without Link it cannot use TURN.
const EXPOSE_HEADERS: &str = "Location, ETag, Link";

/// `?token=` for clients that cannot set an Authorization header.
#[derive(Debug, Default, Deserialize)]
pub struct TokenQuery {
    /// A viewer, publish or admin token.
    pub token: Option<String>,
}

/// Whether the request body has this media type (parameters ignored).
pub fn content_type_is(headers: &HeaderMap, expected: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(expected))
}

/// 415 naming the type expected.
pub fn unsupported_media_type(expected: &str) -> Response {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "Unsupported Media Type",
        format!("the body must be {expected}"),
    )
    .into_response()
}

/// The error with `Retry-After`.
pub fn with_retry(error: ApiError) -> Response {
    let mut response = error.into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER));
    response
}

/// 504 for a negotiation step the server's WebRTC stack did not finish in time: ICE gathering, or
/// a webrtcbin promise (see [`crate::media::promise`]). Whatever the request held is given back.
pub fn timed_out(what: &str) -> Response {
    ApiError::new(
        StatusCode::GATEWAY_TIMEOUT,
        "Negotiation timed out",
        format!("the server's WebRTC stack did not finish {what} in time"),
    )
    .into_response()
}

/// 404 for a session URL that names nothing (any more).
pub fn unknown_session() -> Response {
    ApiError::not_found("Unknown session", "no such resource").into_response()
}

/// A process id as a URL path segment.
pub fn urlencoding(id: &str) -> String {
    id.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b':' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A body the route's [`DefaultBodyLimit`](axum::extract::DefaultBodyLimit) refused, as the
/// datarhei error body (413 over the limit) instead of axum's plain text.
pub fn body_of(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                status,
                "Payload Too Large",
                "the body is larger than this endpoint takes",
            )
        } else {
            ApiError::new(status, "Cannot read the body", rejection.body_text())
        }
    })
}

/// The offer of a POST body: 413 over the size limit, 400 when it is not UTF-8, over another
/// [`sdp_limits`](crate::webrtc::sdp_limits) limit or not a usable offer, 422 when it has more
/// than one video or audio track (RFC 9725 §4.2 lets the server pick either for that). The
/// limits are checked here in one pass; gstreamer-sdp parses off the async runtime.
pub async fn offer_of(body: Bytes) -> Result<Offer, ApiError> {
    offer_text(&body).map_err(sdp_error)?;
    let parsed = tokio::task::spawn_blocking(move || offer_text(&body).and_then(parse_offer)).await;
    match parsed {
        Ok(result) => result.map_err(sdp_error),
        Err(e) => Err(panicked("Malformed SDP", e)),
    }
}

fn sdp_error(e: SdpError) -> ApiError {
    match e {
        SdpError::TooManyTracks(_) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Unprocessable Entity",
            e.to_string(),
        ),
        SdpError::TooLarge(_) => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Payload Too Large",
            e.to_string(),
        ),
        e => ApiError::bad_request("Malformed SDP", e.to_string()),
    }
}

/// A blocking task that failed: a panic (in GStreamer's bindings, or ours) is a 500 whose body
/// says nothing of it; the panic itself goes to the log.
pub fn panicked(message: &str, error: tokio::task::JoinError) -> ApiError {
    ApiError::internal(message, &crate::media::panic_text(error))
}

/// The rest of a POST once the client may make it: the offer's checks, the negotiation (see
/// [`crate::media::Media::offer`]), and the error statuses of both protocols.
pub async fn negotiate(
    state: &AppState,
    endpoint: Endpoint,
    body: Result<Bytes, BytesRejection>,
    on_connected: Option<Box<dyn FnOnce() + Send>>,
) -> Result<Answered, Response> {
    let offer = match body_of(body) {
        Ok(body) => offer_of(body).await,
        Err(refused) => Err(refused),
    };
    let offer = offer.map_err(IntoResponse::into_response)?;
    let Some(media) = &state.media else {
        return Err(
            ApiError::not_found("WebRTC is off", "webrtc.enabled is false").into_response(),
        );
    };
    media
        .offer(endpoint, offer, on_connected)
        .await
        .map_err(|e| refused(state, e))
}

/// The status of an offer that made no session.
fn refused(state: &AppState, error: OfferError) -> Response {
    let conflict =
        |message: &str, details: &str| ApiError::new(StatusCode::CONFLICT, message, details);
    match error {
        OfferError::NotReady => with_retry(conflict(
            "No media yet",
            "the process is not sending media yet",
        )),
        cap @ (OfferError::StreamFull | OfferError::ServerFull) => {
            let which = if matches!(cap, OfferError::ServerFull) {
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
        OfferError::Busy => conflict(
            "Another publisher is live",
            "this process takes one publisher at a time; DELETE its session first",
        )
        .into_response(),
        OfferError::Closed => conflict(
            "The input was closed",
            "the process stopped while the publisher negotiated; POST again",
        )
        .into_response(),
        OfferError::Codec(why) => {
            ApiError::new(StatusCode::NOT_ACCEPTABLE, "No common codec", why).into_response()
        }
        OfferError::Negotiation(NegotiationError::GatherTimeout) => timed_out("ICE gathering"),
        OfferError::Negotiation(NegotiationError::Timeout(what)) => timed_out(what),
        OfferError::Negotiation(e) => {
            ApiError::bad_request("Negotiation failed", e.to_string()).into_response()
        }
        OfferError::Io(why) => ApiError::internal("Cannot publish", &why).into_response(),
        OfferError::Panicked(why) => ApiError::internal("Negotiation failed", &why).into_response(),
    }
}

/// `201 Created` with the SDP answer, the session URL (`/{protocol}/{id}/{resource}`, under
/// `/api/v3` when the POST came there), its ETag and one `Link rel="ice-server"` per configured
/// STUN/TURN server.
pub fn created(
    state: &AppState,
    uri: &Uri,
    protocol: Protocol,
    id: &str,
    answered: Answered,
) -> Response {
    let prefix = if uri.path().starts_with("/api/v3/") {
        "/api/v3"
    } else {
        ""
    };
    let location = format!(
        "{prefix}/{}/{}/{}",
        protocol.name(),
        urlencoding(id),
        answered.resource
    );
    let mut response = (
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/sdp")],
        answered.answer,
    )
        .into_response();
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&location) {
        headers.insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&answered.etag) {
        headers.insert(header::ETAG, v);
    }
    for link in ice_servers::links(&state.config.webrtc, crate::auth::now()) {
        if let Ok(v) = HeaderValue::from_str(&link) {
            headers.append(header::LINK, v);
        }
    }
    response
}

/// Whether an `If-Match` field value matches the current entity-tag: `*`, or a listed strong tag
/// equal to it (RFC 9110 §13.1.1; weak tags never match).
pub fn if_match_matches(values: &[String], current: &str) -> bool {
    values
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag == current)
}

/// The WHIP/WHEP CORS headers, added outside the CORS layer so that they reach its preflight
/// answers too: Expose-Headers on every WHIP/WHEP response, and on OPTIONS the methods and
/// request headers plus (on an endpoint) `Accept-Post: application/sdp`.
pub async fn cors_headers(req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let segments = ["/api/v3/whep", "/api/v3/whip", "/whep", "/whip"]
        .iter()
        .find_map(|prefix| {
            path.strip_prefix(prefix)
                .filter(|rest| rest.is_empty() || rest.starts_with('/'))
        })
        .map(|rest| rest.split('/').filter(|s| !s.is_empty()).count());
    let is_options = req.method() == Method::OPTIONS;
    let mut response = next.run(req).await;
    let Some(segments) = segments else {
        return response;
    };
    let success = response.status().is_success();
    let headers = response.headers_mut();
    let set = |headers: &mut HeaderMap, name: HeaderName, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(
        headers,
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        EXPOSE_HEADERS,
    );
    if is_options && success {
        set(headers, header::ACCESS_CONTROL_ALLOW_METHODS, ALLOW_METHODS);
        set(headers, header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOW_HEADERS);
        if segments == 1 {
            set(
                headers,
                HeaderName::from_static("accept-post"),
                "application/sdp",
            );
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_rules() {
        let tag = "\"abc\"";
        assert!(if_match_matches(&["*".into()], tag));
        assert!(if_match_matches(&["\"abc\"".into()], tag));
        assert!(if_match_matches(&["\"x\", \"abc\"".into()], tag));
        assert!(!if_match_matches(&["W/\"abc\"".into()], tag));
        assert!(!if_match_matches(&["\"abd\"".into()], tag));
    }
}

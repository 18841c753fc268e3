//! What WHIP (RFC 9725) and WHEP (draft-ietf-wish-whep-03) share: the HTTP side of one ICE
//! session. Content types, the 201 with `Location`/`ETag`/`Link`, PATCH (trickle and ICE restart
//! under the `If-Match` rules), and the CORS headers a browser needs to use any of it. The
//! handlers in [`super::whep`] and [`super::whip`] find the session's webrtcbin; everything after
//! that is here.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::error::ApiError;
use super::AppState;
use crate::media::ice::{self, IceError};
use crate::media::sdp::{advertise_public_ip, offer_text, parse_offer, Offer, SdpError};
use crate::webrtc::{ice_servers, sdpfrag};

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

/// The strong entity-tag of an ICE session: its local ufrag, which changes on every restart.
pub fn etag_of(answer: &str) -> String {
    let ufrag = gstreamer_sdp::SDPMessage::parse_buffer(answer.as_bytes())
        .ok()
        .and_then(|m| ice::credentials(&m))
        .map(|(ufrag, _)| ufrag)
        .unwrap_or_default();
    format!("\"{ufrag}\"")
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
    let why = match error.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into()),
        Err(e) => e.to_string(),
    };
    ApiError::internal(message, &why)
}

/// `201 Created` with the SDP answer, the session URL (`/{protocol}/{id}/{resource}`, under
/// `/api/v3` when the POST came there), its ETag and one `Link rel="ice-server"` per configured
/// STUN/TURN server.
pub fn created(
    state: &AppState,
    uri: &Uri,
    protocol: &str,
    id: &str,
    resource: &str,
    answer: String,
) -> Response {
    let prefix = if uri.path().starts_with("/api/v3/") {
        "/api/v3"
    } else {
        ""
    };
    let location = format!("{prefix}/{protocol}/{}/{resource}", urlencoding(id));
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
    for link in ice_servers::links(&state.config.webrtc, crate::auth::now()) {
        if let Ok(v) = HeaderValue::from_str(&link) {
            headers.append(header::LINK, v);
        }
    }
    response
}

/// Whether an `If-Match` field value matches the current entity-tag: `*`, or a listed strong tag
/// equal to it (RFC 9110 §13.1.1; weak tags never match).
fn if_match_matches(values: &[String], current: &str) -> bool {
    values
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag == current)
}

fn precondition_failed() -> Response {
    ApiError::new(
        StatusCode::PRECONDITION_FAILED,
        "Precondition Failed",
        "If-Match does not match the ICE session's current ETag",
    )
    .into_response()
}

/// PATCH on a session whose webrtcbin was found: trickle candidates (204) or restart ICE (200
/// with the server's new credentials and candidates, and a new ETag).
pub async fn patch(
    state: &AppState,
    webrtcbin: gstreamer::Element,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if !content_type_is(headers, sdpfrag::CONTENT_TYPE) {
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
    // Reading webrtcbin's descriptions takes its negotiation lock, which a stuck operation holds:
    // off the runtime.
    let bin = webrtcbin.clone();
    let looked = tokio::task::spawn_blocking(move || {
        let remote = ice::remote_description(&bin).and_then(|d| ice::credentials(&d));
        (ice::etag(&bin), remote)
    })
    .await;
    let (current, remote) = match looked {
        Ok((Some(current), remote)) => (current, remote),
        Ok((None, _)) => return unknown_session(),
        Err(e) => return panicked("PATCH failed", e).into_response(),
    };
    if !if_match_matches(&if_match, &current) {
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
    let Some((remote_ufrag, remote_pwd)) = remote else {
        return unknown_session();
    };
    if !fragment.is_restart(&remote_ufrag, &remote_pwd) {
        let added =
            tokio::task::spawn_blocking(move || ice::add_candidates(&webrtcbin, &fragment)).await;
        return match added {
            Ok(Ok(_)) => StatusCode::NO_CONTENT.into_response(),
            Ok(Err(_)) => unknown_session(),
            Err(e) => panicked("Trickle failed", e).into_response(),
        };
    }
    let (Some(ufrag), Some(pwd)) = (fragment.ufrag.clone(), fragment.pwd.clone()) else {
        return ApiError::bad_request(
            "Malformed sdpfrag",
            "an ICE restart needs both a=ice-ufrag and a=ice-pwd",
        )
        .into_response();
    };
    restart(state, webrtcbin, ufrag, pwd, if_match, fragment).await
}

async fn restart(
    state: &AppState,
    webrtcbin: gstreamer::Element,
    ufrag: String,
    pwd: String,
    if_match: Vec<String>,
    fragment: sdpfrag::Fragment,
) -> Response {
    let public_ip = state.config.webrtc.public_ip.parse().ok();
    let done = tokio::task::spawn_blocking(move || {
        // The tag is checked again under the restart lock: two restarts racing on one tag must
        // not both win.
        let restarted = ice::restart(&webrtcbin, &ufrag, &pwd, |current| {
            if if_match_matches(&if_match, current) {
                Ok(())
            } else {
                Err(())
            }
        });
        if let Ok(Ok(_)) = &restarted {
            let _ = ice::add_candidates(&webrtcbin, &fragment);
        }
        restarted
    })
    .await;
    let mut local = match done {
        Ok(Ok(Ok(local))) => local,
        Ok(Ok(Err(IceError::NoSession))) => return unknown_session(),
        Ok(Ok(Err(IceError::Timeout(what)))) => return timed_out(what),
        Ok(Ok(Err(e))) => return ApiError::internal("ICE restart failed", &e).into_response(),
        Ok(Err(())) => return precondition_failed(),
        Err(e) => return panicked("ICE restart failed", e).into_response(),
    };
    if let Some(public) = public_ip {
        advertise_public_ip(&mut local, public);
    }
    let etag = ice::credentials(&local)
        .map(|(ufrag, _)| format!("\"{ufrag}\""))
        .unwrap_or_default();
    let mut response = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, sdpfrag::CONTENT_TYPE)],
        sdpfrag::render(&local),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        response.headers_mut().insert(header::ETAG, v);
    }
    response
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

/// `OPTIONS` on an endpoint or a session. In this router the CORS layer answers every OPTIONS
/// request itself (tower-http treats each one as a preflight) and [`cors_headers`] adds
/// `Accept-Post` and the method and header lists; this handler only answers when no CORS layer
/// is in front.
pub async fn options() -> Response {
    StatusCode::NO_CONTENT.into_response()
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

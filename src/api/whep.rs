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
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::AppState;
use crate::media::ice::{self, IceError};
use crate::media::sdp::{advertise_public_ip, parse_offer, SdpError};
use crate::media::AddError;
use crate::process::config::Access;
use crate::webrtc::{ice_servers, sdpfrag};

/// Seconds a viewer should wait before retrying a 409 or 503.
const RETRY_AFTER: &str = "2";

/// Methods a browser may use on WHEP URLs (the CORS preflight answer).
const ALLOW_METHODS: &str = "OPTIONS, GET, HEAD, POST, PATCH, DELETE";
/// Request headers a browser player sends.
const ALLOW_HEADERS: &str = "Authorization, Content-Type, If-Match";
/// Response headers a browser player must be able to read: without Location it cannot PATCH or
/// DELETE, without ETag it cannot restart ICE, without Link it cannot use TURN.
const EXPOSE_HEADERS: &str = "Location, ETag, Link";

fn content_type_is(headers: &HeaderMap, expected: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(expected))
}

fn unsupported_media_type(expected: &str) -> Response {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "Unsupported Media Type",
        format!("the body must be {expected}"),
    )
    .into_response()
}

fn with_retry(error: ApiError) -> Response {
    let mut response = error.into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER));
    response
}

fn unknown_session() -> Response {
    ApiError::not_found("Unknown WHEP session", "no such resource").into_response()
}

/// `?token=` for players that cannot set an Authorization header.
#[derive(Debug, Default, Deserialize)]
pub struct TokenQuery {
    /// A viewer or admin token.
    pub token: Option<String>,
}

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
        (status = 504, description = "ICE gathering timed out", body = ErrorBody)))]
pub async fn post(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<TokenQuery>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
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
    let negotiating = stream.clone();
    // Negotiations are CPU work: running a burst of them all at once makes every one of them
    // slow, while taking them a few at a time answers most of the burst quickly.
    let _slot = match &state.media {
        Some(media) => Some(media.negotiation_slot().await),
        None => None,
    };
    let added = tokio::task::spawn_blocking(move || negotiating.add_viewer(&offer)).await;
    let (resource, answer) = match added {
        Ok(Ok(done)) => done,
        Ok(Err(e)) => return add_error(&state, e),
        Err(e) => return ApiError::internal("Negotiation failed", &e).into_response(),
    };
    if let Some(webrtcbin) = stream.viewer_webrtcbin(&resource) {
        let metrics = state.metrics.clone();
        ice::on_connected(&webrtcbin, move || metrics.ice_connected(started.elapsed()));
    }
    let prefix = if uri.path().starts_with("/api/v3/") {
        "/api/v3/whep"
    } else {
        "/whep"
    };
    let location = format!("{prefix}/{}/{}", urlencoding(&id), resource);
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
        AddError::Viewer(crate::media::viewer::ViewerError::GatherTimeout) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "ICE gathering timed out",
            "the server could not gather its ICE candidates in time",
        )
        .into_response(),
        e => ApiError::bad_request("Negotiation failed", e.to_string()).into_response(),
    }
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

/// `GET`/`HEAD` on the endpoint: 200 with `Content-Type: application/sdp` and no body, so generic
/// players can tell a WHEP URL (WHEP editor's copy after -03).
#[utoipa::path(head, path = "/whep/{id}", tag = "whep", params(("id" = String, Path)),
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

/// `OPTIONS` on the endpoint. In this router the CORS layer answers every OPTIONS request itself
/// (tower-http treats each one as a preflight) and [`cors_headers`] adds `Accept-Post` and the
/// WHEP method and header lists; this handler only answers when no CORS layer is in front.
#[utoipa::path(options, path = "/whep/{id}", tag = "whep", params(("id" = String, Path)),
    responses((status = 200, description = "CORS preflight; Accept-Post: application/sdp")))]
pub async fn endpoint_options() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// `OPTIONS` on a session (see [`endpoint_options`]).
pub async fn resource_options() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// `GET`/`HEAD` on a session: it has no representation (RFC 9725 §4.1: 2xx, no content).
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

/// Whether an `If-Match` field value matches the current entity-tag: `*`, or a listed strong tag
/// equal to it (RFC 9110 §13.1.1; weak tags never match).
fn if_match_matches(values: &[String], current: &str) -> bool {
    values
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag == current)
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
        (status = 428, description = "If-Match missing", body = ErrorBody)))]
pub async fn patch(
    State(state): State<AppState>,
    Path((id, resource)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(webrtcbin) = viewer_webrtcbin(&state, &id, &resource) else {
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
    let Some(current) = ice::etag(&webrtcbin) else {
        return unknown_session();
    };
    if !if_match_matches(&if_match, &current) {
        return precondition_failed();
    }
    let fragment = match std::str::from_utf8(&body)
        .map_err(|_| sdpfrag::Malformed("not UTF-8".into()))
        .and_then(sdpfrag::parse)
    {
        Ok(fragment) => fragment,
        Err(e) => return ApiError::bad_request("Malformed sdpfrag", e.to_string()).into_response(),
    };
    let Some((remote_ufrag, remote_pwd)) =
        ice::remote_description(&webrtcbin).and_then(|d| ice::credentials(&d))
    else {
        return unknown_session();
    };
    if !fragment.is_restart(&remote_ufrag, &remote_pwd) {
        let added =
            tokio::task::spawn_blocking(move || ice::add_candidates(&webrtcbin, &fragment)).await;
        return match added {
            Ok(Ok(_)) => StatusCode::NO_CONTENT.into_response(),
            Ok(Err(_)) => unknown_session(),
            Err(e) => ApiError::internal("Trickle failed", &e).into_response(),
        };
    }
    let (Some(ufrag), Some(pwd)) = (fragment.ufrag.clone(), fragment.pwd.clone()) else {
        return ApiError::bad_request(
            "Malformed sdpfrag",
            "an ICE restart needs both a=ice-ufrag and a=ice-pwd",
        )
        .into_response();
    };
    restart(&state, webrtcbin, ufrag, pwd, if_match, fragment).await
}

fn precondition_failed() -> Response {
    ApiError::new(
        StatusCode::PRECONDITION_FAILED,
        "Precondition Failed",
        "If-Match does not match the ICE session's current ETag",
    )
    .into_response()
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
        Ok(Ok(Err(e))) => return ApiError::internal("ICE restart failed", &e).into_response(),
        Ok(Err(())) => return precondition_failed(),
        Err(e) => return ApiError::internal("ICE restart failed", &e).into_response(),
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

/// The WHEP CORS headers, added outside the CORS layer so that they reach its preflight answers
/// too: Expose-Headers on every WHEP response, and on OPTIONS the WHEP methods and request
/// headers plus (on the endpoint) `Accept-Post: application/sdp`.
pub async fn cors_headers(req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let segments = path
        .strip_prefix("/api/v3/whep")
        .or_else(|| path.strip_prefix("/whep"))
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

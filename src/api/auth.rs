//! `POST /api/login`, `GET /api/login/refresh` and the access-token guard of `/api/v3`.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::client::{is_foreign_origin, Client};
use super::error::{ApiError, ApiResult};
use super::AppState;
use crate::auth::TokenUse;

/// Login credentials.
#[derive(Debug, Deserialize, ToSchema)]
pub struct Login {
    /// Admin username. Optional in the type so that a missing one is a 400, not a JSON error.
    #[schema(required = true, value_type = String)]
    pub username: Option<String>,
    /// Admin password.
    #[schema(required = true, value_type = String)]
    pub password: Option<String>,
}

/// Tokens issued on login.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenPair {
    /// Access token (10 min by default).
    pub access_token: String,
    /// Refresh token (24 h by default).
    pub refresh_token: String,
}

/// A fresh access token.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccessToken {
    /// Access token.
    pub access_token: String,
}

/// The bearer token of a request, if it carries one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Largest login body: credentials fit easily; anything bigger is refused before it is read.
pub const LOGIN_BODY_LIMIT: usize = 4096;

/// Log in with username and password.
#[utoipa::path(post, path = "/api/login", tag = "auth", request_body = Login,
    responses((status = 200, body = TokenPair), (status = 400, body = super::error::ErrorBody), (status = 401, body = super::error::ErrorBody),
        (status = 404, description = "auth is off: there is no login", body = super::error::ErrorBody),
        (status = 413, body = super::error::ErrorBody),
        (status = 429, description = "too many failed logins from this client; see Retry-After", body = super::error::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds until the lockout ends")))))]
pub async fn login(State(state): State<AppState>, request: Request) -> Response {
    let Some(auth) = state.auth.clone() else {
        return ApiError::status(StatusCode::NOT_FOUND).into_response();
    };
    // A request without the peer (never from the server's own accept loop) shares one record.
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED), |c| c.0.ip());
    let limiter = &state.login_limiter;
    if let Err(wait) = limiter.attempt(peer, Instant::now()) {
        tracing::warn!(%peer, "login refused: client locked out after failed logins");
        return locked_out(wait);
    }
    // By its declared length first, so the answer does not depend on the content type.
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > LOGIN_BODY_LIMIT as u64) {
        limiter.refund(peer);
        return too_large();
    }
    let body = super::json::json_bytes(request, &()).await;
    if let Err(e) = &body {
        if e.code() == StatusCode::PAYLOAD_TOO_LARGE {
            limiter.refund(peer);
            return too_large();
        }
    }
    let credentials = body
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Login>(&bytes).ok())
        .and_then(|l| Some((l.username?, l.password?)));
    let delay = std::time::Duration::from_millis(state.config.auth.login_failure_delay_ms);
    let Some((username, password)) = credentials else {
        limiter.refund(peer);
        tokio::time::sleep(delay).await;
        return ApiError::bad_request("Bad Request", "Missing authorization credentials")
            .into_response();
    };
    if !auth.check_credentials(&username, &password) {
        tracing::warn!(%username, %peer, "failed login");
        tokio::time::sleep(delay).await;
        return ApiError::unauthorized(
            "Invalid authorization credentials: invalid username or password",
        )
        .into_response();
    }
    limiter.succeeded(peer);
    Json(TokenPair {
        access_token: auth.issue(TokenUse::Access),
        refresh_token: auth.issue(TokenUse::Refresh),
    })
    .into_response()
}

/// 413; the accept loop closes the connection after it (the rest of the body is unread) and
/// says so in the answer.
fn too_large() -> Response {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "Payload Too Large",
        format!("a login body has at most {LOGIN_BODY_LIMIT} bytes"),
    )
    .into_response()
}

/// 429 with the seconds to wait, rounded up so a client that waits them is let in.
fn locked_out(wait: std::time::Duration) -> Response {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let error = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "Too Many Requests",
        format!("too many failed logins; try again in {seconds} s"),
    );
    ([(header::RETRY_AFTER, seconds.to_string())], error).into_response()
}

/// Exchange a refresh token for a new access token.
#[utoipa::path(get, path = "/api/login/refresh", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = AccessToken), (status = 401, body = super::error::ErrorBody),
        (status = 404, description = "auth is off: there is no login", body = super::error::ErrorBody)))]
pub async fn refresh(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Json<AccessToken>> {
    let auth = state
        .auth
        .clone()
        .ok_or_else(|| ApiError::status(StatusCode::NOT_FOUND))?;
    let token =
        bearer(&headers).ok_or_else(|| ApiError::unauthorized("Missing or invalid JWT token"))?;
    auth.verify(token, TokenUse::Refresh)
        .map_err(|_| ApiError::unauthorized("Missing or invalid JWT token"))?;
    Ok(Json(AccessToken {
        access_token: auth.issue(TokenUse::Access),
    }))
}

/// True when the request may use the control API: with auth on, a valid access token; with auth
/// off, only a client on this machine (see [`super::client`]).
pub fn has_access(state: &AppState, client: Client, headers: &HeaderMap) -> bool {
    match &state.auth {
        None => client.local,
        Some(auth) => bearer(headers).is_some_and(|t| auth.verify(t, TokenUse::Access).is_ok()),
    }
}

/// What a client from another host is told while no credentials are set.
pub const LOCAL_ONLY: &str = "without credentials the API answers only on this machine; set auth.username and auth.password (STREAMCORE_AUTH_USERNAME, STREAMCORE_AUTH_PASSWORD) to use it from other hosts";

/// Middleware guarding `/api/v3`: cross-site browser requests are refused unless
/// `http.cors_origins` names the site; then a token (auth on) or a local client (auth off).
pub async fn require_access(
    State(state): State<AppState>,
    client: Client,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if is_foreign_origin(request.headers(), &state.config.http.cors_origins) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "cross-origin requests to the API are refused unless http.cors_origins names the origin",
        ));
    }
    if has_access(&state, client, request.headers()) {
        Ok(next.run(request).await)
    } else if state.auth.is_none() {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            LOCAL_ONLY,
        ))
    } else {
        Err(ApiError::unauthorized("Missing or invalid JWT token"))
    }
}

/// True when `token` may watch process `id`: an admin access token (auth on), or a viewer token
/// minted for exactly this process. Refresh tokens, viewer tokens for other processes and expired
/// tokens open nothing. Public processes do not call this.
pub fn may_view(state: &AppState, token: Option<&str>, id: &str) -> bool {
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return false;
    };
    let admin = state
        .auth
        .as_ref()
        .is_some_and(|auth| auth.verify(token, TokenUse::Access).is_ok());
    admin || state.process_tokens.verify(token, id).is_ok()
}

/// True when `token` may publish into process `id` over WHIP: an admin access token (auth on) or
/// a publish token minted for exactly this process; with auth off also any client on this machine
/// (like the rest of the control API), so a remote publisher needs a publish token even then.
pub fn may_publish(state: &AppState, client: Client, token: Option<&str>, id: &str) -> bool {
    if state.auth.is_none() && client.local {
        return true;
    }
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return false;
    };
    let admin = state
        .auth
        .as_ref()
        .is_some_and(|auth| auth.verify(token, TokenUse::Access).is_ok());
    admin || state.process_tokens.verify_publish(token, id).is_ok()
}

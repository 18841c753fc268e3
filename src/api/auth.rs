//! `POST /api/login`, `GET /api/login/refresh` and the access-token guard of `/api/v3`.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
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

/// Log in with username and password.
#[utoipa::path(post, path = "/api/login", tag = "auth", request_body = Login,
    responses((status = 200, body = TokenPair), (status = 400, body = super::error::ErrorBody), (status = 401, body = super::error::ErrorBody),
        (status = 404, description = "auth is off: there is no login", body = super::error::ErrorBody),
        (status = 413, body = super::error::ErrorBody),
        (status = 429, description = "too many failed logins from this client; see Retry-After", body = super::error::ErrorBody)))]
pub async fn login(State(state): State<AppState>, request: Request) -> ApiResult<Json<TokenPair>> {
    let auth = state
        .auth
        .clone()
        .ok_or_else(|| ApiError::status(axum::http::StatusCode::NOT_FOUND))?;
    let credentials = super::json::json_bytes(request, &())
        .await
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Login>(&bytes).ok())
        .and_then(|l| Some((l.username?, l.password?)));
    let delay = std::time::Duration::from_millis(state.config.auth.login_failure_delay_ms);
    let Some((username, password)) = credentials else {
        tokio::time::sleep(delay).await;
        return Err(ApiError::bad_request(
            "Bad Request",
            "Missing authorization credentials",
        ));
    };
    if !auth.check_credentials(&username, &password) {
        tracing::warn!(%username, "failed login");
        tokio::time::sleep(delay).await;
        return Err(ApiError::unauthorized(
            "Invalid authorization credentials: invalid username or password",
        ));
    }
    Ok(Json(TokenPair {
        access_token: auth.issue(TokenUse::Access),
        refresh_token: auth.issue(TokenUse::Refresh),
    }))
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
        .ok_or_else(|| ApiError::status(axum::http::StatusCode::NOT_FOUND))?;
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

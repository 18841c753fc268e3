//! The in-memory file system over plain HTTP at `/memfs/*`, as FFmpeg writes HLS to it
//! (`-method PUT` to `{memfs}`): reads are public; PUT/POST/DELETE need HTTP Basic with
//! `storage.memory.auth`, answered first with 401 and `WWW-Authenticate: Basic`, which is how
//! FFmpeg's HTTP client learns to send the credentials of its URL.

use axum::extract::{Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use subtle::ConstantTimeEq;

use super::error::{ApiError, ErrorBody};
use super::files::{self, FileBody};
use super::fs::written;
use super::params::Path;
use super::AppState;
use crate::fs::{clean_name, Kind};

/// Refuses writes without the memfs credentials (when `storage.memory.auth.enable`).
pub async fn require_basic(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let auth = &state.config.storage.memory.auth;
    if !auth.enable || basic_matches(&req, &auth.username, &auth.password) {
        return next.run(req).await;
    }
    ApiError::unauthorized_basic().into_response()
}

fn basic_matches(req: &Request, username: &str, password: &str) -> bool {
    let Some(encoded) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let Some(colon) = decoded.iter().position(|&b| b == b':') else {
        return false;
    };
    let (user, pass) = (&decoded[..colon], &decoded[colon + 1..]);
    // Both compared in full, so the answer's timing tells nothing about either.
    let user_ok = user.ct_eq(username.as_bytes());
    let pass_ok = pass.ct_eq(password.as_bytes());
    (user_ok & pass_ok).into()
}

/// A file of the memory file system (HEAD: headers only).
#[utoipa::path(get, path = "/memfs/{path}", tag = "memfs", params(("path" = String, Path, description = "the file's name; may contain `/`")),
    responses((status = 200, description = "the file; Range requests get 206", body = FileBody, content_type = "application/octet-stream"),
        (status = 206, description = "a byte range of the file", body = FileBody, content_type = "application/octet-stream"),
        (status = 400, description = "A name with `..`", body = ErrorBody),
        (status = 404, description = "No such file", body = ErrorBody),
        (status = 416, description = "An unsatisfiable range")))]
pub async fn get(
    State(state): State<AppState>,
    Path(path): Path<String>,
    req: Request,
) -> Response {
    // HLS readers of the memfs are sessions (collector `hls`) as readers of the disk are.
    let sessions = state.sessions.clone();
    super::sessions::track(
        &sessions,
        req,
        |req| async move { serve(&state, &path, req) },
    )
    .await
}

fn serve(state: &AppState, path: &str, req: Request) -> Response {
    let method = req.method().clone();
    let name = match clean_name(path) {
        Ok(name) => name,
        Err(e) => return files::error(&method, files::write_error(e)),
    };
    match state.filesystems.mem.get(&name) {
        Some((data, modified)) => files::serve_bytes(&method, req.headers(), &name, data, modified),
        None => files::not_found(&method, &name),
    }
}

/// Writes a file (POST does the same); needs HTTP Basic when `storage.memory.auth.enable`.
#[utoipa::path(put, path = "/memfs/{path}", tag = "memfs", params(("path" = String, Path, description = "the file's name; may contain `/`")),
    security(("basic" = [])),
    request_body(content = FileBody, content_type = "application/octet-stream", description = "the file's content"),
    responses((status = 201, description = "A new file", body = String, content_type = "text/plain"),
        (status = 204, description = "An existing file was replaced"),
        (status = 400, description = "A name with `..`, or a body that did not arrive", body = ErrorBody),
        (status = 401, description = "No or wrong Basic credentials; `WWW-Authenticate: Basic`", body = ErrorBody),
        (status = 413, description = "The file is over storage.max_file_mbytes or storage.memory.max_size_mbytes", body = ErrorBody),
        (status = 507, description = "The file system is full (and may not purge)", body = ErrorBody)))]
pub async fn put(
    State(state): State<AppState>,
    Path(path): Path<String>,
    req: Request,
) -> Response {
    let location = req.uri().path().to_string();
    let (parts, body) = req.into_parts();
    match files::store(
        &state.filesystems,
        Kind::Mem,
        &path,
        &parts.headers,
        body,
        state.config.storage.max_file_mbytes * 1024 * 1024,
    )
    .await
    {
        Ok(created) => written(created, &location),
        Err(e) => e.into_response(),
    }
}

/// Like PUT.
#[utoipa::path(post, path = "/memfs/{path}", tag = "memfs", params(("path" = String, Path, description = "the file's name; may contain `/`")),
    security(("basic" = [])),
    request_body(content = FileBody, content_type = "application/octet-stream", description = "the file's content"),
    responses((status = 201, description = "A new file", body = String, content_type = "text/plain"),
        (status = 204, description = "An existing file was replaced"),
        (status = 400, description = "A name with `..`, or a body that did not arrive", body = ErrorBody),
        (status = 401, description = "No or wrong Basic credentials; `WWW-Authenticate: Basic`", body = ErrorBody),
        (status = 413, description = "The file is over storage.max_file_mbytes or storage.memory.max_size_mbytes", body = ErrorBody),
        (status = 507, description = "The file system is full (and may not purge)", body = ErrorBody)))]
pub async fn post(state: State<AppState>, path: Path<String>, req: Request) -> Response {
    put(state, path, req).await
}

/// Deletes a file; needs HTTP Basic when `storage.memory.auth.enable`.
#[utoipa::path(delete, path = "/memfs/{path}", tag = "memfs", params(("path" = String, Path, description = "the file's name; may contain `/`")),
    security(("basic" = [])),
    responses((status = 200, description = "`Deleted: <path>`", body = String, content_type = "text/plain"),
        (status = 400, description = "A name with `..`", body = ErrorBody),
        (status = 401, description = "No or wrong Basic credentials; `WWW-Authenticate: Basic`", body = ErrorBody),
        (status = 404, description = "No such file", body = ErrorBody)))]
pub async fn delete(State(state): State<AppState>, Path(path): Path<String>) -> Response {
    files::delete(&state.filesystems, Kind::Mem, &path).await
}

/// `/memfs` and `/memfs/` name no file (Core: 404).
pub async fn root(method: Method) -> Response {
    files::not_found(&method, "/")
}

//! The file API of datarhei Core: `GET /api/v3/fs` (the file systems), `GET /api/v3/fs/{name}`
//! (a listing), and `GET/HEAD/PUT/DELETE /api/v3/fs/{name}/{path}` on `disk` (the public
//! directory) and `mem` (the `/memfs` file system). Core's statuses: 201 for a new file, 204 for
//! a replaced one, `Deleted: <path>` text, 404 without a body on HEAD.

use axum::body::Body;
use axum::extract::{OriginalUri, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ApiResult, ErrorBody};
use super::files::{self, FileBody};
use super::params::{Path, Query};
use super::AppState;
use crate::fs::{clean_name, glob::Pattern, Kind};

/// A file system (datarhei `FilesystemInfo`).
#[derive(Debug, Serialize, ToSchema)]
pub struct FilesystemInfo {
    /// `disk` or `mem`.
    pub name: String,
    /// The same.
    #[serde(rename = "type")]
    pub kind: String,
    /// Where its files are served over plain HTTP.
    pub mount: String,
}

/// A file (datarhei `FileInfo`).
#[derive(Debug, Serialize, ToSchema)]
pub struct FileInfo {
    /// Absolute name inside the file system.
    pub name: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Last modification, Unix seconds.
    pub last_modified: i64,
}

/// Listing options.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Glob over absolute names: `*` within a directory, `**` across directories.
    pub glob: Option<String>,
    /// `name`, `size` or `lastmod` (the default).
    pub sort: Option<String>,
    /// `asc` (the default) or `desc`.
    pub order: Option<String>,
}

fn kind(name: &str) -> Result<Kind, ApiError> {
    match name {
        "disk" => Ok(Kind::Disk),
        "mem" => Ok(Kind::Mem),
        _ => Err(ApiError::not_found(
            "File not found",
            format!("unknown filesystem: {name}"),
        )),
    }
}

/// The file systems.
#[utoipa::path(get, path = "/api/v3/fs", tag = "fs", security(("bearer" = [])),
    responses((status = 200, body = Vec<FilesystemInfo>)))]
pub async fn list_filesystems() -> Json<Vec<FilesystemInfo>> {
    Json(
        [("disk", "/"), ("mem", "/memfs")]
            .map(|(name, mount)| FilesystemInfo {
                name: name.into(),
                kind: name.into(),
                mount: mount.into(),
            })
            .into(),
    )
}

/// The files of a file system, optionally filtered and sorted.
#[utoipa::path(get, path = "/api/v3/fs/{name}", tag = "fs", params(("name" = String, Path, description = "`disk` or `mem`"), ListQuery), security(("bearer" = [])),
    responses((status = 200, body = Vec<FileInfo>),
        (status = 400, description = "An invalid glob", body = ErrorBody),
        (status = 404, description = "Unknown file system", body = ErrorBody)))]
pub async fn list_files(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<Vec<FileInfo>>> {
    let kind = kind(&name)?;
    let pattern = match query.glob.as_deref().filter(|g| !g.is_empty()) {
        Some(glob) => {
            Some(Pattern::new(glob).map_err(|e| ApiError::bad_request("Invalid glob pattern", e))?)
        }
        None => None,
    };
    let fss = state.filesystems.clone();
    let mut listed = tokio::task::spawn_blocking(move || fss.list(kind, pattern.as_ref()))
        .await
        .map_err(|e| ApiError::internal("Listing failed", &e))?;
    match query.sort.as_deref() {
        Some("name") => listed.sort_by(|a, b| a.name.cmp(&b.name)),
        Some("size") => listed.sort_by_key(|f| f.size),
        _ => listed.sort_by_key(|f| f.modified),
    }
    if query.order.as_deref() == Some("desc") {
        listed.reverse();
    }
    Ok(Json(
        listed
            .into_iter()
            .map(|f| FileInfo {
                name: f.name,
                size_bytes: f.size,
                last_modified: f
                    .modified
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64),
            })
            .collect(),
    ))
}

/// A file (HEAD: its headers only; a missing file is a bare 404).
#[utoipa::path(get, path = "/api/v3/fs/{name}/{path}", tag = "fs", params(("name" = String, Path, description = "`disk` or `mem`"), ("path" = String, Path, description = "the file's name; may contain `/`")), security(("bearer" = [])),
    responses((status = 200, description = "the file; Range requests get 206", body = FileBody, content_type = "application/octet-stream"),
        (status = 206, description = "a byte range of the file", body = FileBody, content_type = "application/octet-stream"),
        (status = 400, description = "A name with `..`", body = ErrorBody),
        (status = 404, description = "No such file or file system", body = ErrorBody),
        (status = 416, description = "An unsatisfiable range")))]
pub async fn get_file(
    State(state): State<AppState>,
    Path((name, path)): Path<(String, String)>,
    req: Request,
) -> Response {
    let method = req.method().clone();
    let kind = match kind(&name) {
        Ok(kind) => kind,
        Err(e) => return files::error(&method, e),
    };
    let file = match clean_name(&path) {
        Ok(file) => file,
        Err(e) => return files::error(&method, files::write_error(e)),
    };
    match kind {
        Kind::Mem => match state.filesystems.mem.get(&file) {
            Some((data, modified)) => {
                files::serve_bytes(&method, req.headers(), &file, data, modified)
            }
            None => files::not_found(&method, &file),
        },
        Kind::Disk => files::serve_disk(&state.filesystems, &method, req.headers(), &file).await,
    }
}

/// Writes a file from the raw body.
#[utoipa::path(put, path = "/api/v3/fs/{name}/{path}", tag = "fs", params(("name" = String, Path, description = "`disk` or `mem`"), ("path" = String, Path, description = "the file's name; may contain `/`")), security(("bearer" = [])),
    request_body(content = FileBody, content_type = "application/octet-stream", description = "the file's content"),
    responses((status = 201, description = "A new file; Content-Location names it", body = String, content_type = "text/plain"),
        (status = 204, description = "An existing file was replaced"),
        (status = 400, description = "A name with `..`, or a body that did not arrive", body = ErrorBody),
        (status = 404, description = "Unknown file system", body = ErrorBody),
        (status = 413, description = "The file is over storage.max_file_mbytes or the memory file system's size", body = ErrorBody),
        (status = 507, description = "The memory file system is full (and may not purge)", body = ErrorBody)))]
pub async fn put_file(
    State(state): State<AppState>,
    Path((name, path)): Path<(String, String)>,
    OriginalUri(uri): OriginalUri,
    req: Request,
) -> ApiResult<Response> {
    let kind = kind(&name)?;
    // The router nests `/api/v3`; the client's own path is the location.
    let location = uri.path().to_string();
    let (parts, body) = req.into_parts();
    let created = files::store(
        &state.filesystems,
        kind,
        &path,
        &parts.headers,
        body,
        state.config.storage.max_file_mbytes * 1024 * 1024,
    )
    .await?;
    Ok(written(created, &location))
}

/// Core's answer to a write: 201 with an empty text body for a new file, 204 for a replaced one.
pub fn written(created: bool, location: &str) -> Response {
    let mut response = if created {
        (
            StatusCode::CREATED,
            [(header::CONTENT_TYPE, "text/plain; charset=UTF-8")],
            Body::empty(),
        )
            .into_response()
    } else {
        StatusCode::NO_CONTENT.into_response()
    };
    if let Ok(v) = header::HeaderValue::from_str(location) {
        response.headers_mut().insert(header::CONTENT_LOCATION, v);
    }
    response
}

/// Deletes a file.
#[utoipa::path(delete, path = "/api/v3/fs/{name}/{path}", tag = "fs", params(("name" = String, Path, description = "`disk` or `mem`"), ("path" = String, Path, description = "the file's name; may contain `/`")), security(("bearer" = [])),
    responses((status = 200, description = "`Deleted: <path>`", body = String, content_type = "text/plain"),
        (status = 400, description = "A name with `..`", body = ErrorBody),
        (status = 404, description = "No such file or file system", body = ErrorBody)))]
pub async fn delete_file(
    State(state): State<AppState>,
    Path((name, path)): Path<(String, String)>,
) -> Response {
    match kind(&name) {
        Ok(kind) => files::delete(&state.filesystems, kind, &path).await,
        Err(e) => files::error(&Method::DELETE, e),
    }
}

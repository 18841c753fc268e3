//! What the file API (`/api/v3/fs`) and the `/memfs` mount share: content types, serving a file
//! (with Range, Last-Modified, and HEAD without a body), and storing a request body as a file
//! without holding more than the file itself in memory.

use std::time::SystemTime;

use axum::body::{Body, Bytes, HttpBody};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use tower::ServiceExt;

use super::error::ApiError;
use crate::fs::{clean_name, Filesystems, Kind, WriteError};

/// A file's bytes, for the OpenAPI document.
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct FileBody(#[allow(dead_code)] Vec<u8>);

/// Streaming types first (mime_guess has other ideas for `.ts`), then mime_guess, then
/// datarhei's default for unknown extensions.
pub fn content_type(name: &str) -> String {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    let known = match ext.as_deref() {
        Some("m3u8") => "application/vnd.apple.mpegurl",
        Some("ts") => "video/mp2t",
        Some("m4s") => "video/iso.segment",
        Some("mpd") => "application/dash+xml",
        Some("mp4") => "video/mp4",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("js") => "text/javascript; charset=utf-8",
        Some("html") => "text/html; charset=utf-8",
        Some(ext) => {
            return mime_guess::from_ext(ext)
                .first_raw()
                .unwrap_or("application/data")
                .to_string()
        }
        None => "application/data",
    };
    known.to_string()
}

/// An error for `method`: HEAD gets the status alone (no body, no JSON content type), as in
/// Core, since clients probe files with HEAD and parse what comes back.
pub fn error(method: &Method, error: ApiError) -> Response {
    if method == Method::HEAD {
        error.code().into_response()
    } else {
        error.into_response()
    }
}

/// 404 for a missing file.
pub fn not_found(method: &Method, name: &str) -> Response {
    error(method, ApiError::not_found("File not found", name))
}

/// Maps a refused write to its status.
pub fn write_error(e: WriteError) -> ApiError {
    match e {
        WriteError::BadPath(why) => ApiError::bad_request("Bad request", why),
        WriteError::TooBig(max) => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "File is too big",
            format!("at most {max} bytes"),
        ),
        WriteError::Full => ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "Insufficient Storage",
            "not enough space on device",
        ),
        WriteError::Io(e) => ApiError::internal("Writing the file failed", &e),
    }
}

/// Serves an in-memory file: one byte range when asked (206/416), otherwise all of it.
pub fn serve_bytes(
    method: &Method,
    headers: &HeaderMap,
    name: &str,
    data: Bytes,
    modified: SystemTime,
) -> Response {
    let total = data.len() as u64;
    let mut status = StatusCode::OK;
    let mut body = data;
    let mut content_range = None;
    if let Some(range) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        match http_range_header::parse_range_header(range).and_then(|r| r.validate(total)) {
            Ok(ranges) if ranges.len() == 1 => {
                let (start, end) = (*ranges[0].start(), *ranges[0].end());
                body = body.slice(start as usize..=end as usize);
                status = StatusCode::PARTIAL_CONTENT;
                content_range = Some(format!("bytes {start}-{end}/{total}"));
            }
            // Several ranges: the whole file is a valid answer (RFC 9110 §14.2).
            Ok(_) => {}
            Err(_) => {
                let mut response = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{total}")) {
                    response.headers_mut().insert(header::CONTENT_RANGE, v);
                }
                return response;
            }
        }
    }
    let length = body.len();
    let mut response = if method == Method::HEAD {
        Response::new(Body::empty())
    } else {
        Response::new(Body::from(body))
    };
    *response.status_mut() = status;
    let h = response.headers_mut();
    set(h, header::CONTENT_TYPE, &content_type(name));
    set(h, header::CONTENT_LENGTH, &length.to_string());
    set(h, header::ACCEPT_RANGES, "bytes");
    set(h, header::LAST_MODIFIED, &httpdate::fmt_http_date(modified));
    if let Some(range) = content_range {
        set(h, header::CONTENT_RANGE, &range);
    }
    response
}

/// Serves a file of the public directory through tower-http (Range, conditional requests),
/// with the content types of [`content_type`].
pub async fn serve_disk(
    filesystems: &Filesystems,
    method: &Method,
    headers: &HeaderMap,
    name: &str,
) -> Response {
    let disk = filesystems.disk.clone();
    let owned = name.to_string();
    let Ok(Some(path)) = tokio::task::spawn_blocking(move || disk.file(&owned)).await else {
        return not_found(method, name);
    };
    let mut request = axum::http::Request::new(Body::empty());
    *request.method_mut() = method.clone();
    for h in [
        header::RANGE,
        header::IF_MODIFIED_SINCE,
        header::IF_UNMODIFIED_SINCE,
        header::IF_RANGE,
    ] {
        if let Some(v) = headers.get(&h) {
            request.headers_mut().insert(h, v.clone());
        }
    }
    let response = match tower_http::services::ServeFile::new(&path)
        .oneshot(request)
        .await
    {
        Ok(response) => response.map(Body::new),
        Err(never) => match never {},
    };
    let mut response = response.into_response();
    if response.status().is_success() {
        set(
            response.headers_mut(),
            header::CONTENT_TYPE,
            &content_type(name),
        );
    }
    response
}

fn set(headers: &mut HeaderMap, name: header::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

/// Stores `body` as file `path` of `kind`; `true` when the file is new. At most `max_bytes` are
/// read: a declared or actual larger body is refused with 413 as soon as that is known.
pub async fn store(
    filesystems: &Filesystems,
    kind: Kind,
    path: &str,
    headers: &HeaderMap,
    body: Body,
    max_bytes: u64,
) -> Result<bool, ApiError> {
    let name = clean_name(path).map_err(write_error)?;
    let max_bytes = match (kind, filesystems.mem.max_bytes()) {
        (Kind::Mem, cap) if cap > 0 => max_bytes.min(cap),
        _ => max_bytes,
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max_bytes) {
        return Err(write_error(WriteError::TooBig(max_bytes)));
    }
    match kind {
        Kind::Mem => {
            let data = collect(body, max_bytes).await?;
            filesystems.mem.put(&name, data).map_err(write_error)
        }
        Kind::Disk => {
            let disk = filesystems.disk.clone();
            let mut upload = blocking(move || disk.create(&name)).await?;
            let mut body = body;
            let mut written = 0u64;
            while let Some(chunk) = next_chunk(&mut body).await? {
                written += chunk.len() as u64;
                if written > max_bytes {
                    return Err(write_error(WriteError::TooBig(max_bytes)));
                }
                upload = blocking(move || {
                    upload.write(&chunk)?;
                    Ok(upload)
                })
                .await?;
            }
            blocking(move || Ok(upload.commit()?)).await
        }
    }
}

/// The body in one buffer, refused once it passes `max_bytes`.
async fn collect(mut body: Body, max_bytes: u64) -> Result<Bytes, ApiError> {
    let hint = body.size_hint().lower().min(max_bytes);
    let mut buffer = Vec::with_capacity(hint as usize);
    while let Some(chunk) = next_chunk(&mut body).await? {
        if (buffer.len() + chunk.len()) as u64 > max_bytes {
            return Err(write_error(WriteError::TooBig(max_bytes)));
        }
        buffer.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buffer))
}

async fn next_chunk(body: &mut Body) -> Result<Option<Bytes>, ApiError> {
    loop {
        match std::future::poll_fn(|cx| std::pin::Pin::new(&mut *body).poll_frame(cx)).await {
            None => return Ok(None),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    return Ok(Some(data));
                }
            }
            Some(Err(e)) => {
                return Err(ApiError::bad_request(
                    "Bad request",
                    format!("reading the body failed: {e}"),
                ))
            }
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, WriteError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(write_error),
        Err(e) => Err(ApiError::internal("Writing the file failed", &e)),
    }
}

/// Deletes a file: Core's `Deleted: <name>` text, or 404.
pub async fn delete(filesystems: &Filesystems, kind: Kind, path: &str) -> Response {
    let name = match clean_name(path) {
        Ok(name) => name,
        Err(e) => return write_error(e).into_response(),
    };
    let fss = filesystems.clone();
    let owned = name.clone();
    match tokio::task::spawn_blocking(move || fss.remove(kind, &owned)).await {
        Ok(Some(_)) => (
            [(header::CONTENT_TYPE, "text/plain; charset=UTF-8")],
            format!("Deleted: {name}"),
        )
            .into_response(),
        _ => not_found(&Method::DELETE, &name),
    }
}

//! The JSON body extractor: datarhei's binding rules with datarhei's error bodies.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// A JSON request body. Requires a `Content-Type` of `application/json` and a non-empty body;
/// anything else is a 400 "Invalid JSON" (413 when over the size limit).
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = json_bytes(req, state).await?;
        parse(&bytes).map(JsonBody)
    }
}

/// Reads a body after checking its content type; shared by extractors that need the raw bytes.
pub async fn json_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    if !is_json(req.headers()) {
        return Err(not_json());
    }
    let bytes = read(req, state, "Invalid JSON").await?;
    if bytes.is_empty() {
        return Err(ApiError::bad_request(
            "Invalid JSON",
            "request doesn't contain any content",
        ));
    }
    Ok(bytes)
}

/// An optional JSON object body: an empty one reads as `T::default()`; anything else must be a
/// JSON object sent as `application/json` (400 otherwise: serde alone would also read a struct
/// from an array).
pub struct OptionalJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = is_json(req.headers());
        let RawBody(bytes) = RawBody::from_request(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        if !is_json {
            return Err(not_json());
        }
        match parse::<serde_json::Value>(&bytes)? {
            object @ serde_json::Value::Object(_) => serde_json::from_value(object)
                .map(OptionalJson)
                .map_err(|e| json_error(&e)),
            _ => Err(ApiError::bad_request(
                "Invalid JSON",
                "the body must be a JSON object",
            )),
        }
    }
}

/// A raw request body whose failures (over the size limit: 413) are datarhei error bodies, not
/// axum's plain text.
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        read(req, state, "Unreadable body").await.map(RawBody)
    }
}

async fn read<S: Send + Sync>(req: Request, state: &S, message: &str) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Payload Too Large",
                "request body is too large",
            )
        } else {
            ApiError::bad_request(message, rejection.body_text())
        }
    })
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        })
}

fn not_json() -> ApiError {
    ApiError::bad_request(
        "Invalid JSON",
        "request doesn't contain JSON content (Content-Type must be application/json)",
    )
}

/// Parses JSON with datarhei-style error details.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| json_error(&e))
}

/// Formats a serde_json error like datarhei does.
pub fn json_error(e: &serde_json::Error) -> ApiError {
    let detail = if e.is_syntax() || e.is_eof() {
        format!(
            "syntax error at line {}, character {}: {e}",
            e.line(),
            e.column()
        )
    } else {
        e.to_string()
    };
    ApiError::bad_request("Invalid JSON", detail)
}

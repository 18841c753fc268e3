//! The one error type of the HTTP API: datarhei's `{"code", "message", "details"}` body.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::process::RegistryError;

/// Error body of every non-2xx answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The HTTP status.
    pub code: u16,
    /// Short description.
    pub message: String,
    /// Further lines; never null.
    pub details: Vec<String>,
}

/// An API failure.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    details: Vec<String>,
    www_authenticate: Option<&'static str>,
}

impl ApiError {
    /// An error with a message and detail lines.
    pub fn new(
        status: StatusCode,
        message: impl Into<String>,
        details: impl Into<String>,
    ) -> ApiError {
        let details: String = details.into();
        ApiError {
            status,
            message: message.into(),
            details: if details.is_empty() {
                Vec::new()
            } else {
                details.split('\n').map(str::to_string).collect()
            },
            www_authenticate: None,
        }
    }

    /// An error whose message is the status text.
    pub fn status(status: StatusCode) -> ApiError {
        let text = status.canonical_reason().unwrap_or("Error");
        ApiError::new(status, text, text)
    }

    /// 400 with a message.
    pub fn bad_request(message: impl Into<String>, details: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message, details)
    }

    /// 404 with a message.
    pub fn not_found(message: impl Into<String>, details: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message, details)
    }

    /// 401 for a missing or bad token, with the Bearer challenge.
    pub fn unauthorized(details: impl Into<String>) -> ApiError {
        ApiError {
            www_authenticate: Some("Bearer"),
            ..ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized", details)
        }
    }

    /// 401 for a write to `/memfs` without its Basic credentials; the challenge is what makes
    /// FFmpeg send the credentials of its URL.
    pub fn unauthorized_basic() -> ApiError {
        ApiError {
            www_authenticate: Some("Basic realm=\"Restricted\""),
            ..ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized", "")
        }
    }

    /// 500 that keeps the cause out of the body but in the log: causes are internals (library
    /// errors, panic messages, paths) that clients have no use for and must not see.
    pub fn internal(message: impl Into<String>, cause: &dyn std::fmt::Display) -> ApiError {
        let message = message.into();
        tracing::error!(error = %cause, "{message}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            message,
            "internal error; the server log has the cause",
        )
    }

    /// The HTTP status.
    pub fn code(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            code: self.status.as_u16(),
            message: self.message,
            details: self.details,
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(challenge) = self.www_authenticate {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

/// Maps registry failures to the statuses of the datarhei contract for add/update; handlers with
/// other rules (command, delete) map explicitly.
impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::NotFound => ApiError::not_found("Unknown process ID", "unknown process"),
            RegistryError::Store(err) => ApiError::internal("Store failed", &err),
            other => ApiError::bad_request("Invalid process config", other.to_string()),
        }
    }
}

/// Result type of the handlers.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    /// What `internal` promises: the cause goes to the log, the body carries only the message.
    #[tokio::test]
    async fn an_internal_error_keeps_its_cause_out_of_the_body() {
        let cause = "database error: disk I/O error at /var/lib/streamcore/db (0x7f3a2c001e20)";
        let response = ApiError::internal("Store failed", &cause).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "code": 500,
                "message": "Store failed",
                "details": ["internal error; the server log has the cause"],
            })
        );
    }
}

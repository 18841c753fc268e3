//! Path and query extractors whose rejections are datarhei error bodies: axum's own answer a path
//! segment that is not UTF-8 once decoded (`%FF`) or a repeated query key with plain text.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::FromRequestParts;

use super::error::ApiError;

/// [`axum::extract::Path`], refusing with the error body.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// [`axum::extract::Query`], refusing with the error body.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::new(rejection.status(), "Invalid path", rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::new(rejection.status(), "Invalid query", rejection.body_text())
    }
}

//! `GET /api/v3/log`: the server's recent log events.

use axum::Json;
use serde::Deserialize;
use serde_json::Value;
use utoipa::IntoParams;

use super::error::{ApiError, ApiResult, ErrorBody};
use super::params::Query;

/// How to write the events.
#[derive(Debug, Default, Deserialize, IntoParams)]
pub struct LogQuery {
    /// `console` (the default): one text line per event; `raw`: one object per event.
    pub format: Option<String>,
}

/// The last `log.max_lines` events the log level let through, oldest first.
#[utoipa::path(get, path = "/api/v3/log", tag = "log", params(LogQuery), security(("bearer" = [])),
    responses((status = 200, body = Vec<Value>, description = "strings (console) or objects (raw)"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn get(Query(query): Query<LogQuery>) -> ApiResult<Json<Vec<Value>>> {
    let events = crate::logring::events();
    let lines = match query.format.as_deref().unwrap_or("console") {
        "console" => events.iter().map(|e| Value::String(e.console())).collect(),
        "raw" => events.iter().map(|e| e.raw()).collect(),
        other => {
            return Err(ApiError::bad_request(
                "Invalid format",
                format!("format {other:?} is neither console nor raw"),
            ))
        }
    };
    Ok(Json(lines))
}

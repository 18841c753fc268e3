//! `GET /api/v3/metrics` (what can be asked) and `POST /api/v3/metrics` (values and history),
//! datarhei Core's metrics query.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ApiResult, ErrorBody};
use super::json::JsonBody;
use super::AppState;
use crate::history::DESCRIPTIONS;

/// A metric that can be queried.
#[derive(Debug, Serialize, ToSchema)]
pub struct Description {
    /// Its name.
    pub name: String,
    /// What it measures.
    pub description: String,
    /// Its label names.
    pub labels: Vec<String>,
}

/// One metric asked for.
#[derive(Debug, Deserialize, ToSchema)]
pub struct QueryMetric {
    /// Its name.
    pub name: String,
    /// Labels the answer's series must have (all series when empty).
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
}

/// A query.
#[derive(Debug, Deserialize, ToSchema)]
pub struct Query {
    /// Seconds of history; 0 (or absent) gives the current values only.
    #[serde(default)]
    pub timerange_sec: Option<u64>,
    /// Seconds between two values of the answer (at least `metrics.interval_sec`).
    #[serde(default)]
    pub interval_sec: Option<u64>,
    /// The metrics.
    #[serde(default)]
    pub metrics: Option<Vec<QueryMetric>>,
}

/// One series.
#[derive(Debug, Serialize, ToSchema)]
pub struct Series {
    /// Its name.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// `[unix seconds, value]` pairs, oldest first.
    #[schema(value_type = Vec<Vec<f64>>)]
    pub values: Vec<(i64, f64)>,
}

/// The answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Answer {
    /// As asked.
    pub timerange_sec: u64,
    /// Seconds between two values.
    pub interval_sec: u64,
    /// The series.
    pub metrics: Vec<Series>,
}

/// The metrics that can be queried.
#[utoipa::path(get, path = "/api/v3/metrics", tag = "metrics", security(("bearer" = [])),
    responses((status = 200, body = [Description]), (status = 401, body = ErrorBody)))]
pub async fn describe() -> Json<Vec<Description>> {
    Json(
        DESCRIPTIONS
            .iter()
            .map(|(name, description, labels)| Description {
                name: name.to_string(),
                description: description.to_string(),
                labels: labels.iter().map(|l| l.to_string()).collect(),
            })
            .collect(),
    )
}

/// Current values and history of the metrics asked for.
#[utoipa::path(post, path = "/api/v3/metrics", tag = "metrics", security(("bearer" = [])),
    request_body = Query,
    responses((status = 200, body = Answer), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn query(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> ApiResult<Json<Answer>> {
    // serde reads a struct from an array too; a query is an object.
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "Invalid JSON",
            "the query must be an object",
        ));
    }
    let query: Query = serde_json::from_value(body).map_err(|e| super::json::json_error(&e))?;
    let history = &state.history;
    let range = query.timerange_sec.unwrap_or(0);
    if range > state.config.metrics.range_sec.max(1) * 10 {
        return Err(ApiError::bad_request(
            "Invalid query",
            format!(
                "timerange_sec is at most metrics.range_sec ({})",
                state.config.metrics.range_sec
            ),
        ));
    }
    let interval = query.interval_sec.unwrap_or(0).max(history.interval_sec());
    let mut metrics = Vec::new();
    for wanted in query.metrics.unwrap_or_default() {
        let labels = wanted.labels.unwrap_or_default();
        for (labels, values) in history.query(&wanted.name, &labels, range) {
            metrics.push(Series {
                name: wanted.name.clone(),
                labels,
                values: every(values, interval),
            });
        }
    }
    Ok(Json(Answer {
        timerange_sec: range,
        interval_sec: interval,
        metrics,
    }))
}

/// Keeps values at least `interval` seconds apart (and always the newest).
fn every(values: Vec<(i64, f64)>, interval: u64) -> Vec<(i64, f64)> {
    let Some(&(newest, _)) = values.last() else {
        return values;
    };
    let mut out: Vec<(i64, f64)> = values
        .into_iter()
        .rev()
        .filter(|(ts, _)| (newest - ts) % interval.max(1) as i64 == 0)
        .collect();
    out.reverse();
    out
}

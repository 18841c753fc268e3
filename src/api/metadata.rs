//! Process and system metadata: free JSON values stored under string keys.

#[allow(unused_imports)] // the OpenAPI annotations name it
use std::collections::HashMap;

use axum::extract::{Request, State};
use axum::Json;
use serde_json::Value;

use super::error::{ApiError, ApiResult, ErrorBody};
use super::json::{json_bytes, parse};
use super::params::Path;
use super::AppState;
use crate::process::RegistryError;

fn unknown_process() -> ApiError {
    ApiError::not_found("Unknown process ID", "unknown process")
}

fn store_error(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal("Store failed", &e)
}

fn as_object(map: std::collections::BTreeMap<String, Value>) -> Value {
    if map.is_empty() {
        Value::Null
    } else {
        Value::Object(map.into_iter().collect())
    }
}

/// All metadata of a process (`null` when none).
#[utoipa::path(get, path = "/api/v3/process/{id}/metadata", tag = "metadata", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Option<HashMap<String, Value>>), (status = 404, body = ErrorBody), (status = 500, body = ErrorBody)))]
pub async fn process_all(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    match state.registry.metadata(&id) {
        Ok(map) => Ok(Json(as_object(map))),
        Err(RegistryError::NotFound) => Err(unknown_process()),
        Err(e) => Err(store_error(e)),
    }
}

/// One metadata value of a process.
#[utoipa::path(get, path = "/api/v3/process/{id}/metadata/{key}", tag = "metadata", params(("id" = String, Path), ("key" = String, Path)),
    security(("bearer" = [])), responses((status = 200, body = Value), (status = 404, body = ErrorBody), (status = 500, body = ErrorBody)))]
pub async fn process_get(
    State(state): State<AppState>,
    Path((id, key)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let map = match state.registry.metadata(&id) {
        Ok(map) => map,
        Err(RegistryError::NotFound) => return Err(unknown_process()),
        Err(e) => return Err(store_error(e)),
    };
    // datarhei's message for an unknown key is "Unknown process ID" too; clients match on it.
    map.get(&key)
        .cloned()
        .map(Json)
        .ok_or_else(|| ApiError::not_found("Unknown process ID", "unknown key"))
}

/// Set a metadata value of a process; `null` deletes the key. Echoes the body.
#[utoipa::path(put, path = "/api/v3/process/{id}/metadata/{key}", tag = "metadata", params(("id" = String, Path), ("key" = String, Path)),
    request_body(content = Value, description = "any JSON value; `null` deletes the key"), security(("bearer" = [])),
    responses((status = 200, body = Value), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 500, body = ErrorBody)))]
pub async fn process_put(
    State(state): State<AppState>,
    Path((id, key)): Path<(String, String)>,
    request: Request,
) -> ApiResult<Json<Value>> {
    if state.registry.get(&id).is_none() {
        return Err(unknown_process());
    }
    let value: Value = parse(&json_bytes(request, &()).await?)?;
    let stored = (!value.is_null()).then_some(&value);
    match state.registry.set_metadata(&id, &key, stored).await {
        Ok(()) => Ok(Json(value)),
        Err(RegistryError::NotFound) => Err(unknown_process()),
        Err(e) => Err(store_error(e)),
    }
}

/// All system metadata (`null` when none).
#[utoipa::path(get, path = "/api/v3/metadata", tag = "metadata", security(("bearer" = [])), responses((status = 200, body = Option<HashMap<String, Value>>), (status = 500, body = ErrorBody)))]
pub async fn system_all(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    state
        .store
        .metadata()
        .map(|m| Json(as_object(m)))
        .map_err(store_error)
}

/// One system metadata value.
#[utoipa::path(get, path = "/api/v3/metadata/{key}", tag = "metadata", params(("key" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Value), (status = 404, body = ErrorBody), (status = 500, body = ErrorBody)))]
pub async fn system_get(
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> ApiResult<Json<Value>> {
    let map = state.store.metadata().map_err(store_error)?;
    map.get(&key)
        .cloned()
        .map(Json)
        .ok_or_else(|| ApiError::not_found("Metadata not found", format!("unknown key '{key}'")))
}

/// Set a system metadata value; `null` deletes the key. Echoes the body.
#[utoipa::path(put, path = "/api/v3/metadata/{key}", tag = "metadata", params(("key" = String, Path)), request_body(content = Value, description = "any JSON value; `null` deletes the key"),
    security(("bearer" = [])), responses((status = 200, body = Value), (status = 400, body = ErrorBody), (status = 500, body = ErrorBody)))]
pub async fn system_put(
    State(state): State<AppState>,
    Path(key): Path<String>,
    request: Request,
) -> ApiResult<Json<Value>> {
    let bytes = json_bytes(request, &()).await?;
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request("Invalid metadata", e.to_string()))?;
    state
        .store
        .set_metadata(&key, (!value.is_null()).then_some(&value))
        .map_err(store_error)?;
    Ok(Json(value))
}

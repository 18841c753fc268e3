//! `/api/v3/process...`: create, list, read, update, delete and steer processes.

use std::collections::HashSet;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::Json;
use globset::GlobBuilder;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ApiResult, ErrorBody};
use super::json::{json_bytes, json_error, parse, JsonBody};
use super::params::{Path, Query};
use super::AppState;
use crate::model::process::ProcessConfig;
use crate::process::progress::Probe;
use crate::process::registry::Entry;
use crate::process::report::ProcessReport;
use crate::process::runner::ProcessState;
use crate::process::{ProcessCommand, Registry, RegistryError};

/// A process with the parts selected by `filter` (datarhei `Process`).
#[derive(Debug, Serialize, ToSchema)]
pub struct Process {
    /// Id.
    pub id: String,
    /// Always `ffmpeg`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Reference.
    pub reference: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
    /// The definition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<ProcessConfig>,
    /// The state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<ProcessState>,
    /// The log report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<ProcessReport>,
    /// Metadata; absent when there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

/// Query of the process list.
#[derive(Debug, Default, Deserialize, IntoParams)]
pub struct ListQuery {
    /// Comma list of `config,state,report,metadata`; empty selects all.
    pub filter: Option<String>,
    /// Exact reference; overrides `id`.
    pub reference: Option<String>,
    /// Comma list of ids.
    pub id: Option<String>,
    /// Glob over ids.
    pub idpattern: Option<String>,
    /// Glob over references.
    pub refpattern: Option<String>,
}

/// Query of a single process.
#[derive(Debug, Default, Deserialize, IntoParams)]
pub struct GetQuery {
    /// Comma list of `config,state,report,metadata`; empty selects all.
    pub filter: Option<String>,
}

/// A process command.
#[derive(Debug, Deserialize, ToSchema)]
pub struct Command {
    /// `start`, `stop`, `restart` or `reload`.
    #[schema(pattern = "^(start|stop|restart|reload)$")]
    pub command: String,
}

struct Parts {
    config: bool,
    state: bool,
    report: bool,
    metadata: bool,
}

impl Parts {
    fn from_filter(filter: Option<&str>) -> Parts {
        let filter = filter.unwrap_or("").trim();
        if filter.is_empty() {
            return Parts {
                config: true,
                state: true,
                report: true,
                metadata: true,
            };
        }
        let names: HashSet<&str> = filter.split(',').map(str::trim).collect();
        Parts {
            config: names.contains("config"),
            state: names.contains("state"),
            report: names.contains("report"),
            metadata: names.contains("metadata"),
        }
    }
}

fn view(registry: &Registry, entry: &Entry, parts: &Parts) -> ApiResult<Process> {
    let record = &entry.record;
    let metadata = if parts.metadata {
        let map = registry
            .metadata(&record.config.id)
            .map_err(ApiError::from)?;
        (!map.is_empty()).then(|| Value::Object(map.into_iter().collect()))
    } else {
        None
    };
    Ok(Process {
        id: record.config.id.clone(),
        kind: "ffmpeg".into(),
        reference: record.config.reference.clone(),
        created_at: record.created_at,
        updated_at: record.updated_at,
        config: parts.config.then(|| record.config.clone()),
        state: parts.state.then(|| {
            let mut state = entry.runner().state();
            state.order = record.order;
            state
        }),
        report: parts.report.then(|| entry.runner().report()),
        metadata,
    })
}

fn glob(pattern: &Option<String>) -> Result<Option<globset::GlobMatcher>, ()> {
    match pattern.as_deref().filter(|p| !p.is_empty()) {
        None => Ok(None),
        Some(p) => GlobBuilder::new(p)
            .literal_separator(false)
            .build()
            .map(|g| Some(g.compile_matcher()))
            .map_err(|_| ()),
    }
}

/// List processes.
#[utoipa::path(get, path = "/api/v3/process", tag = "process", params(ListQuery), security(("bearer" = [])),
    responses((status = 200, body = Vec<Process>), (status = 500, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<Vec<Process>>> {
    let parts = Parts::from_filter(query.filter.as_deref());
    let (Ok(idglob), Ok(refglob)) = (glob(&query.idpattern), glob(&query.refpattern)) else {
        return Ok(Json(Vec::new()));
    };
    let ids: HashSet<&str> = query
        .id
        .as_deref()
        .map(|s| {
            s.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let reference = query.reference.as_deref().filter(|r| !r.is_empty());
    let mut out = Vec::new();
    for entry in state.registry.list() {
        let config = &entry.record.config;
        if idglob.as_ref().is_some_and(|g| !g.is_match(&config.id))
            || refglob
                .as_ref()
                .is_some_and(|g| !g.is_match(&config.reference))
        {
            continue;
        }
        // datarhei: a reference filter overrides the id list.
        let keep = match reference {
            Some(r) => config.reference == r,
            None => ids.is_empty() || ids.contains(config.id.as_str()),
        };
        if keep {
            out.push(view(&state.registry, &entry, &parts)?);
        }
    }
    Ok(Json(out))
}

/// Create a process.
#[utoipa::path(post, path = "/api/v3/process", tag = "process", request_body = ProcessConfig, security(("bearer" = [])),
    responses((status = 200, body = ProcessConfig), (status = 400, body = ErrorBody), (status = 500, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    JsonBody(mut config): JsonBody<ProcessConfig>,
) -> ApiResult<Json<ProcessConfig>> {
    if config.kind != "ffmpeg" {
        return Err(ApiError::bad_request(
            "Unsupported process type",
            "Supported process types are: ffmpeg",
        ));
    }
    if config.input.is_empty() || config.output.is_empty() {
        return Err(ApiError::bad_request(
            "At least one input and one output need to be defined",
            "",
        ));
    }
    Registry::assign_io_ids(&mut config);
    Ok(Json(state.registry.create(config).await?))
}

/// Read one process.
#[utoipa::path(get, path = "/api/v3/process/{id}", tag = "process", params(("id" = String, Path), GetQuery), security(("bearer" = [])),
    responses((status = 200, body = Process), (status = 404, body = ErrorBody), (status = 500, body = ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<GetQuery>,
) -> ApiResult<Json<Process>> {
    let entry = entry(&state, &id)?;
    Ok(Json(view(
        &state.registry,
        &entry,
        &Parts::from_filter(query.filter.as_deref()),
    )?))
}

fn entry(state: &AppState, id: &str) -> ApiResult<std::sync::Arc<Entry>> {
    state
        .registry
        .get(id)
        .ok_or_else(|| ApiError::not_found("Unknown process ID", "unknown process"))
}

/// Replace a process; fields absent from the body keep their current values.
#[utoipa::path(put, path = "/api/v3/process/{id}", tag = "process", params(("id" = String, Path)), request_body = ProcessConfig,
    security(("bearer" = [])), responses((status = 200, body = ProcessConfig), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 500, body = ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> ApiResult<Json<ProcessConfig>> {
    let Some(current) = state.registry.get(&id) else {
        return Err(ApiError::not_found("Process not found", id));
    };
    let bytes: Bytes = json_bytes(request, &()).await?;
    let patch: Value = parse(&bytes)?;
    let mut merged = serde_json::to_value(&current.record.config)
        .map_err(|e| ApiError::internal("Encoding failed", &e))?;
    merge(&mut merged, patch);
    let mut config: ProcessConfig = serde_json::from_value(merged).map_err(|e| json_error(&e))?;
    if config.kind != "ffmpeg" {
        return Err(ApiError::bad_request(
            "Unsupported process type",
            "Supported process types are: ffmpeg",
        ));
    }
    Registry::assign_io_ids(&mut config);
    match state.registry.update(&id, config).await {
        Ok(config) => Ok(Json(config)),
        Err(RegistryError::NotFound) => Err(ApiError::not_found("Process not found", id)),
        Err(RegistryError::Store(e)) => Err(ApiError::internal("Store failed", &e)),
        Err(e) => Err(ApiError::bad_request(
            "Process can't be updated",
            e.to_string(),
        )),
    }
}

/// Shallow JSON merge: keys in `patch` replace those in `base`; `null` keeps the current value.
fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(base), Value::Object(patch)) => {
            for (key, value) in patch {
                if !value.is_null() {
                    base.insert(key, value);
                }
            }
        }
        (base, patch) => *base = patch,
    }
}

/// Stop and delete a process.
#[utoipa::path(delete, path = "/api/v3/process/{id}", tag = "process", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = String, content_type = "application/json", example = json!("OK")), (status = 404, body = ErrorBody), (status = 500, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<&'static str>> {
    match state.registry.delete(&id).await {
        Ok(()) => Ok(Json("OK")),
        Err(RegistryError::NotFound) => {
            Err(ApiError::not_found("Unknown process ID", "unknown process"))
        }
        Err(e) => Err(ApiError::internal("Process can't be deleted", &e)),
    }
}

/// Start, stop, restart or reload a process.
#[utoipa::path(put, path = "/api/v3/process/{id}/command", tag = "process", params(("id" = String, Path)), request_body = Command,
    security(("bearer" = [])), responses((status = 200, body = String, content_type = "application/json", example = json!("OK")), (status = 400, body = ErrorBody), (status = 500, body = ErrorBody)))]
pub async fn command(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Command>,
) -> ApiResult<Json<&'static str>> {
    let command = match body.command.as_str() {
        "start" => ProcessCommand::Start,
        "stop" => ProcessCommand::Stop,
        "restart" => ProcessCommand::Restart,
        "reload" => ProcessCommand::Reload,
        _ => {
            return Err(ApiError::bad_request(
                "Unknown command provided",
                "Known commands are: start, stop, reload, restart",
            ))
        }
    };
    match state.registry.command(&id, command).await {
        Ok(()) => Ok(Json("OK")),
        Err(RegistryError::Store(e)) => Err(ApiError::internal("Store failed", &e)),
        // datarhei answers 400 for every failure here, an unknown id included.
        Err(e) => Err(ApiError::bad_request("Command failed", e.to_string())),
    }
}

/// The definition of a process.
#[utoipa::path(get, path = "/api/v3/process/{id}/config", tag = "process", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = ProcessConfig), (status = 404, body = ErrorBody)))]
pub async fn config(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<ProcessConfig>> {
    Ok(Json(entry(&state, &id)?.record.config.clone()))
}

/// The state of a process.
#[utoipa::path(get, path = "/api/v3/process/{id}/state", tag = "process", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = ProcessState), (status = 404, body = ErrorBody)))]
pub async fn state(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<ProcessState>> {
    let entry = entry(&state, &id)?;
    let mut s = entry.runner().state();
    s.order = entry.record.order;
    Ok(Json(s))
}

/// The log report of a process.
#[utoipa::path(get, path = "/api/v3/process/{id}/report", tag = "process", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = ProcessReport), (status = 404, body = ErrorBody)))]
pub async fn report(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<ProcessReport>> {
    Ok(Json(entry(&state, &id)?.runner().report()))
}

/// Probe the inputs of a process.
#[utoipa::path(get, path = "/api/v3/process/{id}/probe", tag = "process", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Probe)))]
pub async fn probe(State(state): State<AppState>, Path(id): Path<String>) -> Json<Probe> {
    match state.registry.probe_command(&id) {
        Some((binary, argv)) => {
            let sandbox = state.registry.settings().sandbox.clone();
            Json(crate::process::probe::run(&sandbox, &binary, &argv).await)
        }
        None => Json(Probe {
            streams: Vec::new(),
            log: vec![format!("Unknown process ID ({id})")],
        }),
    }
}

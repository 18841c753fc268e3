//! `GET /api/v3/rtmp` and `GET /api/v3/srt`: the live publishers of the built-in servers, in
//! Core's shapes (http/api/rtmp.go, http/api/srt.go). 404 while a server is off, as in Core,
//! where the route is not registered then.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{ApiError, ApiResult, ErrorBody};
use super::AppState;

/// A name being published to the RTMP server.
#[derive(Debug, Serialize, ToSchema)]
pub struct RtmpChannel {
    /// The path, e.g. `/live/cam.stream` (without a token).
    pub name: String,
}

/// The figures streamcore keeps of an SRT connection (a subset of Core's libsrt statistics).
#[derive(Debug, Serialize, ToSchema)]
pub struct SrtStatistics {
    /// Milliseconds since the connection was accepted.
    pub timestamp_ms: u64,
    /// Payload bytes sent to the peer.
    pub sent_bytes: u64,
    /// Payload bytes received from the peer.
    pub recv_bytes: u64,
}

/// A log entry (streamcore keeps none; Core's libsrt log).
#[derive(Debug, Serialize, ToSchema)]
pub struct SrtLog {
    pub ts: i64,
    pub msg: Vec<String>,
}

/// One SRT connection.
#[derive(Debug, Serialize, ToSchema)]
pub struct SrtConnection {
    pub log: BTreeMap<String, Vec<SrtLog>>,
    pub stats: SrtStatistics,
}

/// Core's `SRTChannels`: publisher and subscriber connection ids per resource.
#[derive(Debug, Serialize, ToSchema)]
pub struct SrtChannels {
    pub publisher: BTreeMap<String, u64>,
    pub subscriber: BTreeMap<String, Vec<u64>>,
    pub connections: BTreeMap<String, SrtConnection>,
    pub log: BTreeMap<String, Vec<SrtLog>>,
}

/// List the names publishing to the RTMP server.
#[utoipa::path(get, path = "/api/v3/rtmp", tag = "rtmp", security(("bearer" = [])),
    responses((status = 200, body = Vec<RtmpChannel>),
        (status = 404, body = ErrorBody, description = "The RTMP server is off (rtmp.enable)")))]
pub async fn rtmp(State(state): State<AppState>) -> ApiResult<Json<Vec<RtmpChannel>>> {
    let server =
        state.ingest.rtmp.as_ref().ok_or_else(|| {
            ApiError::not_found("RTMP server is not enabled", "rtmp.enable is false")
        })?;
    Ok(Json(
        server
            .channels()
            .into_iter()
            .map(|name| RtmpChannel { name })
            .collect(),
    ))
}

/// List the SRT server's publishers and readers.
#[utoipa::path(get, path = "/api/v3/srt", tag = "srt", security(("bearer" = [])),
    responses((status = 200, body = SrtChannels),
        (status = 404, body = ErrorBody, description = "The SRT server is off (srt.enable)")))]
pub async fn srt(State(state): State<AppState>) -> ApiResult<Json<SrtChannels>> {
    let server =
        state.ingest.srt.as_ref().ok_or_else(|| {
            ApiError::not_found("SRT server is not enabled", "srt.enable is false")
        })?;
    let sessions = state.ingest.sessions();
    let now = chrono::Utc::now();
    let mut answer = SrtChannels {
        publisher: BTreeMap::new(),
        subscriber: BTreeMap::new(),
        connections: BTreeMap::new(),
        log: BTreeMap::new(),
    };
    let connection = |id: u64| {
        let created = sessions.iter().find(|s| s.id == id);
        let (recv_bytes, sent_bytes) = state.ingest.session_bytes(id);
        let stats = SrtStatistics {
            timestamp_ms: created.map_or(0, |s| {
                u64::try_from((now - s.created).num_milliseconds()).unwrap_or(0)
            }),
            sent_bytes,
            recv_bytes,
        };
        (
            id.to_string(),
            SrtConnection {
                log: BTreeMap::new(),
                stats,
            },
        )
    };
    let mut connections = Vec::new();
    for (name, publisher, readers) in server.channels() {
        connections.push(connection(publisher));
        connections.extend(readers.iter().map(|&r| connection(r)));
        answer.publisher.insert(name.clone(), publisher);
        if !readers.is_empty() {
            answer.subscriber.insert(name, readers);
        }
    }
    answer.connections.extend(connections);
    Ok(Json(answer))
}

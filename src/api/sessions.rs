//! `GET /api/v3/session[/active]`, and the `hls` collector's feeder: HTTP readers of playlists
//! and their segments on the public file mounts.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use serde::Deserialize;
use utoipa::IntoParams;

use super::error::{ApiError, ErrorBody};
use super::params::Query;
use super::AppState;
use crate::sessions::{Active, Collector, Sessions, Summary};

/// Which collectors to list.
#[derive(Debug, Default, Deserialize, IntoParams)]
pub struct CollectorsQuery {
    /// Comma list of collector names (`hls`, `webrtc`, `rtmp`, `srt`, …); empty lists all.
    pub collectors: Option<String>,
}

fn selected(sessions: &Sessions, query: &CollectorsQuery) -> Vec<Arc<Collector>> {
    let wanted: Vec<&str> = query
        .collectors
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    sessions
        .all()
        .into_iter()
        .filter(|c| wanted.is_empty() || wanted.contains(&c.name()))
        .collect()
}

/// Sessions and totals per collector.
#[utoipa::path(get, path = "/api/v3/session", tag = "session", params(CollectorsQuery),
    security(("bearer" = [])),
    responses((status = 200, body = BTreeMap<String, Summary>), (status = 401, body = ErrorBody)))]
pub async fn summary(
    State(state): State<AppState>,
    Query(query): Query<CollectorsQuery>,
) -> Json<BTreeMap<String, Summary>> {
    Json(
        selected(&state.sessions, &query)
            .iter()
            .map(|c| (c.name().to_string(), c.summary()))
            .collect(),
    )
}

/// The current sessions per collector.
#[utoipa::path(get, path = "/api/v3/session/active", tag = "session", params(CollectorsQuery),
    security(("bearer" = [])),
    responses((status = 200, body = BTreeMap<String, Vec<Active>>), (status = 401, body = ErrorBody)))]
pub async fn active(
    State(state): State<AppState>,
    Query(query): Query<CollectorsQuery>,
) -> Json<BTreeMap<String, Vec<Active>>> {
    Json(
        selected(&state.sessions, &query)
            .iter()
            .map(|c| (c.name().to_string(), c.active()))
            .collect(),
    )
}

/// What a file request is to the `hls` collector.
enum Kind {
    Playlist,
    Segment,
    Other,
}

fn kind(path: &str) -> Kind {
    let ext = path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("m3u8") => Kind::Playlist,
        Some("ts" | "m4s" | "mp4" | "m4a" | "m4v" | "aac" | "vtt") => Kind::Segment,
        _ => Kind::Other,
    }
}

/// A session is one client reading one playlist (Core's HLS collector).
fn session_id(ip: IpAddr, playlist: &str) -> String {
    use std::hash::{Hash, Hasher};
    // SipHash with fixed keys: the same client and playlist give the same id for this run.
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (ip, playlist).hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

fn dir_of(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(dir, _)| dir)
}

/// Serves a file request through `serve`, counting playlist and segment readers in the `hls`
/// collector: a new reader of a playlist is a new session (refused with 509 over
/// `sessions.max_sessions` / `max_bitrate_mbit`), and the bytes of segments in the playlist's
/// directory are counted to that client's session. Mounts other than the public one (memfs)
/// call this too.
pub async fn track<F, Fut>(sessions: &Sessions, request: Request, serve: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let method = request.method().clone();
    let Some(ip) = peer.filter(|ip| {
        (method == Method::GET || method == Method::HEAD) && sessions.collectable(*ip)
    }) else {
        return serve(request).await;
    };
    let path = request.uri().path().to_string();
    let collector = sessions.collector("hls");
    let id = match kind(&path) {
        Kind::Other => return serve(request).await,
        Kind::Playlist => {
            let id = session_id(ip, &path);
            let new = !collector.known(&id);
            if new {
                if let Some(why) = collector.refusal() {
                    let status =
                        StatusCode::from_u16(509).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
                    return ApiError::new(status, why, why).into_response();
                }
            }
            let agent = request
                .headers()
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let response = serve(request).await;
            if !response.status().is_success() {
                return response;
            }
            if new {
                let file = path.rsplit('/').next().unwrap_or_default();
                let reference = file.strip_suffix(".m3u8").unwrap_or(file);
                collector.register(&id, reference, &path, &ip.to_string(), false);
                collector.extra(&id, &agent);
            }
            return counted(response, collector, id);
        }
        Kind::Segment => collector.session_of(&ip.to_string(), dir_of(&path)),
    };
    let response = serve(request).await;
    match id {
        Some(id) if response.status().is_success() => counted(response, collector, id),
        _ => response,
    }
}

/// The response, with every body byte counted to the session as it is sent.
fn counted(response: Response, collector: Arc<Collector>, id: String) -> Response {
    collector.touch(&id);
    let (parts, body) = response.into_parts();
    let stream = body.into_data_stream().inspect(move |chunk| {
        if let Ok(bytes) = chunk {
            collector.egress(&id, bytes.len() as u64);
        }
    });
    Response::from_parts(parts, Body::from_stream(stream))
}

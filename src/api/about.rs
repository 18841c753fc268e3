//! `GET /api`: who we are, in the two shapes datarhei clients tell auth modes apart by.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;

/// The version datarhei clients check (restreamer-ui requires ^16.11.0).
pub const CORE_VERSION: &str = "16.16.0";

/// Version details.
#[derive(Debug, Serialize, ToSchema)]
pub struct Version {
    /// Compatible datarhei Core version.
    pub number: String,
    /// Source commit, if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository_commit: Option<String>,
    /// Source branch, if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository_branch: Option<String>,
    /// Build date, if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_date: Option<String>,
    /// `os/arch`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// The compiler.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compiler: Option<String>,
}

/// About. Without a valid token (auth on) only `app`, `auths` and a major version are shown, and
/// no `id`: restreamer-ui reads a present `id` as "no login needed".
#[derive(Debug, Serialize, ToSchema)]
pub struct About {
    /// Always `datarhei-core`, which clients require.
    pub app: String,
    /// `["localjwt"]` when auth is on, else empty.
    pub auths: Vec<String>,
    /// Instance name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Instance id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Start time, RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// Seconds since start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uptime_seconds: Option<u64>,
    /// Version.
    pub version: Version,
}

/// Server information.
#[utoipa::path(get, path = "/api", tag = "about", responses((status = 200, body = About)))]
pub async fn about(
    State(state): State<AppState>,
    client: super::client::Client,
    headers: HeaderMap,
) -> Json<About> {
    let auths: Vec<String> = if state.auth.is_some() {
        vec!["localjwt".into()]
    } else {
        Vec::new()
    };
    if !super::auth::has_access(&state, client, &headers) {
        return Json(About {
            app: "datarhei-core".into(),
            auths,
            name: None,
            id: None,
            created_at: None,
            uptime_seconds: None,
            version: Version {
                number: format!("{}.0.0", CORE_VERSION.split('.').next().unwrap_or("16")),
                repository_commit: None,
                repository_branch: None,
                build_date: None,
                arch: None,
                compiler: None,
            },
        });
    }
    let instance = &state.instance;
    let uptime = (chrono::Utc::now() - instance.started_at)
        .num_seconds()
        .max(0) as u64;
    Json(About {
        app: "datarhei-core".into(),
        auths,
        name: Some(instance.name.clone()),
        id: Some(instance.id.clone()),
        created_at: Some(
            instance
                .started_at
                // Sub-second digits (as Go's RFC3339Nano): a reload within the same second
                // still shows clients (restreamer-ui waits for it) a new instance.
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        ),
        uptime_seconds: Some(uptime),
        version: Version {
            number: CORE_VERSION.into(),
            repository_commit: Some(String::new()),
            repository_branch: Some(String::new()),
            build_date: Some(String::new()),
            arch: Some(format!(
                "{}/{}",
                std::env::consts::OS,
                std::env::consts::ARCH
            )),
            compiler: Some(format!("streamcore {}", env!("CARGO_PKG_VERSION"))),
        },
    })
}

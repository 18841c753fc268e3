//! `GET /api/v3/skills[/reload]`: what the ffmpeg binary can do.

use std::path::PathBuf;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use tokio::sync::RwLock;
use utoipa::ToSchema;

use super::error::{ApiError, ApiResult, ErrorBody};
use super::AppState;
use crate::media::transcode::TranscodeCapabilities;
use crate::skills::{detect, Skills};

/// The last detection result; detection runs ffmpeg seven times, so it is cached.
pub struct SkillsCache {
    binary: PathBuf,
    current: RwLock<Option<Result<Skills, String>>>,
}

impl SkillsCache {
    /// A cache for `binary`; nothing is detected until first asked.
    pub fn new(binary: PathBuf) -> SkillsCache {
        SkillsCache {
            binary,
            current: RwLock::new(None),
        }
    }

    /// Runs detection now and keeps the result.
    pub async fn reload(&self) -> Result<Skills, String> {
        let result = detect(&self.binary).await.map_err(|e| e.to_string());
        if let Err(e) = &result {
            tracing::warn!(error = %e, "ffmpeg skills detection failed");
        }
        *self.current.write().await = Some(result.clone());
        result
    }

    /// The cached result, detecting on first use.
    pub async fn get(&self) -> Result<Skills, String> {
        if let Some(result) = self.current.read().await.as_ref() {
            return result.clone();
        }
        self.reload().await
    }
}

/// The FFmpeg skills plus the media engine's section.
#[derive(Serialize, ToSchema)]
pub struct SkillsAnswer {
    #[serde(flatten)]
    skills: Skills,
    /// The media engine.
    webrtc: WebrtcSkills,
}

/// What the media engine can do.
#[derive(Serialize, ToSchema)]
pub struct WebrtcSkills {
    /// Whether it is on.
    enabled: bool,
    /// Which encoder and decoders transcoding picked (and which it passed over); `null` when it
    /// cannot transcode or is off.
    transcode: Option<TranscodeCapabilities>,
}

fn answer(state: &AppState, result: Result<Skills, String>) -> ApiResult<Json<SkillsAnswer>> {
    let skills = result.map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "FFmpeg is not available",
            e,
        )
    })?;
    Ok(Json(SkillsAnswer {
        skills,
        webrtc: WebrtcSkills {
            enabled: state.media.is_some(),
            transcode: state.media.as_ref().and_then(|m| m.capabilities()).cloned(),
        },
    }))
}

/// ffmpeg version, codecs, filters, formats, protocols and hardware acceleration.
#[utoipa::path(get, path = "/api/v3/skills", tag = "skills", security(("bearer" = [])),
    responses((status = 200, body = SkillsAnswer), (status = 503, body = ErrorBody)))]
pub async fn get(State(state): State<AppState>) -> ApiResult<Json<SkillsAnswer>> {
    answer(&state, state.skills.get().await)
}

/// Detect the skills again.
#[utoipa::path(get, path = "/api/v3/skills/reload", tag = "skills", security(("bearer" = [])),
    responses((status = 200, body = SkillsAnswer), (status = 503, body = ErrorBody)))]
pub async fn reload(State(state): State<AppState>) -> ApiResult<Json<SkillsAnswer>> {
    answer(&state, state.skills.reload().await)
}

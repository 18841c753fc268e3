//! Transcode settings: the server's defaults (`webrtc.transcode` in the configuration) and a
//! process's overrides of them (`webrtc.transcode` in its definition). The media layer builds its
//! encoder chains from these; the ranges checked here are the ones those encoders accept.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A transcode setting out of range; the message names the setting, its value and the range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("transcode setting {0}")]
pub struct InvalidSettings(pub String);

/// Transcode settings: global defaults (`webrtc.transcode`), overridable per process with
/// [`TranscodeOverrides`]. The defaults suit low-latency viewing: 720p30 at 2 Mbit/s, a key
/// frame every second, no B-frames (the descriptions never enable them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TranscodeSettings {
    /// Video bitrate in kbit/s.
    pub video_bitrate_kbps: u32,
    /// Key-frame distance in seconds (at `max_fps`); at most 10, keep it at 2 or less.
    pub gop_seconds: f64,
    /// Largest output width; wider sources are scaled down keeping their aspect ratio.
    pub max_width: u32,
    /// Largest output height.
    pub max_height: u32,
    /// Highest output frame rate; faster sources drop frames.
    pub max_fps: u32,
    /// Opus bitrate in kbit/s.
    pub audio_bitrate_kbps: u32,
}

impl Default for TranscodeSettings {
    fn default() -> Self {
        Self {
            video_bitrate_kbps: 2000,
            gop_seconds: 1.0,
            max_width: 1280,
            max_height: 720,
            max_fps: 30,
            audio_bitrate_kbps: 96,
        }
    }
}

impl TranscodeSettings {
    /// Checks the ranges the encoders accept (and that 4:2:0 needs even sizes).
    pub fn validate(&self) -> Result<(), InvalidSettings> {
        let bad = |what: String| Err(InvalidSettings(what));
        if !(100..=50_000).contains(&self.video_bitrate_kbps) {
            return bad(format!(
                "video_bitrate_kbps = {} must be within 100..=50000",
                self.video_bitrate_kbps
            ));
        }
        if !(self.gop_seconds > 0.0 && self.gop_seconds <= 10.0) {
            return bad(format!(
                "gop_seconds = {} must be above 0 and at most 10",
                self.gop_seconds
            ));
        }
        for (name, value, max) in [
            ("max_width", self.max_width, 7680),
            ("max_height", self.max_height, 4320),
        ] {
            if !(16..=max).contains(&value) || value % 2 != 0 {
                return bad(format!(
                    "{name} = {value} must be even and within 16..={max}"
                ));
            }
        }
        if !(1..=120).contains(&self.max_fps) {
            return bad(format!("max_fps = {} must be within 1..=120", self.max_fps));
        }
        if !(6..=510).contains(&self.audio_bitrate_kbps) {
            return bad(format!(
                "audio_bitrate_kbps = {} must be within 6..=510 (Opus)",
                self.audio_bitrate_kbps
            ));
        }
        Ok(())
    }

    /// Key-frame distance in frames: encoders count frames, not seconds. Sources slower than
    /// `max_fps` get a proportionally longer GOP in time.
    pub fn gop_frames(&self) -> u32 {
        ((self.gop_seconds * f64::from(self.max_fps)).round() as u32).max(1)
    }

    /// These settings with a process's overrides applied.
    pub fn with(&self, overrides: &TranscodeOverrides) -> TranscodeSettings {
        TranscodeSettings {
            video_bitrate_kbps: overrides
                .video_bitrate_kbps
                .unwrap_or(self.video_bitrate_kbps),
            gop_seconds: overrides.gop_seconds.unwrap_or(self.gop_seconds),
            max_width: overrides.max_width.unwrap_or(self.max_width),
            max_height: overrides.max_height.unwrap_or(self.max_height),
            max_fps: overrides.max_fps.unwrap_or(self.max_fps),
            audio_bitrate_kbps: overrides
                .audio_bitrate_kbps
                .unwrap_or(self.audio_bitrate_kbps),
        }
    }
}

/// A process's overrides of the global [`TranscodeSettings`]; unset fields keep the global value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(default)]
pub struct TranscodeOverrides {
    /// Video bitrate in kbit/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub video_bitrate_kbps: Option<u32>,
    /// Key-frame distance in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gop_seconds: Option<f64>,
    /// Largest output width.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_width: Option<u32>,
    /// Largest output height.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_height: Option<u32>,
    /// Highest output frame rate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_fps: Option<u32>,
    /// Opus bitrate in kbit/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audio_bitrate_kbps: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_defaults_validation_and_overrides() {
        let defaults = TranscodeSettings::default();
        assert_eq!(defaults.video_bitrate_kbps, 2000);
        assert_eq!(
            (defaults.max_width, defaults.max_height, defaults.max_fps),
            (1280, 720, 30)
        );
        assert_eq!(defaults.gop_frames(), 30);
        defaults.validate().unwrap();
        let odd = TranscodeSettings {
            max_width: 1279,
            ..defaults.clone()
        };
        assert_eq!(
            odd.validate().unwrap_err().to_string(),
            "transcode setting max_width = 1279 must be even and within 16..=7680"
        );
        let slow = TranscodeSettings {
            gop_seconds: 0.0,
            ..defaults.clone()
        };
        assert!(slow.validate().is_err());

        let overrides: TranscodeOverrides =
            serde_json::from_str(r#"{"video_bitrate_kbps": 800, "max_fps": 15}"#).unwrap();
        let merged = defaults.with(&overrides);
        assert_eq!((merged.video_bitrate_kbps, merged.max_fps), (800, 15));
        assert_eq!(merged.max_width, 1280);
        assert_eq!(merged.gop_frames(), 15);
        assert_eq!(
            serde_json::to_value(&overrides).unwrap(),
            serde_json::json!({"video_bitrate_kbps": 800, "max_fps": 15})
        );
        let partial: TranscodeSettings = serde_json::from_str(r#"{"max_fps": 25}"#).unwrap();
        assert_eq!(partial.max_fps, 25);
        assert_eq!(partial.video_bitrate_kbps, 2000);
        assert!(serde_json::from_str::<TranscodeSettings>(r#"{"bitrate": 1}"#).is_err());
    }
}

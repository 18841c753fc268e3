//! The API's view of a run: `Progress` (`ProcessState.progress`) and `Probe`, in Core's JSON
//! shape.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Progress of a running process (`ProcessState.progress`, contract §4.4).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(default)]
pub struct Progress {
    /// One entry per input stream.
    pub inputs: Vec<ProgressIo>,
    /// One entry per output stream.
    pub outputs: Vec<ProgressIo>,
    /// Frames of the first output video stream, as printed by FFmpeg.
    pub frame: u64,
    /// Stock FFmpeg prints no packet count, so this mirrors `frame`.
    pub packet: u64,
    /// 30 s moving average of frames per second.
    pub fps: f64,
    /// Quantizer of the first output video stream.
    pub q: f64,
    /// Total output size in kB.
    pub size_kb: u64,
    /// Output timestamp in seconds.
    pub time: f64,
    /// 30 s moving average of the output bitrate (bit/s ÷ 1024).
    pub bitrate_kbit: f64,
    /// Processing speed relative to realtime.
    pub speed: f64,
    /// Dropped frames.
    pub drop: u64,
    /// Duplicated frames.
    pub dup: u64,
}

/// Minimum, maximum and average frame rate of a stream (only the patched FFmpeg reports it).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(default)]
pub struct Framerate {
    /// Lowest observed frame rate.
    pub min: f64,
    /// Highest observed frame rate.
    pub max: f64,
    /// Average frame rate.
    pub avg: f64,
}

/// Progress of one input or output stream.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(default)]
pub struct ProgressIo {
    /// Id of the configured input/output at `index`.
    pub id: String,
    /// Address of the configured input/output at `index`.
    pub address: String,
    /// FFmpeg file index.
    pub index: u64,
    /// Stream index inside the file.
    pub stream: u64,
    /// Container format.
    pub format: String,
    /// "video", "audio", "subtitle", ...
    #[serde(rename = "type")]
    pub r#type: String,
    /// Codec name.
    pub codec: String,
    /// Encoder/decoder name, or "copy".
    pub coder: String,
    /// Frames processed.
    pub frame: u64,
    /// Key frames processed.
    pub keyframe: u64,
    /// Frame rate statistics.
    pub framerate: Framerate,
    /// 30 s moving average of frames per second.
    pub fps: f64,
    /// Packets processed.
    pub packet: u64,
    /// 30 s moving average of packets per second.
    pub pps: f64,
    /// Bytes processed ÷ 1024.
    pub size_kb: u64,
    /// 30 s moving average bitrate (bit/s ÷ 1024).
    pub bitrate_kbit: f64,
    /// Size of the codec extradata.
    pub extradata_size_bytes: u64,
    /// Video pixel format.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub pix_fmt: String,
    /// Video quantizer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub q: Option<f64>,
    /// Video width.
    #[serde(skip_serializing_if = "is_zero")]
    pub width: u64,
    /// Video height.
    #[serde(skip_serializing_if = "is_zero")]
    pub height: u64,
    /// Audio sample rate.
    #[serde(skip_serializing_if = "is_zero")]
    pub sampling_hz: u64,
    /// Audio channel layout.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub layout: String,
    /// Audio channel count.
    #[serde(skip_serializing_if = "is_zero")]
    pub channels: u64,
    /// Playout statistics of the patched FFmpeg; always null with stock FFmpeg.
    #[schema(value_type = Option<Object>)]
    pub avstream: Option<serde_json::Value>,
}

/// Result of probing the inputs of a process (contract §4.6).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(default)]
pub struct Probe {
    /// One entry per input stream.
    pub streams: Vec<ProbeIo>,
    /// Stderr lines that were not part of the input description.
    pub log: Vec<String>,
}

/// One probed input stream; every field is always serialized because clients require them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(default)]
pub struct ProbeIo {
    /// Input url as printed by FFmpeg.
    pub url: String,
    /// Container format.
    pub format: String,
    /// FFmpeg file index.
    pub index: u64,
    /// Stream index inside the file.
    pub stream: u64,
    /// Stream language, "und" when unknown.
    pub language: String,
    /// "video", "audio", "subtitle", ...
    #[serde(rename = "type")]
    pub r#type: String,
    /// Codec name.
    pub codec: String,
    /// Decoder name (the codec name with stock FFmpeg).
    pub coder: String,
    /// Stream bitrate in kbit/s, 0 if not printed.
    pub bitrate_kbps: f64,
    /// Duration of the input file in seconds, 0 if unknown (live).
    pub duration_sec: f64,
    /// Frame rate (`fps`, falling back to `tbr`).
    pub fps: f64,
    /// Video pixel format.
    pub pix_fmt: String,
    /// Video width.
    pub width: u64,
    /// Video height.
    pub height: u64,
    /// Audio sample rate.
    pub sampling_hz: u64,
    /// Audio channel layout.
    pub layout: String,
    /// Audio channel count.
    pub channels: u64,
    /// The bitrate of the whole input (kbit/s, 0 when unknown), from its `Duration:` line: it
    /// sizes the datagrams of the WebRTC leg. Not part of the contract.
    #[serde(skip)]
    pub input_bitrate_kbps: f64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::progress::samples::{feed, refs, TRANSCODE};
    use crate::process::progress::Parser;

    #[test]
    fn serialization_shape() {
        let mut p = Parser::new(refs(2, "in"), refs(1, "out"));
        feed(&mut p, TRANSCODE, 0.5);
        let j = serde_json::to_value(p.progress()).unwrap();
        let audio = &j["outputs"][1];
        assert_eq!(audio["type"], "audio");
        assert!(audio["avstream"].is_null() && audio.get("avstream").is_some());
        for k in ["pix_fmt", "q", "width", "height"] {
            assert!(audio.get(k).is_none(), "{k}");
        }
        assert_eq!(j["outputs"][0]["pix_fmt"], "yuv444p");
        assert!(j["outputs"][0].get("sampling_hz").is_none());
        assert_eq!(
            j["outputs"][0]["framerate"],
            serde_json::json!({"min": 0.0, "max": 0.0, "avg": 0.0})
        );

        let empty = serde_json::to_value(Progress::default()).unwrap();
        assert_eq!(
            (empty["inputs"].clone(), empty["outputs"].clone()),
            (serde_json::json!([]), serde_json::json!([]))
        );
        let probe = serde_json::to_value(Probe::default()).unwrap();
        assert_eq!(probe, serde_json::json!({"streams": [], "log": []}));
        let schema = serde_json::to_string(&<ProgressIo as utoipa::PartialSchema>::schema());
        assert!(schema.unwrap().contains("\"avstream\""));
        let io = serde_json::to_value(ProbeIo::default()).unwrap();
        assert_eq!(io.as_object().unwrap().len(), 17);
        assert!(io.get("type").is_some());
    }
}

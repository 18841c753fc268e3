//! The process definition as the datarhei v3 API reads and writes it (`ProcessConfig`), and the
//! persisted order. The API parses it, the store persists it, the registry runs it.
//!
//! Request bodies come from many clients: unknown fields are ignored and `null` on any field means
//! "use the default", because the Python client sends `"limits": null` and friends.

use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

/// Deserializes `null` as the type's default.
fn nullable<'de, D, T>(de: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(de)?.unwrap_or_default())
}

/// `null` asks for a generated id, like an absent one.
fn nullable_id<'de, D: Deserializer<'de>>(de: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(de)?.unwrap_or_else(short_id))
}

/// `null` means the only process type there is.
fn nullable_ffmpeg<'de, D: Deserializer<'de>>(de: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(de)?.unwrap_or_else(ffmpeg))
}

/// Like [`nullable`], for fields whose default is `true`.
fn nullable_true<'de, D: Deserializer<'de>>(de: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(de)?.unwrap_or(true))
}

fn yes() -> bool {
    true
}

fn ffmpeg() -> String {
    "ffmpeg".into()
}

/// A process definition (datarhei `ProcessConfig`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProcessConfig {
    /// Unique id; generated when absent or `null`. An explicit empty id stays empty and is
    /// refused by validation, so a client never gets an id it did not ask for by mistake.
    #[serde(default = "short_id", deserialize_with = "nullable_id")]
    pub id: String,
    /// Always `ffmpeg`.
    #[serde(
        rename = "type",
        default = "ffmpeg",
        deserialize_with = "nullable_ffmpeg"
    )]
    pub kind: String,
    /// Free text used for filtering and the `{reference}` placeholder.
    #[serde(default, deserialize_with = "nullable")]
    pub reference: String,
    /// Inputs, in ffmpeg file order.
    #[serde(default, deserialize_with = "nullable")]
    pub input: Vec<ProcessIo>,
    /// Outputs, in ffmpeg file order.
    #[serde(default, deserialize_with = "nullable")]
    pub output: Vec<ProcessIo>,
    /// Global ffmpeg options, placed before the inputs.
    #[serde(default, deserialize_with = "nullable")]
    pub options: Vec<String>,
    /// Restart after an exit while the order is `start`.
    #[serde(default, deserialize_with = "nullable")]
    pub reconnect: bool,
    /// Seconds to wait before such a restart.
    #[serde(default, deserialize_with = "nullable")]
    pub reconnect_delay_seconds: u64,
    /// Start right after creation.
    #[serde(default = "yes", deserialize_with = "nullable_true")]
    pub autostart: bool,
    /// Restart when no frame progress was seen for this many seconds; 0 is off.
    #[serde(default, deserialize_with = "nullable")]
    pub stale_timeout_seconds: u64,
    /// CPU and memory limits.
    #[serde(default, deserialize_with = "nullable")]
    pub limits: Limits,
    /// WebRTC egress settings.
    #[serde(default, deserialize_with = "nullable")]
    pub webrtc: WebRtcSettings,
}

impl Default for ProcessConfig {
    fn default() -> Self {
        Self {
            id: String::new(),
            kind: ffmpeg(),
            reference: String::new(),
            input: Vec::new(),
            output: Vec::new(),
            options: Vec::new(),
            reconnect: false,
            reconnect_delay_seconds: 0,
            autostart: true,
            stale_timeout_seconds: 0,
            limits: Limits::default(),
            webrtc: WebRtcSettings::default(),
        }
    }
}

/// One input or output (datarhei `ProcessConfigIO`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProcessIo {
    /// Id, unique among the inputs (resp. outputs); generated when empty.
    #[serde(default, deserialize_with = "nullable")]
    pub id: String,
    /// Address handed to ffmpeg (`-i address` for inputs).
    #[serde(default, deserialize_with = "nullable")]
    pub address: String,
    /// ffmpeg options placed before the address.
    #[serde(default, deserialize_with = "nullable")]
    pub options: Vec<String>,
    /// Cleanup rules (outputs only).
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub cleanup: Vec<Cleanup>,
}

/// A cleanup rule for files an output writes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Cleanup {
    /// `<fs>:<glob>`.
    #[serde(default, deserialize_with = "nullable")]
    pub pattern: String,
    /// Keep at most this many files; 0 is unlimited.
    #[serde(default, deserialize_with = "nullable")]
    pub max_files: u64,
    /// Delete files older than this; 0 is never.
    #[serde(default, deserialize_with = "nullable")]
    pub max_file_age_seconds: u64,
    /// Delete every match when the process is deleted.
    #[serde(default, deserialize_with = "nullable")]
    pub purge_on_delete: bool,
}

/// Resource limits; a process above one for `waitfor_seconds` is stopped (and reconnects if set).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Limits {
    /// CPU usage in percent of the whole machine; 0 is off.
    #[serde(default, deserialize_with = "nullable")]
    pub cpu_usage: f64,
    /// Resident memory in MiB; 0 is off.
    #[serde(default, deserialize_with = "nullable")]
    pub memory_mbytes: u64,
    /// How long a limit may be exceeded before the process is stopped.
    #[serde(default, deserialize_with = "nullable")]
    pub waitfor_seconds: u64,
}

/// Per-process WebRTC settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WebRtcSettings {
    /// Serve this process over WHEP: two RTP legs are appended to the FFmpeg command.
    #[serde(default, deserialize_with = "nullable")]
    pub enabled: bool,
    /// Always re-encode to browser-safe H.264 + Opus.
    #[serde(default, deserialize_with = "nullable")]
    pub force_transcode: bool,
    /// FFmpeg `-map` of the video leg; empty picks FFmpeg's best video stream across the inputs,
    /// `none` leaves the leg out (audio-only sources).
    #[serde(default, deserialize_with = "nullable")]
    pub video_map: String,
    /// FFmpeg `-map` of the audio leg; empty picks the best audio stream, `none` leaves it out.
    #[serde(default, deserialize_with = "nullable")]
    pub audio_map: String,
    /// Who may watch: `public` (anyone) or `token` (an admin or viewer token).
    #[serde(default, deserialize_with = "nullable")]
    pub access: Access,
    /// Transcode settings that differ from the server's `webrtc.transcode` defaults.
    #[serde(default, deserialize_with = "nullable")]
    pub transcode: crate::model::transcode::TranscodeOverrides,
}

/// Viewer access to a WebRTC stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Anyone may watch.
    #[default]
    Public,
    /// A bearer token is required.
    Token,
}

/// The user's intent for a process (persisted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// The process should run.
    Start,
    /// The process should not run.
    Stop,
}

impl Order {
    /// The wire and database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Order::Start => "start",
            Order::Stop => "stop",
        }
    }

    /// Parses the database spelling; anything unknown is `stop`, the safe choice.
    pub fn parse(s: &str) -> Order {
        if s == "start" {
            Order::Start
        } else {
            Order::Stop
        }
    }
}

/// A short, URL-safe random id in the style of datarhei's shortuuid (22 base57 characters).
pub fn short_id() -> String {
    const ALPHABET: &[u8] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    let mut n = uuid::Uuid::new_v4().as_u128();
    let mut out = Vec::with_capacity(22);
    for _ in 0..22 {
        out.push(ALPHABET[(n % 57) as usize]);
        n /= 57;
    }
    String::from_utf8(out).expect("ascii")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nulls_and_unknown_fields_are_accepted() {
        let body = r#"{"id":"a","reference":null,"input":[{"id":null,"address":"x","options":null,"cleanup":null}],
            "output":[{"address":"y"}],"options":null,"limits":null,"autostart":null,"scheduler":null,
            "webrtc":null,"binary":null,"metadata":{"k":1}}"#;
        let c: ProcessConfig = serde_json::from_str(body).unwrap();
        assert_eq!(c.id, "a");
        assert_eq!(c.kind, "ffmpeg");
        assert!(c.autostart);
        assert_eq!(c.input[0].options, Vec::<String>::new());
        assert_eq!(c.limits, Limits::default());
    }

    #[test]
    fn responses_never_carry_null_lists() {
        let v = serde_json::to_value(ProcessConfig::default()).unwrap();
        assert_eq!(v["options"], serde_json::json!([]));
        assert!(v["limits"].is_object());
        assert_eq!(v["type"], "ffmpeg");
    }

    #[test]
    fn short_ids_are_22_chars_and_distinct() {
        let a = short_id();
        assert_eq!(a.len(), 22);
        assert_ne!(a, short_id());
    }
}

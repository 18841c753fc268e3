//! The demo process created on the first start, so a fresh install has something to watch: a
//! looping test pattern with a tone, served over WebRTC at `/player/demo` and as HLS at
//! `/demo.m3u8`.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::model::process::{Order, ProcessConfig};
use crate::store::{ProcessRecord, Store, StoreError};

/// System metadata key recording that the demo was created once (deleting it must stick).
const SEEDED: &str = "streamcore:demo-seeded";

/// The clip the demo loops, inside the public directory.
const CLIP: &str = "demo-source.mkv";

/// Creates process `demo` once per database.
pub fn seed(store: &Store) -> Result<(), StoreError> {
    if store.metadata()?.contains_key(SEEDED) {
        return Ok(());
    }
    // The clip is already browser-safe (H.264 constrained baseline without B-frames, Opus), so
    // the process only copies: HLS for any player, and the WebRTC legs.
    let config: ProcessConfig = serde_json::from_value(json!({
        "id": "demo",
        "reference": "demo",
        "options": ["-loglevel", "level+info", "-nostdin"],
        "input": [{"id": "clip", "address": format!("{{diskfs}}/{CLIP}"), "options": ["-re", "-stream_loop", "-1"]}],
        "output": [{
            "id": "hls",
            "address": "{diskfs}/demo.m3u8",
            "options": ["-c", "copy", "-f", "hls", "-hls_time", "2", "-hls_list_size", "6",
                        "-hls_segment_filename", "{diskfs}/demo_%04d.ts",
                        "-hls_flags", "delete_segments+independent_segments", "-y"]
        }],
        "reconnect": true,
        "reconnect_delay_seconds": 2,
        "stale_timeout_seconds": 30,
        "autostart": true,
        "webrtc": {"enabled": true}
    }))?;
    let now = chrono::Utc::now().timestamp();
    match store.insert_process(&ProcessRecord {
        config,
        order: Order::Start,
        created_at: now,
        updated_at: now,
    }) {
        Ok(()) | Err(StoreError::Duplicate) => {}
        Err(e) => return Err(e),
    }
    store.set_metadata(SEEDED, Some(&json!(true)))
}

/// Encodes the demo clip (10 s, 1280x720 30 fps, 2 s GOP, H.264 + Opus) if it is missing. The
/// demo process retries until the file is there, so this may run in the background.
pub async fn ensure_clip(binary: PathBuf, public: &Path) {
    let clip = public.join(CLIP);
    if clip.exists() {
        return;
    }
    let partial = public.join(format!(".{CLIP}.part"));
    tracing::info!(file = %clip.display(), "encoding the demo clip");
    let status = tokio::process::Command::new(binary)
        .args(["-hide_banner", "-loglevel", "error", "-nostdin"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30"])
        .args([
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000:beep_factor=4",
        ])
        .args([
            "-t",
            "10",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-profile:v",
            "baseline",
        ])
        .args(["-pix_fmt", "yuv420p", "-b:v", "2M", "-g", "60", "-bf", "0"])
        .args(["-c:a", "libopus", "-b:a", "96k", "-f", "matroska", "-y"])
        .arg(&partial)
        .status()
        .await;
    match status {
        Ok(s) if s.success() => {
            if let Err(e) = std::fs::rename(&partial, &clip) {
                tracing::warn!(error = %e, "cannot move the demo clip into place");
            }
        }
        Ok(s) => tracing::warn!(status = %s, "encoding the demo clip failed"),
        Err(e) => tracing::warn!(error = %e, "cannot run ffmpeg for the demo clip"),
    }
}

//! The demo process created on the first start, so a fresh install has something to watch.

use serde_json::json;

use crate::process::config::{Order, ProcessConfig};
use crate::store::{ProcessRecord, Store, StoreError};

/// System metadata key recording that the demo was created once (deleting it must stick).
const SEEDED: &str = "streamcore:demo-seeded";

/// Creates process `demo` (a test pattern with a tone, as HLS at `/demo.m3u8`) once per database.
pub fn seed(store: &Store) -> Result<(), StoreError> {
    if store.metadata()?.contains_key(SEEDED) {
        return Ok(());
    }
    let config: ProcessConfig = serde_json::from_value(json!({
        "id": "demo",
        "reference": "demo",
        "options": ["-loglevel", "level+info", "-nostdin"],
        "input": [
            {"id": "video", "address": "testsrc2=size=1280x720:rate=30", "options": ["-re", "-f", "lavfi"]},
            {"id": "audio", "address": "sine=frequency=440:sample_rate=48000", "options": ["-re", "-f", "lavfi"]}
        ],
        "output": [{
            "id": "hls",
            "address": "{diskfs}/demo.m3u8",
            "options": ["-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-pix_fmt", "yuv420p",
                        "-g", "60", "-b:v", "2M", "-c:a", "aac", "-b:a", "128k",
                        "-f", "hls", "-hls_time", "2", "-hls_list_size", "6",
                        "-hls_segment_filename", "{diskfs}/demo_%04d.ts",
                        "-hls_flags", "delete_segments+independent_segments", "-y"]
        }],
        "reconnect": true,
        "reconnect_delay_seconds": 5,
        "stale_timeout_seconds": 30,
        "autostart": true
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

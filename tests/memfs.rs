//! An HLS channel as restreamer-ui builds it: FFmpeg writes HLS with `-method PUT` through a
//! tee to `{memfs}` (the segment name inside the tee options uses `{memfs^:}`), a second FFmpeg
//! reads it back from `{memfs}`, and an HTTP client reads it from `/memfs/...`. The cleanup
//! rules keep `max_files` segments while it runs and purge everything when it is deleted; the
//! progress reports a bitrate although FFmpeg prints `size=N/A` for a tee.
//!
//! Run with `cargo test --test memfs`.

mod common;

use std::time::{Duration, Instant};

use common::{ServerLogOnPanic, TestServer};
use reqwest::{header, Method, StatusCode};
use serde_json::{json, Value};

const MEM_PASS: &str = "mem-secret";

fn channel() -> Value {
    json!({
        "id": "ch",
        "options": ["-loglevel", "level+info", "-err_detect", "ignore_err"],
        "input": [{"id": "in", "address": "testsrc=size=320x240:rate=25", "options": ["-re", "-f", "lavfi"]}],
        "output": [{
            "id": "hls",
            "address": "[f=hls:hls_time=1:hls_list_size=3:method=PUT:hls_segment_filename={memfs^:}/{processid}_{outputid}_%04d.ts]{memfs}/{processid}_{outputid}.m3u8",
            "options": ["-map", "0:v", "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p", "-f", "tee"],
            "cleanup": [
                {"pattern": "memfs:/{processid}_{outputid}_*.ts", "max_files": 3, "max_file_age_seconds": 0, "purge_on_delete": false},
                {"pattern": "mem:/{processid}**", "max_files": 0, "max_file_age_seconds": 0, "purge_on_delete": true}
            ]
        }],
        "autostart": true
    })
}

/// Segment names in the memory file system, oldest number first.
async fn segments(server: &TestServer) -> Vec<String> {
    let (status, listed) = server
        .get("/api/v3/fs/mem?glob=/ch_hls_*.ts&sort=name")
        .await;
    assert_eq!(status, StatusCode::OK);
    listed
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_string())
        .collect()
}

async fn until<T>(what: &str, timeout: Duration, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn hls_channel_in_memfs_is_written_read_cleaned_and_purged() {
    // The password is chosen by the server: `{memfs}` must carry it to FFmpeg.
    let server = TestServer::start().await;
    let _log = ServerLogOnPanic(&server);
    let auth = ("admin", MEM_PASS);
    // A file of someone else, which the purge must leave alone.
    let res = server
        .http
        .put(server.url("/memfs/keep.txt"))
        .basic_auth(auth.0, Some(auth.1))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::UNAUTHORIZED,
        "the password is random"
    );
    let res = server
        .request(Method::PUT, "/api/v3/fs/mem/keep.txt")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);

    server.create(channel()).await;
    let playlist = until("the playlist", Duration::from_secs(30), async || {
        let res = server
            .http
            .get(server.url("/memfs/ch_hls.m3u8"))
            .send()
            .await
            .ok()?;
        if res.status() != StatusCode::OK {
            return None;
        }
        assert_eq!(
            res.headers()[header::CONTENT_TYPE],
            "application/vnd.apple.mpegurl"
        );
        let text = res.text().await.ok()?;
        text.contains(".ts").then_some(text)
    })
    .await;
    assert!(playlist.starts_with("#EXTM3U"), "{playlist}");
    let segment = playlist
        .lines()
        .find(|l| l.ends_with(".ts"))
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    assert!(segment.starts_with("ch_hls_"), "{playlist}");
    let res = server
        .http
        .get(server.url(&format!("/memfs/{segment}")))
        .send()
        .await
        .unwrap();
    let (_, listed) = server.get("/api/v3/fs/mem").await;
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "{segment} of {playlist} in {listed}"
    );
    assert_eq!(res.headers()[header::CONTENT_TYPE], "video/mp2t");
    let ts = res.bytes().await.unwrap();
    assert!(ts.len() > 1000 && ts.len() % 188 == 0 && ts[0] == 0x47);

    // A second process reads the channel back from `{memfs}`.
    server
        .create(json!({
            "id": "reader",
            "input": [{"id": "in", "address": "{memfs}/ch_hls.m3u8", "options": []}],
            "output": [{"id": "out", "address": "-", "options": ["-f", "null"]}],
            "autostart": true
        }))
        .await;
    server
        .wait_state("reader", Duration::from_secs(30), |s| {
            s["progress"]["frame"].as_u64().unwrap_or(0) > 50
        })
        .await;

    // The tee's stats line says `size=N/A`; the bytes FFmpeg put into memfs give the bitrate.
    let state = server
        .wait_state("ch", Duration::from_secs(20), |s| {
            s["progress"]["bitrate_kbit"].as_f64().unwrap_or(0.0) > 0.0
        })
        .await;
    let progress = &state["progress"];
    assert!(progress["size_kb"].as_u64().unwrap() > 0, "{progress}");
    assert!(progress["fps"].as_f64().unwrap() > 0.0, "{progress}");
    let output = &progress["outputs"][0];
    assert!(output["bitrate_kbit"].as_f64().unwrap() > 0.0, "{progress}");
    assert!(output["size_kb"].as_u64().unwrap() > 0, "{progress}");

    // max_files: 3 while it runs (a fourth may have arrived since the last cleanup tick).
    let names = until("six segments", Duration::from_secs(30), async || {
        let names = segments(&server).await;
        names
            .iter()
            .any(|n| n.ends_with("_0006.ts"))
            .then_some(names)
    })
    .await;
    assert!(names.len() <= 4, "{names:?}");
    assert!(!names.iter().any(|n| n.ends_with("_0000.ts")), "{names:?}");
    // Once FFmpeg stops writing, exactly the newest three stay.
    server.command("reader", "stop").await;
    server.command("ch", "stop").await;
    let names = until("three segments", Duration::from_secs(10), async || {
        let names = segments(&server).await;
        (names.len() == 3).then_some(names)
    })
    .await;
    let newest = segments(&server).await;
    assert_eq!(names, newest);

    // Deleting the process purges every file of its purge_on_delete rule, and nothing else.
    let (status, _) = server
        .call(Method::DELETE, "/api/v3/process/ch", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, listed) = server.get("/api/v3/fs/mem").await;
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["/keep.txt"]);
}

#[tokio::test]
async fn progress_has_a_bitrate_for_a_file_output() {
    let server = TestServer::start().await;
    let _log = ServerLogOnPanic(&server);
    let mut config = common::testsrc_process("enc");
    config["output"] = json!([{
        "id": "out",
        "address": "{diskfs}/enc.ts",
        "options": ["-c:v", "libx264", "-preset", "ultrafast", "-f", "mpegts", "-y"]
    }]);
    server.create(config).await;
    let state = server
        .wait_state("enc", Duration::from_secs(20), |s| {
            s["progress"]["bitrate_kbit"].as_f64().unwrap_or(0.0) > 0.0
        })
        .await;
    assert!(state["progress"]["size_kb"].as_u64().unwrap() > 0);
    assert!(
        state["progress"]["outputs"][0]["bitrate_kbit"]
            .as_f64()
            .unwrap()
            > 0.0
    );
}

//! Process supervision end to end: real ffmpeg children driven through the real HTTP API.

mod common;

use std::time::Duration;

use common::{testsrc_process, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

fn history_len(report: &Value) -> usize {
    report["history"].as_array().map_or(0, Vec::len)
}

fn log_text(report: &Value) -> String {
    let mut all = Vec::new();
    for run in std::iter::once(report).chain(report["history"].as_array().into_iter().flatten()) {
        for line in run["log"].as_array().into_iter().flatten() {
            all.push(line[1].as_str().unwrap_or_default().to_string());
        }
    }
    all.join("\n")
}

fn kill9(pid: i32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

#[tokio::test]
async fn login_create_run_stop_restart_delete() {
    let mut server = TestServer::start_with_auth(&[]).await;
    server.login().await;
    let created = server.create(testsrc_process("life")).await;
    assert_eq!(created["id"], "life");
    assert_eq!(created["input"][0]["id"], "in");

    // Running with real progress: fps is averaged from frame deltas, so it needs a few stats lines.
    let state = server
        .wait_state("life", Duration::from_secs(20), |s| {
            s["exec"] == "running" && s["progress"]["fps"].as_f64().unwrap_or(0.0) > 0.0
        })
        .await;
    assert_eq!(state["order"], "start");
    assert!(state["progress"]["frame"].as_u64().unwrap() > 0);
    assert_eq!(state["progress"]["outputs"][0]["id"], "out");
    assert_eq!(state["progress"]["inputs"][0]["width"], 320);
    assert_eq!(state["command"][0], "-loglevel");
    assert_eq!(server.ffmpeg_children().len(), 1);

    // Stop waits for the exit; SIGINT makes ffmpeg exit with 255, which counts as finished.
    let (status, body) = server.command("life", "stop").await;
    assert_eq!((status, body), (StatusCode::OK, json!("OK")));
    let state = server.state("life").await;
    assert_eq!(state["exec"], "finished");
    assert_eq!(state["order"], "stop");
    assert!(server.ffmpeg_children().is_empty());

    // Start again, then restart: the run moves into the history and a new child runs.
    assert_eq!(server.command("life", "start").await.0, StatusCode::OK);
    // Wait for output: a run that printed nothing yet leaves no history entry (as in Core), and
    // on a slow machine a restart can come that early.
    server
        .wait_state("life", Duration::from_secs(20), |s| {
            s["exec"] == "running" && s["progress"]["frame"].as_u64().unwrap_or(0) > 0
        })
        .await;
    let before = server.get("/api/v3/process/life/report").await.1;
    let old_pid = server.ffmpeg_children();
    assert_eq!(server.command("life", "restart").await.0, StatusCode::OK);
    // The old run is in the history once the new one started. (Child pids alone could mislead:
    // the server also runs short-lived FFmpeg children, e.g. to detect its skills.)
    let mut after = before.clone();
    for _ in 0..200 {
        after = server.get("/api/v3/process/life/report").await.1;
        if history_len(&after) > history_len(&before) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(history_len(&after), history_len(&before) + 1);
    server
        .wait_state("life", Duration::from_secs(20), |s| s["exec"] == "running")
        .await;
    let new_pid = server.ffmpeg_children();
    assert!(
        !new_pid.is_empty() && new_pid.iter().all(|p| !old_pid.contains(p)),
        "restart must spawn a new ffmpeg: {old_pid:?} → {new_pid:?}"
    );

    let (status, body) = server
        .call(Method::DELETE, "/api/v3/process/life", None)
        .await;
    assert_eq!((status, body), (StatusCode::OK, json!("OK")));
    assert_eq!(
        server.get("/api/v3/process/life").await.0,
        StatusCode::NOT_FOUND
    );
    assert!(server.ffmpeg_children().is_empty());
}

#[tokio::test]
async fn killed_child_reconnects_only_when_asked() {
    let server = TestServer::start().await;
    let mut with = testsrc_process("with");
    with["reconnect"] = json!(true);
    with["reconnect_delay_seconds"] = json!(1);
    server.create(with).await;
    server.create(testsrc_process("without")).await;
    for id in ["with", "without"] {
        server
            .wait_state(id, Duration::from_secs(20), |s| s["exec"] == "running")
            .await;
    }
    let children = server.ffmpeg_children();
    assert_eq!(children.len(), 2);
    for pid in &children {
        kill9(*pid);
    }
    // Both are seen as killed; the one with reconnect counts down and comes back with a new child.
    let killed = server
        .wait_state("with", Duration::from_secs(10), |s| s["exec"] == "killed")
        .await;
    assert!(killed["reconnect_seconds"].as_i64().unwrap() >= 0);
    let state = server
        .wait_state("without", Duration::from_secs(10), |s| {
            s["exec"] == "killed"
        })
        .await;
    assert_eq!(state["reconnect_seconds"], -1);
    server
        .wait_state("with", Duration::from_secs(10), |s| s["exec"] == "running")
        .await;
    let now = server.ffmpeg_children();
    assert_eq!(now.len(), 1);
    assert!(!children.contains(&now[0]));
    // Nothing brings the other back: it stays killed with order start. There is no event for
    // "nothing happened", so give it several reconnect periods' worth of time.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let state = server.state("without").await;
    assert_eq!(state["exec"], "killed");
    assert_eq!(state["order"], "start");
    assert_eq!(server.ffmpeg_children().len(), 1);
}

#[tokio::test]
async fn stale_process_is_restarted() {
    let server = TestServer::start().await;
    // A UDP input nobody sends to: ffmpeg runs but never makes frame progress.
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    server
        .create(json!({
            "id": "stale",
            "input": [{"address": format!("udp://127.0.0.1:{port}"), "options": ["-f", "mpegts"]}],
            "output": [{"address": "-", "options": ["-f", "null"]}],
            "reconnect": true,
            "reconnect_delay_seconds": 0,
            "stale_timeout_seconds": 2
        }))
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let report = server.get("/api/v3/process/stale/report").await.1;
        if history_len(&report) >= 1 && log_text(&report).contains("stale") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no stale restart: {report:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let state = server.state("stale").await;
    assert_eq!(state["order"], "start");
}

#[tokio::test]
async fn exceeded_memory_limit_restarts() {
    let server = TestServer::start().await;
    let mut config = testsrc_process("limited");
    config["limits"] = json!({"memory_mbytes": 1, "waitfor_seconds": 1});
    config["reconnect"] = json!(true);
    config["reconnect_delay_seconds"] = json!(0);
    server.create(config).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let report = server.get("/api/v3/process/limited/report").await.1;
        if history_len(&report) >= 1 && log_text(&report).contains("limits are exceeded") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "limit never tripped: {report:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let state = server
        .wait_state("limited", Duration::from_secs(10), |s| {
            s["exec"] == "running"
        })
        .await;
    assert_eq!(state["order"], "start");
}

#[tokio::test]
async fn everything_survives_sigkill_of_the_server() {
    let server = TestServer::start().await;
    server.create(testsrc_process("runs")).await;
    let mut idle = testsrc_process("idle");
    idle["autostart"] = json!(false);
    idle["reference"] = json!("ref-1");
    idle["webrtc"] = json!({"enabled": true, "force_transcode": true, "access": "token"});
    server.create(idle).await;
    server.create(testsrc_process("stopped")).await;
    server
        .wait_state("stopped", Duration::from_secs(20), |s| {
            s["exec"] == "running"
        })
        .await;
    assert_eq!(server.command("stopped", "stop").await.0, StatusCode::OK);
    let (status, _) = server
        .call(
            Method::PUT,
            "/api/v3/process/idle/metadata/ui",
            Some(json!({"a": [1, 2]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        server
            .call(Method::PUT, "/api/v3/metadata/sys", Some(json!("v")))
            .await
            .0,
        StatusCode::OK
    );
    let configs_before: Vec<Value> = server
        .get("/api/v3/process?filter=config")
        .await
        .1
        .as_array()
        .unwrap()
        .clone();
    server
        .wait_state("runs", Duration::from_secs(20), |s| s["exec"] == "running")
        .await;
    let old_children = server.ffmpeg_children();

    let server = server.restart_after_kill().await;
    // The kernel killed the old ffmpeg with the server (PR_SET_PDEATHSIG): no orphan remains.
    for pid in old_children {
        let gone = (0..100).any(|_| {
            let alive = std::path::Path::new(&format!("/proc/{pid}")).exists()
                && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .unwrap_or_default()
                    .contains(") Z ");
            if alive {
                std::thread::sleep(Duration::from_millis(50));
            }
            !alive
        });
        assert!(gone, "orphaned ffmpeg {pid}");
    }
    let configs_after: Vec<Value> = server
        .get("/api/v3/process?filter=config")
        .await
        .1
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(configs_before, configs_after);
    assert_eq!(
        server.get("/api/v3/process/idle/metadata/ui").await.1,
        json!({"a": [1, 2]})
    );
    assert_eq!(server.get("/api/v3/metadata/sys").await.1, json!("v"));
    server
        .wait_state("runs", Duration::from_secs(20), |s| s["exec"] == "running")
        .await;
    for id in ["idle", "stopped"] {
        let state = server.state(id).await;
        assert_eq!(state["order"], "stop", "{id}");
        assert_eq!(state["exec"], "finished", "{id}");
    }
    let webrtc = server.get("/api/v3/process/idle/config").await.1["webrtc"].clone();
    assert_eq!(webrtc["enabled"], true);
    assert_eq!(webrtc["force_transcode"], true);
    assert_eq!(webrtc["access"], "token");
}

#[tokio::test]
async fn update_renames_and_keeps_order_metadata_and_history() {
    let server = TestServer::start().await;
    server.create(testsrc_process("old")).await;
    // Progress means the run has logged its prelude, so it has something to hand to the history.
    server
        .wait_state("old", Duration::from_secs(20), |s| {
            s["progress"]["frame"].as_u64() > Some(0)
        })
        .await;
    server
        .call(
            Method::PUT,
            "/api/v3/process/old/metadata/k",
            Some(json!(1)),
        )
        .await;
    // Partial body: only the id and reference change; inputs and outputs stay.
    let (status, body) = server
        .call(
            Method::PUT,
            "/api/v3/process/old",
            Some(json!({"id": "new", "reference": "r"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["input"][0]["address"], "testsrc=size=320x240:rate=25");
    assert_eq!(
        server.get("/api/v3/process/old").await.0,
        StatusCode::NOT_FOUND
    );
    let state = server
        .wait_state("new", Duration::from_secs(20), |s| s["exec"] == "running")
        .await;
    assert_eq!(state["order"], "start");
    assert_eq!(
        server.get("/api/v3/process/new/metadata/k").await.1,
        json!(1)
    );
    let report = server.get("/api/v3/process/new/report").await.1;
    assert_eq!(history_len(&report), 1);
    assert_eq!(server.ffmpeg_children().len(), 1);
}

#[tokio::test]
async fn placeholders_references_and_probe() {
    let server = TestServer::start().await;
    let dir = server.data_dir.join("public");
    // A real file to probe: two seconds of H.264 + AAC.
    let file = dir.join("clip.mp4");
    let made = std::process::Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=160x120:rate=10",
            "-f",
            "lavfi",
        ])
        .args([
            "-i",
            "sine=sample_rate=48000",
            "-t",
            "2",
            "-c:v",
            "libx264",
            "-c:a",
            "aac",
            "-y",
        ])
        .arg(&file)
        .status()
        .unwrap();
    assert!(made.success());
    server
        .create(json!({
            "id": "src", "reference": "cam", "autostart": false,
            "input": [{"id": "file", "address": "{diskfs}/clip.mp4"}],
            "output": [{"id": "o1", "address": "{diskfs}/{processid}-{reference}-{outputid}.mp4", "options": ["-c", "copy"]}]
        }))
        .await;
    let state = server.state("src").await;
    let disk = dir.canonicalize().unwrap().to_string_lossy().into_owned();
    let command: Vec<String> = serde_json::from_value(state["command"].clone()).unwrap();
    assert!(command.contains(&format!("{disk}/clip.mp4")), "{command:?}");
    assert!(
        command.contains(&format!("{disk}/src-cam-o1.mp4")),
        "{command:?}"
    );
    // The stored config keeps the raw placeholders.
    assert_eq!(
        server.get("/api/v3/process/src/config").await.1["output"][0]["address"],
        "{diskfs}/{processid}-{reference}-{outputid}.mp4"
    );

    // An input referencing another process's output resolves to that address.
    server
        .create(json!({
            "id": "copy", "autostart": false,
            "input": [{"address": "#src:output=o1"}],
            "output": [{"address": "-", "options": ["-f", "null"]}]
        }))
        .await;
    let command = server.state("copy").await["command"].clone();
    assert!(command
        .as_array()
        .unwrap()
        .contains(&json!(format!("{disk}/src-cam-o1.mp4"))));

    let probe = server.get("/api/v3/process/src/probe").await.1;
    let streams = probe["streams"].as_array().unwrap();
    assert_eq!(streams.len(), 2, "{probe:#}");
    let video = streams.iter().find(|s| s["type"] == "video").unwrap();
    assert_eq!(video["codec"], "h264");
    assert_eq!(
        (video["width"].as_u64(), video["height"].as_u64()),
        (Some(160), Some(120))
    );
    let audio = streams.iter().find(|s| s["type"] == "audio").unwrap();
    assert_eq!(audio["sampling_hz"], 48000);
}

#[tokio::test]
async fn skills_come_from_the_real_ffmpeg() {
    let server = TestServer::start().await;
    let (status, skills) = server.get("/api/v3/skills").await;
    assert_eq!(status, StatusCode::OK);
    let version = skills["ffmpeg"]["version"].as_str().unwrap();
    assert!(
        regex::Regex::new(r"^\d+\.\d+\.\d+$")
            .unwrap()
            .is_match(version),
        "{version}"
    );
    let h264 = skills["codecs"]["video"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "h264")
        .unwrap();
    assert!(h264["encoders"]
        .as_array()
        .unwrap()
        .contains(&json!("libx264")));
    assert!(skills["protocols"]["input"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["id"] == "udp"));
    assert!(skills["formats"]["muxers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["id"] == "hls"));
    assert!(skills["hwaccels"].is_array());
    assert_eq!(server.get("/api/v3/skills/reload").await.0, StatusCode::OK);
}

#[tokio::test]
async fn metrics_count_processes_by_state() {
    let server = TestServer::start().await;
    server.create(testsrc_process("m")).await;
    server
        .wait_state("m", Duration::from_secs(20), |s| s["exec"] == "running")
        .await;
    let text = server.get_text("/metrics").await;
    assert!(
        text.contains("streamcore_processes{state=\"running\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("streamcore_process_memory_bytes{id=\"m\"}"),
        "{text}"
    );
    assert!(text.contains("streamcore_http_requests_total{"), "{text}");
}

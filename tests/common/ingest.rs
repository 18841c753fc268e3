//! Fixtures of the RTMP and SRT server tests: free ports, FFmpeg publishers and readers on both
//! ends, and the hostile bytes the servers must survive.

#![allow(dead_code)]

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::TestServer;

/// A TCP port free now on loopback (the server binds it right after).
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A UDP port free now on loopback.
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The encoder of every publisher: about 2 Mbit/s of 640x360 30 fps H.264 (baseline, 1 s GOP,
/// what WebRTC viewers take without transcoding) and AAC.
pub const ENCODE: &[&str] = &[
    "-c:v",
    "libx264",
    "-preset",
    "ultrafast",
    "-tune",
    "zerolatency",
    "-profile:v",
    "baseline",
    "-pix_fmt",
    "yuv420p",
    "-g",
    "30",
    "-bf",
    "0",
    "-b:v",
    "2M",
    "-maxrate",
    "2M",
    "-bufsize",
    "1M",
    "-c:a",
    "aac",
    "-b:a",
    "64k",
];

/// A server process that publishes a live test picture and tone to `address` in `format`.
pub fn publisher_process(id: &str, address: &str, format: &str) -> Value {
    let mut options: Vec<&str> = ENCODE.to_vec();
    options.extend(["-f", format]);
    json!({
        "id": id,
        "input": [
            {"id": "v", "address": "testsrc=size=640x360:rate=30", "options": ["-re", "-f", "lavfi"]},
            {"id": "a", "address": "sine=sample_rate=48000", "options": ["-re", "-f", "lavfi"]}
        ],
        "output": [{"id": "out", "address": address, "options": options}],
        "reconnect": true,
        "reconnect_delay_seconds": 1,
        "autostart": true
    })
}

/// A server process that reads `address` and serves it over WHEP (video; AAC is not for
/// browsers), reconnecting a second after its input ends.
pub fn reader_process(id: &str, address: &str) -> Value {
    json!({
        "id": id,
        "input": [{"id": "in", "address": address, "options": []}],
        "output": [{"id": "null", "address": "-", "options": ["-f", "null"]}],
        "reconnect": true,
        "reconnect_delay_seconds": 1,
        "autostart": true,
        "webrtc": {"enabled": true, "audio_map": "none"}
    })
}

/// Runs FFmpeg to the end (bounded by `-t`/`-frames` in `args` and a kill after `limit`).
pub async fn ffmpeg(args: Vec<String>, limit: Duration) -> Output {
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new("timeout");
        cmd.arg("-s").arg("KILL").arg(limit.as_secs().to_string());
        cmd.args(["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "info"]);
        cmd.args(args);
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        cmd.output().expect("run ffmpeg")
    })
    .await
    .unwrap()
}

/// An external publisher of `seconds` of the test picture to `url`.
pub async fn publish(url: &str, format: &str, seconds: u32) -> Output {
    let mut args: Vec<String> = [
        "-re",
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=320x240:rate=30",
        "-f",
        "lavfi",
        "-i",
        "sine=sample_rate=48000",
        "-t",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(seconds.to_string());
    args.extend(ENCODE.iter().map(|s| s.to_string()));
    args.extend(["-f".into(), format.into(), url.into()]);
    ffmpeg(args, Duration::from_secs(u64::from(seconds) + 15)).await
}

/// An external reader that decodes `frames` video frames of `url`; true when it did.
pub async fn read_frames(url: &str, frames: u32) -> (bool, String) {
    let args = vec![
        "-i".to_string(),
        url.to_string(),
        "-map".into(),
        "0:v".into(),
        "-frames:v".into(),
        frames.to_string(),
        "-f".into(),
        "null".into(),
        "-".into(),
    ];
    let out = ffmpeg(args, Duration::from_secs(20)).await;
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    let wanted = format!("frame={frames:>5}");
    let decoded = out.status.success() && log.contains(&wanted);
    (decoded, log)
}

/// Garbage for a server port: random-looking bytes, and the start of a valid handshake cut off.
pub fn garbage() -> Vec<Vec<u8>> {
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let mut rtmp_c0c1 = vec![3u8];
    rtmp_c0c1.extend(std::iter::repeat_n(0xab, 700));
    vec![noise, rtmp_c0c1, vec![0u8; 1], vec![0xff; 65507]]
}

/// Waits until the viewer decoded `more` frames beyond what it had.
pub async fn frames_grow(rx: &super::whep::Receiver, more: u64, timeout: Duration) -> bool {
    let target = rx.frames_decoded() + more;
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if rx.frames_decoded() >= target {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Stops process `pub` and waits until `list` answers `empty` (no publisher), starts it again and
/// asserts the viewer `rx` of the reading process decodes again.
pub async fn restart_resumes(
    server: &TestServer,
    rx: &super::whep::Receiver,
    list: &str,
    empty: Value,
) {
    let (status, _) = server.command("pub", "stop").await;
    assert_eq!(status, 200);
    server
        .wait_state("pub", Duration::from_secs(15), |s| s["exec"] == "finished")
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = server.get(list).await;
        if status == 200 && body == empty {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the publisher's channel ends: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, _) = server.command("pub", "start").await;
    assert_eq!(status, 200);
    assert!(
        frames_grow(rx, 30, Duration::from_secs(40)).await,
        "the viewer resumes after the publisher's restart"
    );
}

/// One publisher counted, received bytes counted.
pub async fn assert_metrics(server: &TestServer, protocol: &str) {
    let metrics = server.get_text("/metrics").await;
    let publishers =
        format!(r#"streamcore_ingest_sessions{{protocol="{protocol}",role="publish"}} 1"#);
    let bytes =
        format!(r#"streamcore_ingest_bytes_total{{protocol="{protocol}",direction="received"}}"#);
    assert!(
        metrics.contains(&publishers) && metrics.contains(&bytes),
        "{metrics}"
    );
}

/// A second publisher of the live name at `url` is refused as a conflict; the first goes on.
pub async fn second_publisher_refused(
    server: &TestServer,
    rx: &super::whep::Receiver,
    url: &str,
    format: &str,
) {
    let out = publish(url, format, 2).await;
    assert!(!out.status.success(), "a second publisher is refused");
    assert!(
        server
            .wait_logged("reason=\"conflict\"", Duration::from_secs(5))
            .await
    );
    assert!(
        frames_grow(rx, 15, Duration::from_secs(10)).await,
        "the first publisher goes on"
    );
}

/// An external publisher of the live test picture to `url` until it is dropped (killed then:
/// FFmpeg itself, so no wrapper is left behind) or 120 s have passed.
pub fn spawn_publisher(url: &str, format: &str) -> tokio::process::Child {
    let mut cmd = tokio::process::Command::new("ffmpeg");
    cmd.args([
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-re",
        "-f",
        "lavfi",
    ]);
    cmd.args(["-i", "testsrc=size=320x240:rate=30", "-re", "-f", "lavfi"]);
    cmd.args(["-i", "sine=sample_rate=48000", "-t", "120"]);
    cmd.args(ENCODE).args(["-f", format, url]);
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    cmd.spawn().expect("run ffmpeg")
}

/// Waits until `GET /api/v3/rtmp` lists `name`.
pub async fn wait_rtmp_listed(server: &TestServer, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = server.get("/api/v3/rtmp").await;
        if body
            .as_array()
            .is_some_and(|list| list.iter().any(|c| c["name"] == name))
        {
            return;
        }
        assert!(Instant::now() < deadline, "{name} is not published: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits (bounded) until the session API lists, under `collector`, a session with traffic for
/// each of `locals` (Core's `publish:<name>` / `play:<name>`).
pub async fn sessions_listed(server: &TestServer, collector: &str, locals: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = server
            .get(&format!("/api/v3/session/active?collectors={collector}"))
            .await;
        let listed: Vec<String> = body[collector]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter(|s| {
                        s["bytes_rx"].as_u64() > Some(0) || s["bytes_tx"].as_u64() > Some(0)
                    })
                    .filter_map(|s| s["local"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if locals.iter().all(|l| listed.iter().any(|x| x == l)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{collector} sessions with traffic for {locals:?}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

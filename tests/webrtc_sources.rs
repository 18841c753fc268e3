//! The WebRTC leg mechanism (docs/sources.md) for sources that used to break it: MPEG-TS with
//! ADTS AAC over UDP, an audio-only source without any `video_map`, and raw lavfi input. Each
//! asserts a real WHEP viewer decodes the media AND the process's own HLS output keeps
//! getting new segments while it is watched. (The table over every source is tests/sources.rs.)

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::media::{clip, connect_when_ready, encode};
use common::whep::OfferOptions;
use common::TestServer;
use serde_json::{json, Value};

/// The segments the process's HLS playlist lists now.
fn segments(server: &TestServer, id: &str) -> HashSet<String> {
    let playlist = server.data_dir.join(format!("public/{id}.m3u8"));
    std::fs::read_to_string(playlist)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// An HLS output into the public directory, 1 s segments.
fn hls_output(id: &str, codecs: &[&str]) -> Value {
    let mut options: Vec<&str> = codecs.to_vec();
    options.extend([
        "-f",
        "hls",
        "-hls_time",
        "1",
        "-hls_list_size",
        "4",
        "-hls_flags",
        "delete_segments",
    ]);
    json!({"id": "hls", "address": format!("{{diskfs}}/{id}.m3u8"), "options": options})
}

/// What one viewer of a process got.
struct Watched {
    tracks: Value,
    first_frame: Option<Duration>,
    /// Each m-line of the server's answer as `<media> <direction>` (`rejected` at port 0).
    answered: Vec<String>,
}

/// Connects a viewer offering video and audio, waits for `frames` video frames (0: none
/// expected) and for audio, and checks that the HLS output got new segments meanwhile.
async fn watch(server: &TestServer, id: &str, frames: u64, size: Option<(i32, i32)>) -> Watched {
    let started = Instant::now();
    let (rx, _, _) = connect_when_ready(server, id, &OfferOptions::default()).await;
    let before = segments(server, id);
    if frames > 0 {
        assert!(
            rx.wait_frames(frames, Duration::from_secs(30)),
            "{id}: {} frames, errors {:?}\n{}",
            rx.frames_decoded(),
            rx.errors(),
            server.log.lock().unwrap().join("\n")
        );
        assert_eq!(rx.resolution(), size, "{id}");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while rx.audio_samples() < 48_000 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(rx.audio_samples() >= 48_000, "{id}: no audio at the viewer");
    if frames == 0 {
        assert_eq!(
            rx.frames_decoded(),
            0,
            "{id}: video from an audio-only source"
        );
    }
    output_goes_on(server, id, &before).await;
    let info = server.get(&format!("/api/v3/process/{id}/webrtc")).await.1;
    eprintln!(
        "{id}: tracks {} first frame {:?} after {:?}",
        info["tracks"],
        rx.first_frame_after(),
        started.elapsed()
    );
    Watched {
        tracks: info["tracks"].clone(),
        first_frame: rx.first_frame_after(),
        answered: answered(rx.webrtcbin()),
    }
}

/// The process's own HLS output gets new segments (beyond `before`) while it is watched, and
/// the process is still running.
async fn output_goes_on(server: &TestServer, id: &str, before: &HashSet<String>) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while segments(server, id).is_subset(before) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        !segments(server, id).is_subset(before),
        "{id}: the HLS output stalled while watched ({before:?})"
    );
    let state = server.state(id).await;
    assert_eq!(state["exec"], "running", "{state}");
}

/// The media and direction of every m-line of the answer the viewer applied.
fn answered(webrtcbin: &gstreamer::Element) -> Vec<String> {
    use gstreamer::prelude::*;
    let answer = webrtcbin
        .property::<Option<gstreamer_webrtc::WebRTCSessionDescription>>("remote-description")
        .expect("the viewer applied the answer");
    answer
        .sdp()
        .medias()
        .map(|m| {
            let direction = ["sendonly", "recvonly", "sendrecv", "inactive"]
                .into_iter()
                .find(|d| m.attribute_val(d).is_some())
                .unwrap_or("sendrecv");
            let direction = if m.port() == 0 { "rejected" } else { direction };
            format!("{} {direction}", m.media().unwrap_or(""))
        })
        .collect()
}

fn paths(tracks: &Value) -> Vec<(String, String, String)> {
    tracks
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["kind"].as_str().unwrap().to_string(),
                t["codec"].as_str().unwrap().to_string(),
                t["path"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn owned(v: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    v.iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect()
}

/// A free local UDP port (bound then released) for an encoder to send to.
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An encoder outside the server sending MPEG-TS over UDP in real time, forever.
struct Sender(Child);

impl Sender {
    fn start(file: &Path, port: u16) -> Sender {
        let child = Command::new("ffmpeg")
            .args([
                "-hide_banner",
                "-loglevel",
                "error",
                "-re",
                "-stream_loop",
                "-1",
            ])
            .arg("-i")
            .arg(file)
            .args(["-c", "copy", "-f", "mpegts"])
            .arg(format!("udp://127.0.0.1:{port}?pkt_size=1316"))
            .stdin(Stdio::null())
            .spawn()
            .expect("ffmpeg sender");
        Sender(child)
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn mpegts_h264_and_adts_aac_over_udp() {
    let server = TestServer::start().await;
    let file = clip(
        &server.data_dir,
        "udp.ts",
        "640x360",
        6,
        "-c:v libx264 -profile:v baseline -pix_fmt yuv420p -g 30 -c:a aac -b:a 96k -f mpegts",
    );
    let port = free_udp_port();
    server
        .create(json!({
            "id": "udp",
            "input": [{"id": "in", "address": format!("udp://127.0.0.1:{port}?fifo_size=100000"), "options": []}],
            "output": [hls_output("udp", &["-c", "copy"])],
            "reconnect": true,
            "reconnect_delay_seconds": 1,
            "webrtc": {"enabled": true}
        }))
        .await;
    let _sender = Sender::start(&file, port);
    let watched = watch(&server, "udp", 30, Some((640, 360))).await;
    assert_eq!(
        paths(&watched.tracks),
        owned(&[
            ("video", "H264", "passthrough"),
            ("audio", "MPEG4-GENERIC", "transcode")
        ])
    );
    assert!(watched.first_frame.is_some());
}

#[tokio::test]
async fn audio_only_source_needs_no_map() {
    let server = TestServer::start().await;
    let file = encode(
        &server.data_dir,
        "radio.aac",
        &[
            "-f",
            "lavfi",
            "-i",
            "sine=sample_rate=48000:frequency=440",
            "-t",
            "6",
            "-c:a",
            "aac",
        ],
    );
    server
        .create(json!({
            "id": "radio",
            "input": [{"id": "in", "address": file.to_string_lossy(), "options": ["-re", "-stream_loop", "-1"]}],
            "output": [hls_output("radio", &["-c", "copy"])],
            "reconnect": true,
            "reconnect_delay_seconds": 1,
            "webrtc": {"enabled": true}
        }))
        .await;
    // The viewer offers video and audio; the answer carries the audio only.
    let watched = watch(&server, "radio", 0, None).await;
    assert_eq!(
        paths(&watched.tracks),
        owned(&[("audio", "MPEG4-GENERIC", "transcode")])
    );
    // Both offered m-lines are answered, the one the source lacks as inactive.
    assert_eq!(watched.answered, ["video inactive", "audio sendonly"]);
}

#[tokio::test]
async fn raw_lavfi_input_is_encoded_once_for_the_stream() {
    let server = TestServer::start().await;
    server
        .create(json!({
            "id": "raw",
            "input": [
                {"id": "video", "address": "testsrc2=size=640x360:rate=25", "options": ["-re", "-f", "lavfi"]},
                {"id": "audio", "address": "sine=sample_rate=48000:frequency=440", "options": ["-re", "-f", "lavfi"]}
            ],
            "output": [hls_output("raw", &["-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-c:a", "aac"])],
            "reconnect": true,
            "reconnect_delay_seconds": 1,
            "webrtc": {"enabled": true}
        }))
        .await;
    let watched = watch(&server, "raw", 30, Some((640, 360))).await;
    assert_eq!(
        paths(&watched.tracks),
        owned(&[
            ("video", "H264", "passthrough"),
            ("audio", "OPUS", "passthrough")
        ])
    );
}

/// A listener input learns its codecs only when the publisher connects, so the leg copies what
/// comes: here E-AC-3 audio in MPEG-TS over SRT, which no browser path takes. The audio is
/// listed as unsupported with its reason, the video still reaches the viewer, and the process
/// keeps running and writing its own output.
#[tokio::test]
async fn a_medium_without_a_browser_path_is_unsupported_and_the_process_keeps_its_output() {
    let server = TestServer::start().await;
    let file = clip(
        &server.data_dir,
        "eac3.ts",
        "640x360",
        6,
        "-c:v libx264 -profile:v baseline -pix_fmt yuv420p -g 30 -c:a eac3 -b:a 96k -f mpegts",
    );
    let port = free_udp_port();
    server
        .create(json!({
            "id": "eac3",
            "input": [{"id": "in", "address": format!("srt://127.0.0.1:{port}?mode=listener"), "options": []}],
            "output": [hls_output("eac3", &["-c", "copy"])],
            "reconnect": true,
            "reconnect_delay_seconds": 1,
            "webrtc": {"enabled": true}
        }))
        .await;
    let _publisher = common::sources::Feeder::ffmpeg(
        &file,
        &[
            "-f",
            "mpegts",
            &format!("srt://127.0.0.1:{port}?mode=caller&pkt_size=1316"),
        ],
    );
    let (rx, _, _) = connect_when_ready(&server, "eac3", &OfferOptions::default()).await;
    let before = segments(&server, "eac3");
    assert!(
        rx.wait_frames(30, Duration::from_secs(30)),
        "{} frames, errors {:?}",
        rx.frames_decoded(),
        rx.errors()
    );
    assert_eq!(rx.resolution(), Some((640, 360)));
    let info = server.get("/api/v3/process/eac3/webrtc").await.1;
    let tracks = info["tracks"].as_array().expect("tracks");
    let audio = tracks
        .iter()
        .find(|t| t["kind"] == "audio")
        .unwrap_or_else(|| panic!("no audio track listed: {info}"));
    assert_eq!(audio["path"], "unsupported", "{info}");
    assert!(
        audio["reason"].as_str().is_some_and(|r| r.contains("eac3")),
        "{info}"
    );
    assert_eq!(
        paths(&info["tracks"])[0],
        ("video".into(), "H264".into(), "passthrough".into())
    );
    output_goes_on(&server, "eac3", &before).await;
}

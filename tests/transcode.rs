//! The transcode branch: sources browsers cannot play, and `force_transcode`, reach viewers as
//! H.264 constrained baseline + Opus, encoded once per stream; joining viewers get a key frame at
//! once.

mod common;

use std::time::{Duration, Instant};

use common::media::{clip, connect_when_ready, webrtc_process};
use common::whep::{OfferOptions, Receiver};
use common::{start_fails, TestServer};
use gstreamer::prelude::*;
use serde_json::json;

/// Waits until the receiver has decoded audio.
async fn wait_audio(rx: &Receiver) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    while rx.audio_samples() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rx.audio_samples() > 0
}

/// `(profile_idc, constraint flags)` of the H.264 the receiver gets, from the avcC record its
/// depayloader puts in its caps (the SPS as it is in the bitstream, not what the SDP says).
fn received_h264_profile(rx: &Receiver) -> Option<(u8, u8)> {
    let pipeline = rx.webrtcbin().parent()?.downcast::<gstreamer::Bin>().ok()?;
    let depay = pipeline
        .iterate_recurse()
        .into_iter()
        .flatten()
        .find(|e| e.factory().is_some_and(|f| f.name() == "rtph264depay"))?;
    let caps = depay.static_pad("src")?.current_caps()?;
    let codec_data = caps
        .structure(0)?
        .get::<gstreamer::Buffer>("codec_data")
        .ok()?;
    let map = codec_data.map_readable().ok()?;
    Some((*map.get(1)?, *map.get(2)?))
}

fn track<'a>(info: &'a serde_json::Value, kind: &str) -> &'a serde_json::Value {
    info["tracks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["kind"] == kind)
        .unwrap()
}

#[tokio::test]
async fn aac_audio_is_transcoded_to_opus() {
    let server = TestServer::start().await;
    let source = clip(
        &server.data_dir,
        "aac.mkv",
        "320x240",
        6,
        "-c:v libx264 -profile:v baseline -pix_fmt yuv420p -g 30 -bf 0 -c:a aac",
    );
    server.create(webrtc_process("aac", &source)).await;
    let (rx, _, _) = connect_when_ready(&server, "aac", &OfferOptions::default()).await;
    assert!(
        rx.wait_frames(20, Duration::from_secs(20)),
        "{:?}",
        rx.errors()
    );
    assert!(wait_audio(&rx).await, "no Opus decoded");
    let codecs = rx.codecs();
    assert!(
        codecs.iter().any(|c| c == "H264") && codecs.iter().any(|c| c == "OPUS"),
        "{codecs:?}"
    );
    let info = server.get("/api/v3/process/aac/webrtc").await.1;
    assert_eq!(track(&info, "video")["path"], "passthrough", "{info}");
    // The skills say which encoder was picked: x264enc is the best this machine has.
    let skills = server.get("/api/v3/skills").await.1;
    let transcode = &skills["webrtc"]["transcode"];
    assert_eq!(transcode["video_encoder"], "x264enc", "{transcode}");
    assert_eq!(transcode["opus_encoder"], "opusenc", "{transcode}");
    let audio = track(&info, "audio");
    assert_eq!(
        (audio["path"].as_str(), audio["output_codec"].as_str()),
        (Some("transcode"), Some("OPUS")),
        "{info}"
    );
    assert!(
        audio["reason"].as_str().unwrap().contains("MPEG4-GENERIC"),
        "{info}"
    );
}

#[tokio::test]
async fn h265_video_arrives_as_h264() {
    let server = TestServer::start().await;
    let source = clip(
        &server.data_dir,
        "hevc.mkv",
        "320x240",
        6,
        "-c:v libx265 -x265-params log-level=error -g 30 -pix_fmt yuv420p -c:a libopus",
    );
    server.create(webrtc_process("hevc", &source)).await;
    let (rx, _, _) = connect_when_ready(&server, "hevc", &OfferOptions::default()).await;
    assert!(
        rx.wait_frames(20, Duration::from_secs(20)),
        "{:?}",
        rx.errors()
    );
    assert_eq!(rx.resolution(), Some((320, 240)));
    assert!(rx.codecs().iter().any(|c| c == "H264"), "{:?}", rx.codecs());
    let info = server.get("/api/v3/process/hevc/webrtc").await.1;
    let video = track(&info, "video");
    assert_eq!(
        (video["codec"].as_str(), video["path"].as_str()),
        (Some("H265"), Some("transcode")),
        "{info}"
    );
}

#[tokio::test]
async fn force_transcode_turns_high_profile_with_b_frames_into_constrained_baseline() {
    let server = TestServer::start().await;
    let source = clip(
        &server.data_dir,
        "high.mkv",
        "640x360",
        6,
        "-c:v libx264 -profile:v high -bf 3 -g 30 -pix_fmt yuv420p -c:a libopus",
    );
    let mut process = webrtc_process("forced", &source);
    process["webrtc"]["force_transcode"] = json!(true);
    server.create(process).await;
    let (rx, _, _) = connect_when_ready(&server, "forced", &OfferOptions::default()).await;
    assert!(
        rx.wait_frames(20, Duration::from_secs(20)),
        "{:?}",
        rx.errors()
    );
    // Baseline (profile_idc 66) with constraint_set1: the constrained baseline profile, which has
    // no B slices at all.
    let (profile, constraints) = received_h264_profile(&rx).expect("avcC of the received stream");
    assert_eq!(profile, 66, "profile_idc");
    assert!(
        constraints & 0x40 != 0,
        "constraint_set1 flag: {constraints:#x}"
    );
    let info = server.get("/api/v3/process/forced/webrtc").await.1;
    assert_eq!(track(&info, "video")["path"], "transcode", "{info}");
    assert_eq!(track(&info, "audio")["path"], "transcode", "{info}");
    assert!(wait_audio(&rx).await);
}

#[tokio::test]
async fn joining_a_transcoded_stream_mid_gop_starts_at_once() {
    let server =
        TestServer::start_with(&[("STREAMCORE_LOG", "info,streamcore::media::viewer=debug")]).await;
    // A 10 s GOP at the source and at the encoder: without a forced key frame a viewer would wait
    // up to ten seconds for its first picture.
    let source = clip(&server.data_dir, "longgop.mkv", "640x360", 30, "-c:v libx264 -profile:v baseline -g 300 -keyint_min 300 -sc_threshold 0 -bf 0 -pix_fmt yuv420p -c:a libopus");
    let mut process = webrtc_process("gop", &source);
    process["webrtc"]["force_transcode"] = json!(true);
    process["webrtc"]["transcode"] = json!({"gop_seconds": 10});
    server.create(process).await;
    // A first viewer makes sure media flows; later viewers then join at arbitrary points.
    let (first, _, _) = connect_when_ready(&server, "gop", &OfferOptions::default()).await;
    assert!(first.wait_frames(5, Duration::from_secs(20)));
    let mut startup = Vec::new();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1700)).await; // somewhere inside the 10 s GOP
        let (rx, _, _) = connect_when_ready(&server, "gop", &OfferOptions::default()).await;
        assert!(
            rx.wait_frames(1, Duration::from_secs(5)),
            "no first frame; joined after {startup:?}; log:\n{}",
            server
                .log
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l.contains("viewer") || l.contains("key"))
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
        startup.push(rx.first_frame_after().unwrap());
    }
    startup.sort();
    eprintln!("time to first frame after joining: {startup:?}");
    for t in &startup {
        assert!(*t < Duration::from_millis(1500), "first frame after {t:?}");
    }
}

#[test]
fn a_forced_encoder_that_is_missing_stops_the_server() {
    let stderr = start_fails(&[("STREAMCORE_WEBRTC_ENCODER", "nvh264enc")]);
    assert!(stderr.contains("nvh264enc"), "{stderr}");
}

#[test]
fn a_bad_pipeline_description_stops_the_server() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("video-x264.txt"),
        "# an encoder chain with a typo in an element name\nx264encc bitrate={bitrate_kbps} ! h264parse\n",
    )
    .unwrap();
    let stderr = start_fails(&[(
        "STREAMCORE_WEBRTC_PIPELINES_DIR",
        dir.path().to_str().unwrap(),
    )]);
    assert!(stderr.contains("video-x264.txt"), "{stderr}");
    std::fs::write(
        dir.path().join("video-x264.txt"),
        "x264enc bitrate={no_such_placeholder}\n",
    )
    .unwrap();
    let stderr = start_fails(&[(
        "STREAMCORE_WEBRTC_PIPELINES_DIR",
        dir.path().to_str().unwrap(),
    )]);
    assert!(stderr.contains("no_such_placeholder"), "{stderr}");
}

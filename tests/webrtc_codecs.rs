//! What reaches viewers for sources of different shapes: VP8, audio-only, video-only, and what
//! stopping the process does to its viewers. (Codecs browsers cannot play: tests/transcode.rs.)

mod common;

use std::time::{Duration, Instant};

use common::media::{clip, connect_when_ready, make_source, webrtc_process};
use common::whep::{self, OfferOptions};
use common::TestServer;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn vp8_source_is_passed_through() {
    let server = TestServer::start().await;
    let source = clip(
        &server.data_dir,
        "vp8.webm",
        "320x240",
        6,
        "-c:v libvpx -deadline realtime -b:v 800k -g 30 -c:a libopus",
    );
    server.create(webrtc_process("vp8", &source)).await;
    let opts = OfferOptions {
        video_codecs: vec!["VP8"],
        ..Default::default()
    };
    let (rx, _, _) = connect_when_ready(&server, "vp8", &opts).await;
    assert!(
        rx.wait_frames(20, Duration::from_secs(20)),
        "{:?}",
        rx.errors()
    );
    assert_eq!(rx.resolution(), Some((320, 240)));
    assert!(rx.codecs().iter().any(|c| c == "VP8"), "{:?}", rx.codecs());
    // An H.264-only viewer cannot receive this stream: 406 naming both sides' codecs.
    let h264_only = OfferOptions {
        video_codecs: vec!["H264"],
        audio: false,
        ..Default::default()
    };
    let (_rx, offer) = tokio::task::spawn_blocking(move || whep::Receiver::new(&h264_only))
        .await
        .unwrap();
    let (status, _, body) =
        whep::post_offer(&server.http, &server.url("/whep/vp8"), None, &offer).await;
    assert_eq!(status, StatusCode::NOT_ACCEPTABLE, "{body}");
    assert!(body.contains("VP8") && body.contains("H264"), "{body}");
}

#[tokio::test]
async fn audio_only_and_video_only_processes() {
    let server = TestServer::start().await;
    let source = make_source(&server.data_dir);
    let mut audio_only = webrtc_process("audio", &source);
    audio_only["webrtc"]["video_map"] = json!("none");
    server.create(audio_only).await;
    let mut video_only = webrtc_process("video", &source);
    video_only["webrtc"]["audio_map"] = json!("none");
    server.create(video_only).await;

    let (rx, _, _) = connect_when_ready(&server, "audio", &OfferOptions::default()).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while rx.audio_samples() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        rx.audio_samples() > 0,
        "no audio from the audio-only process"
    );
    assert_eq!(rx.frames_decoded(), 0);
    let info = server.get("/api/v3/process/audio/webrtc").await.1;
    let kinds: Vec<&str> = info["tracks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["audio"], "{info}");

    let (rx, _, _) = connect_when_ready(&server, "video", &OfferOptions::default()).await;
    assert!(rx.wait_frames(20, Duration::from_secs(20)));
    let info = server.get("/api/v3/process/video/webrtc").await.1;
    assert_eq!(info["tracks"].as_array().unwrap().len(), 1, "{info}");
}

#[tokio::test]
async fn stopping_the_process_closes_its_viewers() {
    let server = TestServer::start().await;
    let source = make_source(&server.data_dir);
    server.create(webrtc_process("stop", &source)).await;
    let (rx, resource, _) = connect_when_ready(&server, "stop", &OfferOptions::default()).await;
    assert!(rx.wait_frames(10, Duration::from_secs(20)));
    let sessions = server.get("/api/v3/webrtc/sessions").await.1;
    assert_eq!(sessions.as_array().unwrap().len(), 1, "{sessions}");
    assert_eq!(server.command("stop", "stop").await.0, StatusCode::OK);
    // The stop command returns after FFmpeg exited and the viewers were closed.
    let sessions = server.get("/api/v3/webrtc/sessions").await.1;
    assert_eq!(sessions, json!([]));
    let id = resource.rsplit('/').next().unwrap();
    assert!(server
        .log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("viewer removed") && l.contains(id)));
    // Deleting closes them too.
    assert_eq!(server.command("stop", "start").await.0, StatusCode::OK);
    let (_rx, _, _) = connect_when_ready(&server, "stop", &OfferOptions::default()).await;
    assert_eq!(
        server
            .call(reqwest::Method::DELETE, "/api/v3/process/stop", None)
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(server.get("/api/v3/webrtc/sessions").await.1, json!([]));
}

//! The built-in player pages in a real browser: headless Chromium opens `/player/{id}`, the page
//! negotiates WHEP with the real server and decodes the real FFmpeg → GStreamer stream.
//!
//! Needs Chromium at `/usr/bin/chromium` (or `$STREAMCORE_TEST_CHROMIUM`); a missing browser
//! fails the tests. Run with `cargo test --test browser -- --test-threads=1`.

#[path = "common/chromium.rs"]
mod chromium;
mod common;

use std::time::{Duration, Instant};

use chromium::{page_state, Chromium};
use common::media::{make_source, webrtc_process};
use common::{ServerLogOnPanic, TestServer};
use serde_json::{json, Value};

/// How long the page may take from load to the first decoded frame. The page itself retries
/// the server's 409 ("no media yet", Retry-After: 2) until FFmpeg's media flows.
const FIRST_FRAME: Duration = Duration::from_secs(30);

/// Polls the player's `window.streamcore` until `pred` holds (see [`chromium::wait_page`]).
async fn wait_player(
    server: &TestServer,
    page: &chromiumoxide::Page,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    chromium::wait_page(page, "streamcore", timeout, what, || server.alive(), pred).await
}

fn frames(state: &Value) -> u64 {
    state["framesDecoded"].as_u64().unwrap_or(0)
}

/// The host candidates this browser gathers, from a throwaway connection in `page`: with Chrome's
/// default mDNS obfuscation they are `<uuid>.local` names instead of IP addresses.
async fn host_candidate_addresses(page: &chromiumoxide::Page) -> Vec<String> {
    page.evaluate_function(
        r#"async () => {
            const pc = new RTCPeerConnection();
            pc.addTransceiver("video", { direction: "recvonly" });
            const done = new Promise((resolve) => {
                pc.addEventListener("icegatheringstatechange", () =>
                    pc.iceGatheringState === "complete" && resolve());
                setTimeout(resolve, 10000);
            });
            await pc.setLocalDescription(await pc.createOffer());
            await done;
            const hosts = pc.localDescription.sdp.split(/\r?\n/)
                .filter((l) => l.startsWith("a=candidate:") && / typ host/.test(l))
                .map((l) => l.split(" ")[4]);
            pc.close();
            return hosts;
        }"#,
    )
    .await
    .expect("gather candidates")
    .into_value()
    .expect("candidate list")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn player_decodes_frames() {
    let started = Instant::now();
    let server = TestServer::start().await;
    let _log = ServerLogOnPanic(&server);
    let source = make_source(&server.data_dir);
    server.create(webrtc_process("cam", &source)).await;

    // Without the fake media UI: with it, Chrome would reveal its host IPs (see chromium.rs).
    let mut chrome = Chromium::launch_like_a_viewer().await;
    let opened = Instant::now();
    let page = chrome.open(&server.url("/player/cam")).await;

    let state = wait_player(&server, &page, FIRST_FRAME, "a decoded frame", |s| {
        frames(s) > 0
    })
    .await;
    let first_frame = opened.elapsed();
    assert_eq!(state["state"], "connected", "{state:#}");
    assert_eq!(state["iceState"], "connected", "{state:#}");
    assert_eq!(
        (state["width"].as_u64(), state["height"].as_u64()),
        (Some(640), Some(360)),
        "{state:#}"
    );
    assert_eq!(state["codec"], "video/H264", "{state:#}");
    assert!(state["lastError"].is_null(), "{state:#}");

    // It keeps playing, and the Opus track arrives too.
    let state = wait_player(
        &server,
        &page,
        Duration::from_secs(10),
        "30 frames and audio",
        |s| frames(s) >= 30 && s["audioPacketsReceived"].as_u64().unwrap_or(0) > 0,
    )
    .await;
    assert_eq!(state["audioCodec"], "audio/opus", "{state:#}");
    assert_eq!(state["state"], "connected", "{state:#}");

    // The connection above came up although Chrome hid its host addresses behind mDNS names
    // (the server cannot resolve those and learns the browser peer-reflexively). Check that
    // this browser really obfuscates, so the test keeps covering that case.
    let hosts = host_candidate_addresses(&page).await;
    assert!(
        hosts.iter().all(|h| h.ends_with(".local")),
        "Chrome exposed host addresses instead of mDNS names: {hosts:?}"
    );

    // The video element shows the stream (not only the stats).
    let video: Value = page
        .evaluate("(() => { const v = document.getElementById('video'); return {w: v.videoWidth, h: v.videoHeight, paused: v.paused}; })()")
        .await
        .unwrap()
        .into_value()
        .unwrap();
    assert_eq!(video, json!({"w": 640, "h": 360, "paused": false}));
    eprintln!(
        "player_decodes_frames: first frame {first_frame:?} after page load, {} frames, mDNS host candidates {hosts:?}, total {:?}",
        frames(&state),
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn player_with_token() {
    let started = Instant::now();
    let mut server = TestServer::start_with_auth(&[]).await;
    let login = server.login().await;
    let token = login["access_token"].as_str().unwrap().to_string();
    let source = make_source(&server.data_dir);
    let mut config = webrtc_process("vip", &source);
    config["webrtc"] = json!({"enabled": true, "access": "token"});
    server.create(config).await;
    let _log = ServerLogOnPanic(&server);

    let mut chrome = Chromium::launch().await;
    let page = chrome.open(&server.url("/player/vip")).await;

    // Without a token: the page reports the 401 and gives up (no retry loop, no media).
    let refused = wait_player(&server, &page, FIRST_FRAME, "the 401 on the page", |s| {
        s["lastError"].is_string()
    })
    .await;
    let error = refused["lastError"].as_str().unwrap();
    assert!(error.contains("401"), "{error}");
    assert!(error.to_lowercase().contains("token"), "{error}");
    assert_eq!(frames(&refused), 0, "{refused:#}");
    // The page has stopped (no retry): it stays like that.
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(3) {
        let s = page_state(&page).await;
        assert_eq!(frames(&s), 0, "frames decoded without a token: {s:#}");
        assert_eq!(
            s["lastError"], refused["lastError"],
            "the page retried: {s:#}"
        );
        assert_ne!(s["state"], "connected", "{s:#}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let status: String = page
        .evaluate("document.getElementById('status').className")
        .await
        .unwrap()
        .into_value()
        .unwrap();
    assert_eq!(status, "error");

    // With the admin's access token in the URL, the same page plays.
    let opened = Instant::now();
    page.goto(server.url(&format!("/player/vip?token={token}")))
        .await
        .expect("navigate with token");
    let state = wait_player(&server, &page, FIRST_FRAME, "a frame with the token", |s| {
        frames(s) > 0
    })
    .await;
    assert_eq!(state["state"], "connected", "{state:#}");
    assert_eq!(
        (state["width"].as_u64(), state["height"].as_u64()),
        (Some(640), Some(360)),
        "{state:#}"
    );
    assert!(state["lastError"].is_null(), "{state:#}");
    eprintln!(
        "player_with_token: first frame {:?} after loading with the token, total {:?}",
        opened.elapsed(),
        started.elapsed()
    );
}

#[tokio::test]
async fn index_page_is_served() {
    let server = TestServer::start().await;
    let content_type = |res: &reqwest::Response| {
        res.headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };

    for path in ["/player/", "/player"] {
        let res = server.http.get(server.url(path)).send().await.unwrap();
        assert_eq!(res.status(), reqwest::StatusCode::OK, "{path}");
        assert!(
            content_type(&res).starts_with("text/html"),
            "{path}: {}",
            content_type(&res)
        );
        let body = res.text().await.unwrap();
        assert!(body.contains("<h1>WebRTC streams</h1>"), "{path}: {body}");
        assert!(body.contains(r#"fetch("/whep""#), "{path}");
    }

    let res = server
        .http
        .get(server.url("/player.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), reqwest::StatusCode::OK);
    let ct = content_type(&res);
    assert!(ct.starts_with("text/javascript"), "{ct}");
    let body = res.text().await.unwrap();
    assert!(body.contains("class WhepSession"), "not the player script");

    // Any id gets the player page, which loads the script above.
    let res = server
        .http
        .get(server.url("/player/some%20stream"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), reqwest::StatusCode::OK);
    assert!(content_type(&res).starts_with("text/html"));
    let body = res.text().await.unwrap();
    assert!(body.contains(r#"<script src="/player.js""#), "{body}");
    assert!(body.contains(r#"<video id="video""#));
}

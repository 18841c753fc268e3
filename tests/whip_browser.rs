//! The built-in publish page in a real browser: headless Chromium opens `/publish/{id}`, sends
//! its (fake) camera and microphone, or its canvas test pattern and tone, over WHIP to a process
//! whose input is `{whip}`, and the test's own WHEP client decodes what the server makes of it.
//!
//! Needs Chromium at `/usr/bin/chromium` (or `$STREAMCORE_TEST_CHROMIUM`); a missing browser
//! fails the tests. Run with `cargo test --test whip_browser -- --test-threads=1`.

#[path = "common/chromium.rs"]
mod chromium;
mod common;

use std::time::{Duration, Instant};

use chromium::{Chromium, FAKE_MEDIA_UI};
use common::media::connect_when_ready;
use common::whep::{self, OfferOptions, Receiver};
use common::{ServerLogOnPanic, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// From page load to a connected WHIP session (camera start, ICE gathering cap of 2 s, POST,
/// ICE and DTLS).
const CONNECT: Duration = Duration::from_secs(30);

/// From the WHEP answer to decoded frames and audio.
const DECODE: Duration = Duration::from_secs(30);

/// Fake camera and microphone (a moving test picture and a beep), granted without a prompt.
const FAKE_DEVICES: &[&str] = &[FAKE_MEDIA_UI, "--use-fake-device-for-media-stream"];

/// A process that takes its input from WHIP, copies it to nowhere, and serves it over WHEP.
fn whip_process(id: &str) -> Value {
    json!({
        "id": id,
        "input": [{"id": "in", "address": "{whip}", "options": []}],
        "output": [{"id": "out", "address": "-", "options": ["-c", "copy", "-f", "null"]}],
        "options": ["-loglevel", "info"],
        "autostart": true,
        "reconnect": true,
        "reconnect_delay_seconds": 1,
        "webrtc": {"enabled": true}
    })
}

/// `window.streamcorePublish` of the page, `Null` while the script has not set it.
async fn publish_state(page: &chromiumoxide::Page) -> Value {
    chromium::page_value(page, "streamcorePublish").await
}

/// Polls the page's state until `pred` holds (see [`chromium::wait_page`]).
async fn wait_page(
    server: &TestServer,
    page: &chromiumoxide::Page,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    chromium::wait_page(
        page,
        "streamcorePublish",
        timeout,
        what,
        || server.alive(),
        pred,
    )
    .await
}

/// The publisher the server has attached to `id` (`GET /api/v3/process/{id}/whip`), `Null` when
/// none.
async fn publisher(server: &TestServer, id: &str) -> Value {
    let (status, info) = server.get(&format!("/api/v3/process/{id}/whip")).await;
    assert_eq!(status, StatusCode::OK, "{info}");
    info["publisher"].clone()
}

/// Polls the server until `pred` holds for the publisher of `id`; panics after `timeout`.
async fn wait_publisher(
    server: &TestServer,
    id: &str,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let p = publisher(server, id).await;
        if pred(&p) {
            return p;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}; publisher: {p:#}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The last path segment of a session URL: the server's resource id.
fn resource_id(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or_default()
}

fn num(state: &Value, key: &str) -> u64 {
    state[key].as_u64().unwrap_or(0)
}

async fn eval<T: serde::de::DeserializeOwned>(page: &chromiumoxide::Page, js: &str) -> T {
    page.evaluate(js)
        .await
        .unwrap_or_else(|e| panic!("{js}: {e}"))
        .into_value()
        .unwrap_or_else(|e| panic!("{js}: {e}"))
}

/// Runs `js` in the page for its effect.
async fn exec(page: &chromiumoxide::Page, js: &str) {
    page.evaluate(format!("(() => {{ {js}; return true; }})()"))
        .await
        .unwrap_or_else(|e| panic!("{js}: {e}"));
}

/// Connects the test's WHEP viewer to `id` and waits until it has decoded `frames` video frames
/// and some audio; returns the receiver.
async fn watch(server: &TestServer, id: &str, frames: u64) -> Receiver {
    let (rx, _, _) = connect_when_ready(server, id, &OfferOptions::default()).await;
    // Both waits block (they poll the receiver's counters): off the async workers.
    tokio::task::spawn_blocking(move || {
        let decoded = rx.wait_frames(frames, DECODE);
        assert!(
            decoded,
            "{} frames decoded of {frames}, state {}, errors {:?}",
            rx.frames_decoded(),
            rx.connection_state(),
            rx.errors()
        );
        let deadline = Instant::now() + DECODE;
        while rx.audio_samples() == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            rx.audio_samples() > 0,
            "no audio decoded; codecs {:?}, errors {:?}",
            rx.codecs(),
            rx.errors()
        );
        rx
    })
    .await
    .expect("WHEP viewer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_camera_with_token() {
    let started = Instant::now();
    let mut server = TestServer::start_with_auth(&[]).await;
    let login = server.login().await;
    let token = login["access_token"].as_str().unwrap().to_string();
    server.create(whip_process("pub")).await;
    let _log = ServerLogOnPanic(&server);

    let mut chrome = Chromium::launch_with(FAKE_DEVICES).await;
    let opened = Instant::now();
    let page = chrome
        .open(&server.url(&format!(
            "/publish/pub?token={token}&autostart=1&source=camera"
        )))
        .await;

    let state = wait_page(&server, &page, CONNECT, "a connected publisher", |s| {
        s["state"] == "connected" || s["state"] == "error"
    })
    .await;
    assert_eq!(state["state"], "connected", "{state:#}");
    let connected = opened.elapsed();
    assert_eq!(state["source"], "camera", "{state:#}");
    assert!(state["error"].is_null(), "{state:#}");
    let resource = state["resource"].as_str().expect("resource").to_string();
    assert!(
        resource.starts_with(&server.url("/")),
        "Location resolved against the endpoint: {resource}"
    );
    // The server knows this session as the publisher of "pub".
    let attached = publisher(&server, "pub").await;
    assert_eq!(attached["id"], resource_id(&resource), "{attached:#}");
    // The token went to sessionStorage, not the history.
    let href: String = eval(&page, "location.href").await;
    assert!(!href.contains("token="), "{href}");
    assert!(href.contains("autostart=1"), "{href}");

    // The server makes a stream of it: the test's own viewer decodes video and audio.
    let rx = watch(&server, "pub", 30).await;
    let decoded = rx.frames_decoded();
    let resolution = rx.resolution();
    let codecs = rx.codecs();
    drop(rx);

    // The page reports what it sends (its stats refresh every second).
    let state = wait_page(
        &server,
        &page,
        Duration::from_secs(10),
        "sent frames and audio in the page's stats",
        |s| {
            num(s, "framesSent") > 0
                && num(s, "bytesSent") > 0
                && num(s, "audioPacketsSent") > 0
                && num(s, "width") > 0
        },
    )
    .await;
    assert_eq!(state["state"], "connected", "{state:#}");
    // Chrome's padding packets are dropped on the way to FFmpeg; that must stay quiet (a
    // pad-probe Drop once made GStreamer log a CRITICAL for each).
    let criticals: Vec<String> = server
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("CRITICAL"))
        .cloned()
        .collect();
    assert!(criticals.is_empty(), "{criticals:#?}");
    let codec = state["codec"].as_str().unwrap_or_default();
    assert!(
        codec == "video/H264" || codec == "video/VP8",
        "video codec {codec}: {state:#}"
    );
    // The name comes from the server's answer, whose case SDP leaves open ("OPUS" or "opus").
    assert_eq!(
        state["audioCodec"]
            .as_str()
            .map(str::to_lowercase)
            .as_deref(),
        Some("audio/opus"),
        "{state:#}"
    );
    let (w, h) = resolution.expect("viewer resolution");
    assert!(w > 0 && h > 0, "{w}x{h}");

    // The server drops the session (as after a network break, or an admin kicking it): the page
    // notices the dead connection and publishes again by itself, as a new session.
    let dropped = Instant::now();
    let res = server
        .http
        .delete(&resource)
        .bearer_auth(&token)
        .send()
        .await
        .expect("DELETE the session");
    assert!(
        res.status().is_success(),
        "DELETE {resource}: {}",
        res.status()
    );
    let state = wait_page(
        &server,
        &page,
        Duration::from_secs(60),
        "the page to publish again",
        |s| s["state"] == "connected" && s["resource"].is_string() && s["resource"] != resource,
    )
    .await;
    let recovered = dropped.elapsed();
    assert!(num(&state, "reconnects") >= 1, "{state:#}");
    let again = state["resource"].as_str().unwrap().to_string();
    let attached = wait_publisher(
        &server,
        "pub",
        Duration::from_secs(10),
        "the new session",
        |p| p["id"] == resource_id(&again),
    )
    .await;
    assert_eq!(attached["id"], resource_id(&again));
    let rx = watch(&server, "pub", 30).await;

    // Stop: the page deletes its session and lets go of the camera.
    exec(
        &page,
        "window.publishedTracks = document.getElementById('preview').srcObject.getTracks()",
    )
    .await;
    let stopped = Instant::now();
    exec(&page, "document.getElementById('stop').click()").await;
    let state = wait_page(&server, &page, Duration::from_secs(10), "stopped", |s| {
        s["state"] == "stopped"
    })
    .await;
    assert!(state["resource"].is_null(), "{state:#}");
    assert_eq!(num(&state, "framesSent"), 0, "{state:#}");
    let tracks: Vec<String> = eval(
        &page,
        "window.publishedTracks.map((t) => `${t.kind} ${t.readyState}`).sort()",
    )
    .await;
    assert_eq!(
        tracks,
        ["audio ended", "video ended"],
        "the camera and microphone are closed"
    );
    // The DELETE reached the server: the publisher is gone.
    wait_publisher(&server, "pub", Duration::from_secs(10), "the DELETE", |p| {
        p.is_null()
    })
    .await;
    eprintln!(
        "publish_camera_with_token: connected {connected:?} after page load, viewer decoded \
         {decoded} frames at {w}x{h} ({codecs:?}), page sent {codec}, back {recovered:?} after the server dropped it, stopped in {:?}, \
         total {:?}",
        stopped.elapsed(),
        started.elapsed()
    );
    drop(rx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_wrong_token_then_publish_token() {
    let started = Instant::now();
    let mut server = TestServer::start_with_auth(&[]).await;
    server.login().await;
    server.create(whip_process("pub")).await;
    let _log = ServerLogOnPanic(&server);

    let mut chrome = Chromium::launch_with(FAKE_DEVICES).await;
    let page = chrome
        .open(&server.url("/publish/pub?token=not-a-valid-token&autostart=1&source=pattern"))
        .await;

    // The 401 ends in the error state, with the server's reason and no session.
    let refused = wait_page(&server, &page, CONNECT, "the 401 on the page", |s| {
        s["state"] == "error" || s["state"] == "connected"
    })
    .await;
    assert_eq!(refused["state"], "error", "{refused:#}");
    let error = refused["error"].as_str().unwrap_or_default();
    assert!(error.contains("401"), "{error}");
    assert!(error.to_lowercase().contains("token"), "{error}");
    assert!(refused["resource"].is_null(), "{refused:#}");
    // It stays like that: no retry loop against a wrong token.
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(3) {
        let s = publish_state(&page).await;
        assert_eq!(s["state"], "error", "the page retried: {s:#}");
        assert_eq!(s["error"], refused["error"], "the page retried: {s:#}");
        assert_eq!(num(&s, "framesSent"), 0, "{s:#}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let status: String = eval(&page, "document.getElementById('status').className").await;
    assert_eq!(status, "error");

    // Nothing reached the process: no publisher, and a viewer is told there is no media yet.
    let none = publisher(&server, "pub").await;
    assert!(none.is_null(), "a publisher after a 401: {none:#}");
    let (rx, offer) = tokio::task::spawn_blocking(|| Receiver::new(&OfferOptions::default()))
        .await
        .unwrap();
    let (status, _, body) =
        whep::post_offer(&server.http, &server.url("/whep/pub"), None, &offer).await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "WHEP without a publisher: {body}"
    );
    drop(rx);

    // A publish token for this process, typed into the token field, and Start: the pattern goes
    // out (and nothing left over from the refused attempt is in the way).
    let (status, minted) = server
        .call(Method::POST, "/api/v3/process/pub/whip/token", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{minted}");
    let publish_token = minted["token"].as_str().expect("token").to_string();
    let opened = Instant::now();
    exec(
        &page,
        &format!(
            "document.getElementById('token').value = {}; document.getElementById('start').click()",
            serde_json::to_string(&publish_token).unwrap()
        ),
    )
    .await;
    let state = wait_page(&server, &page, CONNECT, "the pattern going out", |s| {
        s["state"] == "connected" || s["state"] == "error"
    })
    .await;
    assert_eq!(state["state"], "connected", "{state:#}");
    let connected = opened.elapsed();
    assert_eq!(state["source"], "pattern", "{state:#}");
    assert!(state["error"].is_null(), "{state:#}");
    let attached = publisher(&server, "pub").await;
    assert_eq!(
        attached["id"],
        resource_id(state["resource"].as_str().unwrap_or_default()),
        "{attached:#}"
    );

    let rx = watch(&server, "pub", 30).await;
    let state = wait_page(
        &server,
        &page,
        Duration::from_secs(10),
        "sent frames in the page's stats",
        |s| num(s, "framesSent") > 0 && num(s, "audioPacketsSent") > 0 && num(s, "width") > 0,
    )
    .await;
    assert_eq!(
        (num(&state, "width"), num(&state, "height")),
        (1280, 720),
        "{state:#}"
    );
    eprintln!(
        "publish_wrong_token_then_publish_token: pattern connected {connected:?} after Start, \
         viewer decoded {} frames at {:?}, page {} {}x{}, total {:?}",
        rx.frames_decoded(),
        rx.resolution(),
        state["codec"],
        state["width"],
        state["height"],
        started.elapsed()
    );
}

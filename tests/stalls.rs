//! A webrtcbin that never answers, against the real server: the POST fails with 504 within the
//! promise bound instead of hanging, and gives back everything it held (the negotiation permit,
//! the viewer slot, the element's threads and sockets).
//!
//! On WHIP the stuck negotiation must also hold no lock: the publisher slot is reserved (a second
//! POST gets 409) while the publisher view still answers, and the slot is free after the 504.
//!
//! The stuck element is made with the server's test-only knob `STREAMCORE_TEST_STALL_NEGOTIATION`
//! (the first N `create-answer` promises are never replied to; see `src/media/promise.rs`) and the
//! bound is shortened with `STREAMCORE_TEST_PROMISE_TIMEOUT_MS`.

mod common;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use common::media::{connect_when_ready, real_offer, shared_into, source, webrtc_process};
use common::whep::{self, OfferOptions};
use common::whip;
use common::{assert_back_to, settled_counts, ServerLogOnPanic, TestServer};

/// The promise bound the server runs with here.
const BOUND: Duration = Duration::from_millis(1500);
/// What a stalled POST may take beyond the bound: the negotiation steps before create-answer and
/// the teardown of the half-built viewer, on a loaded machine.
const SLACK: Duration = Duration::from_secs(3);

/// POSTs a fresh offer; returns the status, how long the answer took, and the body.
async fn timed_post(http: reqwest::Client, url: String) -> (StatusCode, Duration, String) {
    let (_rx, offer) = real_offer().await;
    let started = Instant::now();
    let (status, _, body) = tokio::time::timeout(
        BOUND + SLACK + SLACK,
        whep::post_offer(&http, &url, None, &offer),
    )
    .await
    .expect("the POST hung past the promise bound");
    (status, started.elapsed(), body)
}

/// 504 with the datarhei error body naming the step that hung, answered after the bound (the
/// wait really ran) and within bound + slack (it did not hang).
fn assert_stalled(status: StatusCode, elapsed: Duration, body: &str) {
    eprintln!("stalled POST: {status} after {elapsed:?}: {body}");
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    let value: Value = serde_json::from_str(body).expect("a JSON error body");
    assert_eq!(value["code"], 504, "{body}");
    assert!(value["message"].is_string(), "{body}");
    assert!(
        value["details"].to_string().contains("create-answer"),
        "{body}"
    );
    assert!(
        elapsed >= BOUND && elapsed < BOUND + SLACK,
        "answered after {elapsed:?}; the bound is {BOUND:?}"
    );
}

#[tokio::test]
async fn a_webrtcbin_that_never_answers_is_a_504_within_the_bound_and_frees_what_it_held() {
    // The server takes four negotiations per CPU at a time (`NEGOTIATIONS_PER_CPU` in
    // src/media/mod.rs); it sees the same CPUs as this test.
    let permits = 4 * std::thread::available_parallelism().map_or(2, |n| n.get());
    // One stalled POST to find the stream ready, then one per permit at once: if a stalled
    // negotiation kept its permit or its viewer slot, the viewer after them would find none left.
    let stalls = (1 + permits).to_string();
    let per_stream = permits.to_string();
    let bound_ms = BOUND.as_millis().to_string();
    let server = TestServer::start_with(&[
        ("STREAMCORE_TEST_STALL_NEGOTIATION", &stalls),
        ("STREAMCORE_TEST_PROMISE_TIMEOUT_MS", &bound_ms),
        ("STREAMCORE_WEBRTC_MAX_VIEWERS_PER_STREAM", &per_stream),
    ])
    .await;
    let _log = ServerLogOnPanic(&server);
    let pid = server.pid();
    server
        .create(webrtc_process("cam", &shared_into(&server, source())))
        .await;

    // 409 (no media yet) comes before any negotiation; the first POST that negotiates stalls.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (status, elapsed, body) = loop {
        let (status, elapsed, body) =
            timed_post(server.http.clone(), server.url("/whep/cam")).await;
        if status != StatusCode::CONFLICT || Instant::now() > deadline {
            break (status, elapsed, body);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_stalled(status, elapsed, &body);
    let baseline = settled_counts(pid, None).await;

    // As many stalled negotiations at once as there are permits: each waits its own bound.
    let mut posts = tokio::task::JoinSet::new();
    for _ in 0..permits {
        posts.spawn(timed_post(server.http.clone(), server.url("/whep/cam")));
    }
    while let Some(done) = posts.join_next().await {
        let (status, elapsed, body) = done.expect("a POST task");
        assert_stalled(status, elapsed, &body);
    }
    assert_back_to(&server, baseline).await;

    // The same server still takes a viewer, which decodes: no permit or slot was kept.
    let (rx, _session, _) = tokio::time::timeout(
        Duration::from_secs(30),
        connect_when_ready(&server, "cam", &OfferOptions::default()),
    )
    .await
    .expect("a viewer after the stalled ones got a negotiation permit");
    assert!(
        rx.wait_frames(10, Duration::from_secs(20)),
        "the viewer after the stalled ones decodes no frames"
    );
    let log = server.log.lock().unwrap().join("\n");
    assert!(!log.contains("panicked"), "a panic in the server log");
}

/// Waits (bounded) until the server logged that it stalls a negotiation.
async fn wait_stalled(server: &TestServer) {
    assert!(
        server
            .wait_logged("this promise is never answered", Duration::from_secs(20))
            .await,
        "no negotiation stalled"
    );
}

#[tokio::test]
async fn a_stuck_publisher_negotiation_holds_no_lock_and_gives_the_slot_back() {
    let bound_ms = BOUND.as_millis().to_string();
    let server = TestServer::start_with(&[
        ("STREAMCORE_TEST_STALL_NEGOTIATION", "1"),
        ("STREAMCORE_TEST_PROMISE_TIMEOUT_MS", &bound_ms),
    ])
    .await;
    let _log = ServerLogOnPanic(&server);
    server
        .create(json!({
            "id": "in",
            "input": [{"id": "in", "address": "{whip}", "options": []}],
            "output": [{"id": "null", "address": "-", "options": ["-f", "null"]}],
            "reconnect": true,
            "reconnect_delay_seconds": 1,
            "autostart": true
        }))
        .await;
    let new_publisher =
        || tokio::task::spawn_blocking(|| whip::Publisher::new(&whip::PublisherOptions::default()));
    let (_stuck, stuck_offer) = new_publisher().await.unwrap();
    let (_second, second_offer) = new_publisher().await.unwrap();
    let url = server.url("/whip/in");

    let started = Instant::now();
    let stalled = tokio::spawn({
        let (http, url) = (server.http.clone(), url.clone());
        async move {
            let response = whip::post_offer(&http, &url, None, &stuck_offer).await;
            let status = response.status();
            (status, started.elapsed(), response.text().await.unwrap())
        }
    });
    wait_stalled(&server).await;

    // While that negotiation hangs, the slot is taken (409) but nothing waits for it: the
    // publisher view and a second POST answer before the stalled POST does.
    let (status, info) = server.get("/api/v3/process/in/whip").await;
    assert_eq!(status, StatusCode::OK, "{info}");
    assert_eq!(info["publisher"], Value::Null, "{info}");
    let response = whip::post_offer(&server.http, &url, None, &second_offer).await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert!(
        !stalled.is_finished(),
        "the view and the 409 were answered only after the stalled negotiation ended"
    );

    let (status, elapsed, body) = stalled.await.unwrap();
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    let value: Value = serde_json::from_str(&body).expect("a JSON error body");
    assert_eq!(value["code"], 504, "{body}");
    assert!(
        elapsed >= BOUND && elapsed < BOUND + SLACK,
        "answered after {elapsed:?}; the bound is {BOUND:?}"
    );

    // The slot is free again: the next publisher gets in and connects.
    let published = whip::publish(
        &server.http,
        &server.base,
        "in",
        None,
        &whip::PublisherOptions::default(),
    )
    .await
    .unwrap_or_else(|(s, b)| panic!("publish after the stalled one: {s} {b}"));
    assert!(
        published.publisher.wait_connected(Duration::from_secs(10)),
        "the publisher after the stalled one never connected: {}",
        published.publisher.connection_state()
    );
}

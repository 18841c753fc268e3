//! Hostile WHEP offers against the real server and real webrtcbin viewers: the offer that made
//! gstreamer-sdp panic, offers built to make parsing slow, concurrent POSTs against a viewer cap,
//! and viewer tokens in URLs that must not reach the log.

mod common;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use common::media::{connect_when_ready, real_offer, shared_into, source, webrtc_process};
use common::whep::{self, OfferOptions};
use common::{assert_back_to, settled_counts, ServerLogOnPanic, TestServer};

/// `offer` with `extra` lines added to its first media section, right after the m= line.
fn with_media_lines(offer: &str, extra: &str) -> String {
    let at = offer.find("m=").expect("an m= line");
    let end = at + offer[at..].find("\r\n").expect("CRLF lines") + 2;
    format!("{}{extra}{}", &offer[..end], &offer[end..])
}

/// A stream that accepts viewers: the process runs and a first viewer got in (and left again).
async fn streaming_server(id: &str, env: &[(&str, &str)]) -> TestServer {
    let server = TestServer::start_with(env).await;
    server
        .create(webrtc_process(id, &shared_into(&server, source())))
        .await;
    let (rx, session, _) = connect_when_ready(&server, id, &OfferOptions::default()).await;
    let (status, _) = server
        .call(
            reqwest::Method::DELETE,
            &session_path(&server, &session),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    drop(rx);
    server
}

fn session_path(server: &TestServer, url: &str) -> String {
    url.strip_prefix(&server.base).unwrap_or(url).to_string()
}

/// POSTs an offer; returns the status, how long the answer took, and the body.
async fn timed_post(
    http: reqwest::Client,
    url: String,
    body: String,
) -> (StatusCode, Duration, String) {
    let started = Instant::now();
    let (status, _, text) = whep::post_offer(&http, &url, None, &body).await;
    (status, started.elapsed(), text)
}

/// The datarhei error body with `code`; its text must not carry internals.
fn assert_clean_error(status: StatusCode, body: &str, code: u16) {
    assert_eq!(status.as_u16(), code, "{body}");
    let value: Value = serde_json::from_str(body).expect("a JSON error body");
    assert_eq!(value["code"], code, "{body}");
    assert!(value["message"].is_string(), "{body}");
    assert!(value["details"].is_array(), "{body}");
    for internal in ["panicked", "unwrap", "Utf8Error", "GError", "0x"] {
        assert!(!body.contains(internal), "{internal:?} in {body}");
    }
}

/// The ~9 KB attribute of 2-byte characters whose key GStreamer cuts mid-character (at 8191
/// bytes); gstreamer-sdp 0.25.3 panicked reading it.
fn cut_key_attribute() -> String {
    format!("a={}:x\r\n", "é".repeat(4200))
}

#[tokio::test]
async fn the_panic_offer_is_a_400_and_600_of_them_leak_nothing() {
    let server = streaming_server("cam", &[]).await;
    let _log = ServerLogOnPanic(&server);
    let pid = server.pid();
    let baseline = settled_counts(pid, None).await;

    let (_rx, offer) = real_offer().await;
    let hostile = with_media_lines(&offer, &cut_key_attribute());
    let (status, elapsed, body) = timed_post(
        server.http.clone(),
        server.url("/whep/cam"),
        hostile.clone(),
    )
    .await;
    assert_clean_error(status, &body, 400);
    assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");

    // More than the server-wide cap (500), 16 at a time: a leaked slot per POST would leave
    // every stream full. A client of their own, dropped afterwards, so that its pooled
    // connections do not count as the server's file descriptors.
    let hostile_client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for _ in 0..(600 / 16 + 1) {
        let batch: Vec<_> = (0..16)
            .map(|_| {
                let (http, url, body) = (
                    hostile_client.clone(),
                    server.url("/whep/cam"),
                    hostile.clone(),
                );
                tokio::spawn(timed_post(http, url, body))
            })
            .collect();
        for task in batch {
            let (status, _, body) = task.await.unwrap();
            assert_clean_error(status, &body, 400);
            statuses.push(status);
        }
    }
    assert!(statuses.len() >= 600);
    drop(hostile_client);

    assert_back_to(&server, baseline).await;
    let log = server.log.lock().unwrap().join("\n");
    assert!(!log.contains("panicked"), "a panic in the server log");

    // The same offer to a WHIP endpoint, and the same line in a trickle PATCH, are refused alike.
    server
        .create(json!({
            "id": "ingest",
            "input": [{"id": "in", "address": "{whip}", "options": []}],
            "output": [{"id": "null", "address": "-", "options": ["-f", "null"]}],
            "autostart": false
        }))
        .await;
    let (status, _, body) = timed_post(
        server.http.clone(),
        server.url("/whip/ingest"),
        hostile.clone(),
    )
    .await;
    assert_clean_error(status, &body, 400);

    // A real viewer still gets in and receives media.
    let (rx, session, etag) = connect_when_ready(&server, "cam", &OfferOptions::default()).await;
    let res = server
        .http
        .patch(&session)
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/trickle-ice-sdpfrag",
        )
        .header(reqwest::header::IF_MATCH, etag)
        .body(cut_key_attribute())
        .send()
        .await
        .unwrap();
    let status = res.status();
    assert_clean_error(status, &res.text().await.unwrap(), 400);
    let decoded = tokio::task::spawn_blocking(move || rx.wait_frames(10, Duration::from_secs(15)))
        .await
        .unwrap();
    assert!(
        decoded,
        "the viewer after the hostile offers decoded no video"
    );
}

/// An offer in the shape of the report: 10,000 rtpmap/fmtp pairs (about 820 KB).
fn ten_thousand_rtpmaps(offer: &str) -> String {
    let lines: String = (0..10_000)
        .map(|i| {
            let pt = 96 + i % 32;
            format!("a=rtpmap:{pt} H264/90000\r\na=fmtp:{pt} packetization-mode=1;profile-level-id=42e01f;x={i}\r\n")
        })
        .collect();
    with_media_lines(offer, &lines)
}

/// Within the size limit, over the attribute limit: 2,000 short attributes in one section.
fn many_attributes(offer: &str) -> String {
    with_media_lines(offer, &"a=rtcp-fb:96 nack\r\n".repeat(2_000))
}

/// Largest /ping latency seen while `work` runs, pinging every 10 ms on its own connection.
async fn ping_during<F: std::future::Future>(
    server: &TestServer,
    work: F,
) -> (F::Output, Duration) {
    let http = reqwest::Client::new();
    let url = server.url("/ping");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let pinger = tokio::spawn(async move {
        let mut worst = Duration::ZERO;
        let mut pings = 0;
        while !flag.load(std::sync::atomic::Ordering::Relaxed) || pings < 5 {
            let started = Instant::now();
            let res = http.get(&url).send().await.expect("ping");
            assert_eq!(res.status(), StatusCode::OK);
            let _ = res.text().await;
            worst = worst.max(started.elapsed());
            pings += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        worst
    });
    let out = work.await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    (out, pinger.await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expensive_offers_are_refused_fast_while_ping_stays_fast() {
    let server = TestServer::start().await;
    let _log = ServerLogOnPanic(&server);
    server
        .create(webrtc_process("cam", &shared_into(&server, source())))
        .await;
    let (_rx, offer) = real_offer().await;
    let huge = ten_thousand_rtpmaps(&offer);
    assert!(huge.len() > 800_000, "{}", huge.len());
    let crowded = many_attributes(&offer);
    assert!(crowded.len() < 64 * 1024, "{}", crowded.len());

    // Several at once, as in the report (two at once stalled the server for 6 s). A server
    // whose workers block on the parse fails every round by far; a shared 2-core machine
    // sometimes stalls both processes for ~100 ms, so one clean round of three is the claim.
    let mut worst_pings = Vec::new();
    for _round in 0..3 {
        let worst_ping = offers_while_pinging(&server, &huge, &crowded).await;
        worst_pings.push(worst_ping);
        if worst_ping < Duration::from_millis(50) {
            break;
        }
    }
    assert!(
        worst_pings.iter().any(|w| *w < Duration::from_millis(50)),
        "/ping took {worst_pings:?} (worst per round) while the offers were in flight"
    );
}

/// Eight offers at once, half over the size limit and half with too many attributes, each
/// refused at once with its status; returns the worst /ping latency meanwhile.
async fn offers_while_pinging(server: &TestServer, huge: &str, crowded: &str) -> Duration {
    let (answers, worst_ping) = ping_during(server, async {
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let body = if i % 2 == 0 { huge } else { crowded }.to_string();
                let (http, url) = (server.http.clone(), server.url("/whep/cam"));
                tokio::spawn(async move {
                    let (status, elapsed, text) = timed_post(http, url, body).await;
                    (i, status, elapsed, text)
                })
            })
            .collect();
        let mut out = Vec::new();
        for task in tasks {
            out.push(task.await.unwrap());
        }
        out
    })
    .await;
    for (i, status, elapsed, body) in &answers {
        let code = if i % 2 == 0 { 413 } else { 400 };
        assert_clean_error(*status, body, code);
        assert!(
            *elapsed < Duration::from_millis(500),
            "offer {i} answered in {elapsed:?}"
        );
    }
    eprintln!(
        "answers in {:?}; worst /ping {worst_ping:?}",
        answers.iter().map(|a| a.2).collect::<Vec<_>>()
    );
    worst_ping
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_viewer_cap_is_exact_under_concurrent_posts() {
    let server =
        streaming_server("cam", &[("STREAMCORE_WEBRTC_MAX_VIEWERS_PER_STREAM", "3")]).await;
    let _log = ServerLogOnPanic(&server);
    let mut receivers = Vec::new();
    let mut offers = Vec::new();
    for _ in 0..12 {
        let (rx, offer) = real_offer().await;
        receivers.push(rx);
        offers.push(offer);
    }
    let tasks: Vec<_> = offers
        .into_iter()
        .map(|offer| {
            let (http, url) = (server.http.clone(), server.url("/whep/cam"));
            tokio::spawn(async move { whep::post_offer(&http, &url, None, &offer).await })
        })
        .collect();
    let mut created = 0;
    let mut full = 0;
    for task in tasks {
        let (status, headers, body) = task.await.unwrap();
        match status {
            StatusCode::CREATED => created += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(headers.contains_key(reqwest::header::RETRY_AFTER));
                full += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!((created, full), (3, 9));
    let (_, sessions) = server.get("/api/v3/webrtc/sessions").await;
    assert_eq!(sessions.as_array().map(Vec::len), Some(3), "{sessions}");
}

#[tokio::test]
async fn viewer_tokens_never_reach_the_log() {
    let server = TestServer::start_with(&[("STREAMCORE_LOG", "trace")]).await;
    let _log = ServerLogOnPanic(&server);
    server
        .create(webrtc_process("cam", &shared_into(&server, source())))
        .await;
    let mut private = webrtc_process("private", &shared_into(&server, source()));
    private["webrtc"]["access"] = json!("token");
    private["autostart"] = json!(false);
    server.create(private).await;

    let (_rx, offer) = real_offer().await;
    for path in [
        "/whep/cam?token=SECRETVALUE",
        "/whep/private?token=SECRETVALUE",
        "/api/v3/whep/private?x=1&token=SECRETVALUE",
    ] {
        let url = server.url(path);
        whep::post_offer(&server.http, &url, Some("SECRETHEADER"), &offer).await;
    }
    let res = server
        .http
        .get(server.url("/whep/cam?token=SECRETVALUE"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    // Wait until the request spans are in the log (so this test can see them at all).
    assert!(
        server
            .wait_logged("uri=/whep/cam?", Duration::from_secs(5))
            .await,
        "no request span logged"
    );
    let log = server.log.lock().unwrap().join("\n");
    assert!(!log.contains("SECRETVALUE"), "a query token in the log");
    assert!(log.contains("uri=/whep/cam?token=REDACTED"), "{log}");
    assert!(
        !log.contains("SECRETHEADER"),
        "an Authorization header in the log"
    );
}

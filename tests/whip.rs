//! WHIP ingest end to end: a real WebRTC publisher (GStreamer webrtcbin with x264 + Opus test
//! media) publishes into a process whose input is `{whip}`; real FFmpeg reads it, and its output
//! (a file, or the WHEP side) is checked for decodable media.
//!
//! Run with `cargo test --test whip -- --test-threads=2`.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::ice::{read_fragment, stun, udp_ipv4_address};
use common::media::{broken_offers, connect_when_ready};
use common::whep::OfferOptions;
use common::whip::{self, PublisherOptions};
use common::{settled_counts, ServerLogOnPanic, TestServer};
use gstreamer::prelude::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// A GOP far longer than any test: every key frame FFmpeg gets was asked for by the server.
const NO_GOP: u32 = 100_000;

fn publisher_options() -> PublisherOptions {
    PublisherOptions {
        key_int_max: NO_GOP,
        ..PublisherOptions::default()
    }
}

/// A process that records its WHIP input into `file` for `seconds` (stream copy).
fn recorder(id: &str, file: &Path, seconds: u32) -> Value {
    json!({
        "id": id,
        "options": ["-y", "-loglevel", "level+info"],
        "input": [{"id": "in", "address": "{whip}", "options": []}],
        "output": [{"id": "file", "address": file.to_string_lossy(),
                    "options": ["-c", "copy", "-t", seconds.to_string()]}],
        "autostart": true
    })
}

/// ffprobe's view of a file: (duration, [codec names]).
fn probe(file: &Path) -> (f64, Vec<String>) {
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_format",
            "-show_streams",
        ])
        .arg(file)
        .output()
        .expect("ffprobe");
    let v: Value = serde_json::from_slice(&out.stdout).expect("ffprobe json");
    let duration = v["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .unwrap_or(0.0);
    let codecs = v["streams"]
        .as_array()
        .map(|s| {
            s.iter()
                .filter_map(|s| s["codec_name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    (duration, codecs)
}

/// Decodes every stream of `file`: (video frames, audio frames); panics on decode errors.
fn decode(file: &Path) -> (u64, u64) {
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_frames",
            "-print_format",
            "json",
            "-show_entries",
            "stream=codec_type,nb_read_frames",
        ])
        .arg(file)
        .output()
        .expect("ffprobe");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.trim().is_empty(),
        "decode errors in {}: {stderr}",
        file.display()
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("ffprobe json");
    let frames = |kind: &str| {
        v["streams"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["codec_type"] == kind)
            .filter_map(|s| s["nb_read_frames"].as_str()?.parse::<u64>().ok())
            .sum()
    };
    (frames("video"), frames("audio"))
}

#[tokio::test]
async fn published_media_is_recorded_decodable_and_complete() {
    let server = TestServer::start().await;
    let _log = ServerLogOnPanic(&server);
    let file = server.data_dir.join("public/rec.mkv");
    server.create(recorder("rec", &file, 4)).await;
    let published = publish_connected(&server, "rec").await;
    // FFmpeg stops by itself after 4 s of media.
    let state = server
        .wait_state("rec", Duration::from_secs(30), |s| s["exec"] == "finished")
        .await;
    assert!(
        published.publisher.key_unit_requests() > 0,
        "the server never asked for a key frame"
    );
    let (duration, codecs) = probe(&file);
    assert!(
        codecs.contains(&"h264".to_string()) && codecs.contains(&"opus".to_string()),
        "{codecs:?}; state {state}"
    );
    assert!((3.5..=4.6).contains(&duration), "duration {duration}");
    let (video, audio) = decode(&file);
    // 4 s at 30 fps (125 seen). The server asks for a key frame as soon as the publisher's video
    // arrives; waiting for the periodic request instead would lose up to 2 s (60 frames).
    assert!(video >= 110, "only {video} video frames decoded");
    assert!(audio >= 150, "only {audio} Opus frames decoded");
}

/// A process that reads its WHIP input and serves it over WHEP (nothing else to do).
fn relay(id: &str) -> Value {
    json!({
        "id": id,
        "options": ["-loglevel", "level+info"],
        "input": [{"id": "in", "address": "{whip}", "options": []}],
        "output": [{"id": "null", "address": "-", "options": ["-f", "null"]}],
        "reconnect": true,
        "reconnect_delay_seconds": 1,
        "autostart": true,
        "webrtc": {"enabled": true}
    })
}

/// Publishes the default test media into `id` (auth off) and waits until it is connected.
async fn publish_connected(server: &TestServer, id: &str) -> whip::Published {
    let published = whip::publish(&server.http, &server.base, id, None, &publisher_options())
        .await
        .unwrap_or_else(|(s, b)| panic!("publish to {id}: {s} {b}"));
    assert!(
        published.publisher.wait_connected(Duration::from_secs(10)),
        "the publisher to {id} never connected: {}",
        published.publisher.connection_state()
    );
    published
}

/// Waits until FFmpeg has processed more than `frames` frames of its input.
async fn wait_ffmpeg_frames(server: &TestServer, id: &str, frames: u64) {
    server
        .wait_state(id, Duration::from_secs(20), |s| {
            s["progress"]["frame"].as_u64().unwrap_or(0) > frames
        })
        .await;
}

/// When the current FFmpeg run of a process started (the report's `created_at`): it changes with
/// every new run (the history length would not: it is capped).
async fn run_started(server: &TestServer, id: &str) -> i64 {
    let report = server.get(&format!("/api/v3/process/{id}/report")).await.1;
    report["created_at"].as_i64().unwrap_or(0)
}

/// Frames FFmpeg has processed so far (its progress), or 0.
async fn ffmpeg_frames(server: &TestServer, id: &str) -> u64 {
    let state = server.state(id).await;
    state["progress"]["frame"].as_u64().unwrap_or(0)
}

/// The whole chain, with an OBS-style offer (no candidates at all: the server learns the
/// publisher from its connectivity checks): WHIP publisher → FFmpeg → WHEP viewer.
#[tokio::test]
async fn candidate_less_publisher_reaches_a_whep_viewer() {
    let server = TestServer::start().await;
    let _log = ServerLogOnPanic(&server);
    server.create(relay("chain")).await;
    let opts = PublisherOptions {
        strip_candidates: true,
        width: 320,
        height: 240,
        ..publisher_options()
    };
    let published = whip::publish(&server.http, &server.base, "chain", None, &opts)
        .await
        .unwrap_or_else(|(s, b)| panic!("publish: {s} {b}"));
    assert!(
        published.publisher.wait_connected(Duration::from_secs(10)),
        "a candidate-less publisher never connected: {}",
        published.publisher.connection_state()
    );
    let (viewer, _resource, _etag) =
        connect_when_ready(&server, "chain", &OfferOptions::default()).await;
    assert!(
        viewer.wait_frames(20, Duration::from_secs(20)),
        "the WHEP viewer decoded {} frames",
        viewer.frames_decoded()
    );
    assert_eq!(viewer.resolution(), Some((320, 240)));
    let deadline = Instant::now() + Duration::from_secs(10);
    while viewer.audio_samples() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(viewer.audio_samples() > 0, "no audio reached the viewer");
    // The admin view names the publisher and what it sends.
    let (status, info) = server.get("/api/v3/process/chain/whip").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(info["publisher"]["state"], "connected", "{info}");
    let mut codecs: Vec<&str> = info["publisher"]["codecs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    codecs.sort();
    assert_eq!(codecs, ["H264", "OPUS"], "{info}");
    let metrics = server.get_text("/metrics").await;
    for line in [
        "streamcore_webrtc_publisher_connected{stream=\"chain\"} 1",
        "streamcore_whip_requests_total{method=\"POST\",route=\"/whip/{id}\",status=\"201\"} 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line} in:\n{metrics}"
        );
    }
}

/// A VP8 publisher: the SDP FFmpeg reads follows the negotiation (FFmpeg is restarted to read
/// it), and the recording is VP8.
#[tokio::test]
async fn vp8_publisher_changes_what_ffmpeg_reads() {
    let server = TestServer::start().await;
    let _log = ServerLogOnPanic(&server);
    let file = server.data_dir.join("public/vp8.mkv");
    let mut process = recorder("vp8", &file, 3);
    process["reconnect"] = json!(false);
    server.create(process).await;
    let opts = PublisherOptions {
        video: Some("VP8"),
        ..publisher_options()
    };
    let published = whip::publish(&server.http, &server.base, "vp8", None, &opts)
        .await
        .unwrap_or_else(|(s, b)| panic!("publish: {s} {b}"));
    assert!(published.publisher.wait_connected(Duration::from_secs(10)));
    let info = server.get("/api/v3/process/vp8/whip").await.1;
    let sdp = std::fs::read_to_string(info["sdp"].as_str().unwrap()).unwrap();
    assert!(sdp.contains("VP8/90000"), "{sdp}");
    server
        .wait_state("vp8", Duration::from_secs(30), |s| s["exec"] == "finished")
        .await;
    let (_, codecs) = probe(&file);
    assert!(codecs.contains(&"vp8".to_string()), "{codecs:?}");
    let (video, _) = decode(&file);
    assert!(video >= 60, "only {video} VP8 frames decoded");
}

/// Every refusal the issue lists, with the exact status, and nothing left behind by any of them.
#[tokio::test]
async fn refusals_have_their_statuses() {
    let mut server = TestServer::start_with_auth(&[]).await;
    server.login().await;
    let _log = ServerLogOnPanic(&server);
    let admin = server.token.clone().unwrap();
    server.create(relay("guarded")).await;
    server
        .create(
            json!({"id": "plain", "input": [{"address": "testsrc", "options": ["-f", "lavfi"]}],
                        "output": [{"address": "-", "options": ["-f", "null"]}]}),
        )
        .await;
    let url = server.url("/whip/guarded");
    let (probe_publisher, offer) =
        tokio::task::spawn_blocking(|| whip::Publisher::new(&PublisherOptions::default()))
            .await
            .unwrap();

    // 401 without a token, with a wrong one, with a viewer token; WWW-Authenticate: Bearer.
    let viewer_token = server
        .call(
            reqwest::Method::POST,
            "/api/v3/process/guarded/webrtc/token",
            None,
        )
        .await
        .1["token"]
        .as_str()
        .unwrap()
        .to_string();
    for token in [None, Some("not-a-jwt"), Some(viewer_token.as_str())] {
        let res = whip::post_offer(&server.http, &url, token, &offer).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "token {token:?}");
        assert!(res
            .headers()
            .get("www-authenticate")
            .is_some_and(|v| v.to_str().unwrap().starts_with("Bearer")));
    }
    // A publish token for another process opens nothing here.
    let other = server
        .call(
            reqwest::Method::POST,
            "/api/v3/process/guarded/whip/token",
            None,
        )
        .await
        .1;
    assert!(other["url"] == "/whip/guarded", "{other}");
    // 404: unknown process, and a process without a {whip} input.
    for id in ["nope", "plain"] {
        let res = whip::post_offer(
            &server.http,
            &server.url(&format!("/whip/{id}")),
            Some(&admin),
            &offer,
        )
        .await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{id}");
    }
    // 415: wrong content type.
    let res = server
        .http
        .post(&url)
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body(offer.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // 400: malformed SDP; 422: two video tracks; 406: nothing the server takes.
    let two_videos = offer.clone() + &offer[offer.find("m=video").unwrap()..];
    let vp9 = offer
        .replace("H264/90000", "VP9/90000")
        .replace("packetization-mode=1;", "");
    for (body, expected) in [
        (
            "v=0\r\nthis is not sdp".to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            offer.replace("a=ice-ufrag", "a=x-ufrag"),
            StatusCode::BAD_REQUEST,
        ),
        (two_videos, StatusCode::UNPROCESSABLE_ENTITY),
        (vp9, StatusCode::NOT_ACCEPTABLE),
    ] {
        let res = whip::post_offer(&server.http, &url, Some(&admin), &body).await;
        let status = res.status();
        let json: Value = res.json().await.unwrap_or(Value::Null);
        assert_eq!(status, expected, "{json}");
        assert!(json["message"].is_string(), "error bodies are JSON: {json}");
    }
    drop(probe_publisher);
    let (status, info) = server.get("/api/v3/process/guarded/whip").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        info["publisher"].is_null(),
        "a refusal left a publisher: {info}"
    );

    // A publish token publishes; a second publisher gets 409 while the first is live.
    let publish_token = other["token"].as_str().unwrap().to_string();
    let first = whip::publish(
        &server.http,
        &server.base,
        "guarded",
        Some(&publish_token),
        &publisher_options(),
    )
    .await
    .unwrap_or_else(|(s, b)| panic!("publish with a publish token: {s} {b}"));
    assert!(first.publisher.wait_connected(Duration::from_secs(10)));
    match whip::publish(
        &server.http,
        &server.base,
        "guarded",
        Some(&admin),
        &publisher_options(),
    )
    .await
    {
        Err((status, body)) => assert_eq!(status, StatusCode::CONFLICT, "{body}"),
        Ok(_) => panic!("a second publisher was taken while the first is live"),
    }
    assert!(
        first.publisher.wait_connected(Duration::from_secs(1)),
        "the first publisher was disturbed"
    );

    // OPTIONS and GET on the endpoint; GET on the session.
    let res = server
        .http
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", "http://example.com")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    assert_eq!(res.headers()["accept-post"], "application/sdp");
    assert!(res.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .contains("Location"));
    assert_eq!(
        server.http.get(&url).send().await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        server
            .http
            .get(&first.location)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NO_CONTENT
    );

    // PATCH: 415, 428 without If-Match, 412 with a stale tag, 204 for a trickled candidate.
    let etag = first.etag.clone().expect("201 carries an ETag");
    let (cand_mline, candidate) = first.publisher.local_candidates()[0].clone();
    let (ufrag, pwd) = first.publisher.ice_ufrag_pwd();
    let fragment = format!(
        "a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:{cand_mline}\r\na={candidate}\r\n"
    );
    let patch = |content_type: &'static str, if_match: Option<String>| {
        let mut req = server
            .http
            .patch(&first.location)
            .header("content-type", content_type)
            .body(fragment.clone());
        if let Some(tag) = if_match {
            req = req.header("if-match", tag);
        }
        req.send()
    };
    assert_eq!(
        patch("text/plain", Some(etag.clone()))
            .await
            .unwrap()
            .status(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    assert_eq!(
        patch("application/trickle-ice-sdpfrag", None)
            .await
            .unwrap()
            .status(),
        StatusCode::PRECONDITION_REQUIRED
    );
    assert_eq!(
        patch("application/trickle-ice-sdpfrag", Some("\"stale\"".into()))
            .await
            .unwrap()
            .status(),
        StatusCode::PRECONDITION_FAILED
    );
    assert_eq!(
        patch("application/trickle-ice-sdpfrag", Some(etag))
            .await
            .unwrap()
            .status(),
        StatusCode::NO_CONTENT
    );

    // DELETE: 200, twice; the slot is free again.
    for _ in 0..2 {
        assert_eq!(
            server
                .http
                .delete(&first.location)
                .send()
                .await
                .unwrap()
                .status(),
            StatusCode::OK
        );
    }
    assert_eq!(
        server
            .http
            .get(&first.location)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
    let second = whip::publish(
        &server.http,
        &server.base,
        "guarded",
        Some(&admin),
        &publisher_options(),
    )
    .await
    .unwrap_or_else(|(s, b)| panic!("publish after DELETE: {s} {b}"));
    assert!(second.publisher.wait_connected(Duration::from_secs(10)));
}

/// A publisher that leaves: FFmpeg's input stalls, the read timeout ends FFmpeg and reconnect
/// starts it again; a new publisher makes it run again, from a key frame the server asked for.
/// Stop tears the session down.
#[tokio::test]
async fn ffmpeg_recovers_when_the_publisher_comes_back() {
    let server =
        TestServer::start_with(&[("STREAMCORE_WEBRTC_WHIP_READ_TIMEOUT_SECONDS", "2")]).await;
    let _log = ServerLogOnPanic(&server);
    server.create(relay("again")).await;
    let first = publish_connected(&server, "again").await;
    wait_ffmpeg_frames(&server, "again", 30).await;
    let run_before = run_started(&server, "again").await;
    // Periodic key-frame requests (every 2 s by default) keep coming while it publishes.
    let asked = first.publisher.key_unit_requests();
    assert!(
        first
            .publisher
            .wait_for(Duration::from_secs(6), |p| p.key_unit_requests()
                >= asked + 2),
        "key-frame requests stopped at {}",
        first.publisher.key_unit_requests()
    );
    assert_eq!(
        server
            .http
            .delete(&first.location)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    drop(first);
    // Without packets FFmpeg ends after the read timeout and is started again.
    let deadline = Instant::now() + Duration::from_secs(20);
    while run_started(&server, "again").await == run_before && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_ne!(
        run_started(&server, "again").await,
        run_before,
        "FFmpeg did not end without its input"
    );
    server
        .wait_state("again", Duration::from_secs(20), |s| s["exec"] == "running")
        .await;
    let second = publish_connected(&server, "again").await;
    let before = ffmpeg_frames(&server, "again").await;
    server
        .wait_state("again", Duration::from_secs(20), |s| {
            s["progress"]["frame"].as_u64().unwrap_or(0) > before + 30
        })
        .await;
    // Stop closes the session.
    assert_eq!(server.command("again", "stop").await.0, StatusCode::OK);
    let info = server.get("/api/v3/process/again/whip").await.1;
    assert!(info["publisher"].is_null(), "{info}");
    assert_eq!(
        server
            .http
            .get(&second.location)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
}

/// 20 publish/unpublish cycles end with the server's threads and file descriptors back at the
/// baseline.
#[tokio::test]
async fn publish_cycles_leak_no_threads_or_fds() {
    let server = TestServer::start().await;
    let _log = ServerLogOnPanic(&server);
    server.create(relay("cycles")).await;
    let cycle = |n: usize| {
        let server = &server;
        async move {
            let published = whip::publish(
                &server.http,
                &server.base,
                "cycles",
                None,
                &publisher_options(),
            )
            .await
            .unwrap_or_else(|(s, b)| panic!("cycle {n}: {s} {b}"));
            assert!(
                published.publisher.wait_connected(Duration::from_secs(10)),
                "cycle {n}: not connected"
            );
            assert_eq!(
                server
                    .http
                    .delete(&published.location)
                    .send()
                    .await
                    .unwrap()
                    .status(),
                StatusCode::OK
            );
        }
    };
    // Warm up: the first publisher creates process-wide things (DTLS context, thread pools).
    cycle(0).await;
    let baseline = settled_counts(server.pid(), None).await;
    for n in 1..=20 {
        cycle(n).await;
    }
    let after = settled_counts(server.pid(), Some(baseline)).await;
    common::assert_no_growth(server.pid(), after, baseline, "20 publish cycles");
}

/// With the periodic requests off, a restarted FFmpeg still gets a key frame asked for: the
/// server sends PLI/FIR when FFmpeg starts.
#[tokio::test]
async fn ffmpeg_restart_asks_the_publisher_for_a_key_frame() {
    let server =
        TestServer::start_with(&[("STREAMCORE_WEBRTC_WHIP_KEY_FRAME_INTERVAL_MS", "0")]).await;
    let _log = ServerLogOnPanic(&server);
    server.create(relay("restart")).await;
    let published = publish_connected(&server, "restart").await;
    wait_ffmpeg_frames(&server, "restart", 10).await;
    let asked = published.publisher.key_unit_requests();
    assert_eq!(server.command("restart", "restart").await.0, StatusCode::OK);
    assert!(
        published
            .publisher
            .wait_for(Duration::from_secs(5), |p| p.key_unit_requests() > asked),
        "no key-frame request after the FFmpeg restart"
    );
    // And the restarted FFmpeg decodes (it starts from that key frame).
    server
        .wait_state("restart", Duration::from_secs(20), |s| {
            s["exec"] == "running" && s["progress"]["frame"].as_u64().unwrap_or(0) > 10
        })
        .await;
}

/// Browsers hide their addresses behind mDNS names (`<uuid>.local`) that the server cannot
/// resolve: the POST must not wait on them, and the connection comes up peer-reflexively.
#[tokio::test]
async fn mdns_candidates_neither_crash_nor_stall() {
    let server = TestServer::start().await;
    let _log = ServerLogOnPanic(&server);
    server.create(relay("mdns")).await;
    let (publisher, offer) =
        tokio::task::spawn_blocking(|| whip::Publisher::new(&publisher_options()))
            .await
            .unwrap();
    let mut n = 0;
    let offer: String = offer
        .split("\r\n")
        .map(|line| {
            let Some(rest) = line.strip_prefix("a=candidate:") else {
                return line.to_string();
            };
            let mut fields: Vec<String> = rest.split(' ').map(str::to_string).collect();
            n += 1;
            fields[4] = format!("2f9c{n:04}-7a1e-4c1b-9d3e-5b1f0c2a6e7d.local");
            format!("a=candidate:{}", fields.join(" "))
        })
        .collect::<Vec<_>>()
        .join("\r\n");
    assert!(n > 0, "the publisher offered no candidates to disguise");
    let started = Instant::now();
    let res = whip::post_offer(&server.http, &server.url("/whip/mdns"), None, &offer).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the POST took {:?}",
        started.elapsed()
    );
    let answer = res.text().await.unwrap();
    let publisher = tokio::task::spawn_blocking(move || {
        publisher.set_answer(&answer).unwrap();
        publisher
    })
    .await
    .unwrap();
    assert!(
        publisher.wait_connected(Duration::from_secs(10)),
        "never connected: {}",
        publisher.connection_state()
    );
    wait_ffmpeg_frames(&server, "mdns", 10).await;
}

/// A publisher that vanishes without a DELETE (its network gone, the app killed) holds the
/// process only until its consent expires: then a new publisher is taken.
#[tokio::test]
async fn vanished_publisher_is_replaced() {
    let server =
        TestServer::start_with(&[("STREAMCORE_WEBRTC_CONSENT_TIMEOUT_SECONDS", "3")]).await;
    let _log = ServerLogOnPanic(&server);
    server.create(relay("gone")).await;
    let first = publish_connected(&server, "gone").await;
    let vanished = Instant::now();
    drop(first.publisher);
    let deadline = Instant::now() + Duration::from_secs(15);
    let second = loop {
        match whip::publish(
            &server.http,
            &server.base,
            "gone",
            None,
            &publisher_options(),
        )
        .await
        {
            Ok(published) => break published,
            Err((StatusCode::CONFLICT, _)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Err((status, body)) => panic!("after {:?}: {status} {body}", vanished.elapsed()),
        }
    };
    assert!(second.publisher.wait_connected(Duration::from_secs(10)));
    // The old session URL is gone.
    assert_eq!(
        server
            .http
            .get(&first.location)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
}

/// Another program takes a WHIP input's ports in the moment between the server releasing them and
/// FFmpeg binding them: FFmpeg's run fails, and the input moves to free ports (a new SDP file
/// for the next run, the publisher's packets following) instead of failing forever.
#[tokio::test]
async fn taken_ports_move_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let steal = dir.path().join("steal");
    let stealer_pid = dir.path().join("stealer.pid");
    // Stands in for FFmpeg: the first run starts "another program" that binds the four ports
    // named in the SDP file and keeps them, then fails; later runs are the real FFmpeg.
    let script = format!(
        r#"#!/bin/sh
if [ -e {steal} ]; then
  rm -f {steal}
  sdp=""; for a in "$@"; do case "$a" in *.sdp) sdp="$a";; esac; done
  port=$(sed -n 's/^m=video \([0-9]*\) .*/\1/p' "$sdp")
  python3 -c 'import socket,sys,time
s=[socket.socket(socket.AF_INET,socket.SOCK_DGRAM) for _ in range(4)]
[x.bind(("127.0.0.1",int(sys.argv[1])+i)) for i,x in enumerate(s)]
time.sleep(600)' "$port" &
  echo $! > {pid}
  sleep 0.5
  exit 1
fi
exec ffmpeg "$@"
"#,
        steal = steal.display(),
        pid = stealer_pid.display()
    );
    std::fs::write(&steal, "").unwrap();
    let server = TestServer::start_with_ffmpeg_script(&dir.path().join("ffmpeg"), &script).await;
    let _log = ServerLogOnPanic(&server);
    struct Kill(std::path::PathBuf);
    impl Drop for Kill {
        fn drop(&mut self) {
            if let Some(pid) = std::fs::read_to_string(&self.0)
                .ok()
                .and_then(|p| p.trim().parse::<i32>().ok())
            {
                let _ = std::process::Command::new("kill")
                    .arg(pid.to_string())
                    .status();
            }
        }
    }
    let _stealer = Kill(stealer_pid.clone());
    let mut process = relay("moved");
    process["webrtc"]["enabled"] = json!(false);
    server.create(process).await;
    let first_ports = server.get("/api/v3/process/moved/whip").await.1["video_port"].clone();
    // The first run fails; the input moves; the reconnect runs the real FFmpeg.
    let deadline = Instant::now() + Duration::from_secs(20);
    let info = loop {
        let info = server.get("/api/v3/process/moved/whip").await.1;
        if info["video_port"] != first_ports || Instant::now() > deadline {
            break info;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_ne!(
        info["video_port"], first_ports,
        "the input did not move: {info}"
    );
    let sdp = std::fs::read_to_string(info["sdp"].as_str().unwrap()).unwrap();
    assert!(
        sdp.contains(&format!("m=video {} ", info["video_port"])),
        "{sdp}"
    );
    let _published = publish_connected(&server, "moved").await;
    wait_ffmpeg_frames(&server, "moved", 30).await;
}

/// Malformed-but-parseable publisher offers (a real Chromium 156 offer made sendonly, then broken
/// one way each) get a status each, never take the server down, and leave it publishing.
#[tokio::test]
async fn hostile_offers_never_take_the_server_down() {
    let server = TestServer::start().await;
    let _log = ServerLogOnPanic(&server);
    server.create(relay("hostile")).await;
    let offer = std::fs::read_to_string("tests/fixtures/chrome156-offer.sdp")
        .unwrap()
        .replace("a=recvonly", "a=sendonly");
    let mut cases = vec![("chrome as it is", offer.clone())];
    cases.extend(broken_offers(&offer, "sendonly", "recvonly"));
    let url = server.url("/whip/hostile");
    for (name, sdp) in cases {
        let res = whip::post_offer(&server.http, &url, None, &sdp).await;
        let status = res.status();
        let location = res
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(|l| server.url(l));
        let body = res.text().await.unwrap_or_default();
        assert!(
            status.is_client_error() || status == StatusCode::CREATED,
            "{name}: {status} {body}"
        );
        if name == "chrome as it is" {
            assert_eq!(status, StatusCode::CREATED, "{body}");
        }
        // A taken offer will never connect: free the slot for the next case.
        if let Some(location) = location {
            let deleted = server.http.delete(&location).send().await.unwrap();
            assert_eq!(deleted.status(), StatusCode::OK);
        }
        assert_eq!(
            server.get("/ping").await.0,
            StatusCode::OK,
            "server gone after {name}"
        );
    }
    let _published = publish_connected(&server, "hostile").await;
    wait_ffmpeg_frames(&server, "hostile", 30).await;
}

/// ICE restart on a WHIP session: PATCH with `If-Match: *` and new credentials answers 200 with
/// the server's new credentials and candidates and a new ETag, and the server's ICE agent takes
/// only the new credentials from then on.
#[tokio::test]
async fn ice_restart_renews_the_publishers_session() {
    let server = TestServer::start().await;
    let _log = ServerLogOnPanic(&server);
    server.create(relay("restart-ice")).await;
    let published = publish_connected(&server, "restart-ice").await;
    let old_etag = published.etag.clone().unwrap();
    let answer = published
        .publisher
        .webrtcbin()
        .property::<Option<gstreamer_webrtc::WebRTCSessionDescription>>("remote-description")
        .unwrap()
        .sdp()
        .as_text()
        .unwrap();
    let (old_ufrag, old_pwd, _) = read_fragment(&answer[answer.find("m=").unwrap()..]);
    let fragment = "a=ice-ufrag:pubNEWufrag\r\na=ice-pwd:pubNEWpassword0123456789ab\r\n\
                    m=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n";
    let res = server
        .http
        .patch(&published.location)
        .header("content-type", "application/trickle-ice-sdpfrag")
        .header("if-match", "*")
        .body(fragment)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let etag = res.headers()["etag"].to_str().unwrap().to_string();
    let body = res.text().await.unwrap();
    let (ufrag, pwd, candidates) = read_fragment(&body);
    assert_ne!(etag, old_etag);
    assert_eq!(etag, format!("\"{ufrag}\""));
    assert_ne!((&ufrag, &pwd), (&old_ufrag, &old_pwd));
    let target = candidates
        .iter()
        .find_map(|(_, c)| udp_ipv4_address(c))
        .expect("an IPv4 UDP server candidate");
    assert_eq!(
        stun::check(target, &format!("{ufrag}:pubNEWufrag"), &pwd),
        Some(stun::BINDING_SUCCESS),
        "new credentials refused by {target}"
    );
    assert_ne!(
        stun::check(target, &format!("{old_ufrag}:pubNEWufrag"), &old_pwd),
        Some(stun::BINDING_SUCCESS),
        "old credentials still accepted by {target}"
    );
    // The old tag is stale now.
    let stale = server
        .http
        .patch(&published.location)
        .header("content-type", "application/trickle-ice-sdpfrag")
        .header("if-match", old_etag)
        .body(fragment)
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED);
}

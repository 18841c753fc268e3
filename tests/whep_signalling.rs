//! WHEP signalling against the real server and a real webrtcbin viewer: every error status of the
//! contract, CORS/discovery headers, ICE server links, trickle and restart over PATCH, viewer
//! tokens, the sessions API and the Prometheus families.
//!
//! Each test runs its own server with its own RTP port range (tests run in parallel, and other
//! test binaries may be running on the same machine).

mod common;
use common::whep;

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use gstreamer::prelude::*;
use gstreamer_sdp as gst_sdp;
use gstreamer_webrtc as gst_webrtc;
use reqwest::header::{self, HeaderMap};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use common::ice::{read_fragment, stun, udp_ipv4_address};
use common::TestServer;
use whep::OfferOptions;

const SDPFRAG: &str = "application/trickle-ice-sdpfrag";

/// The shared test source, encoded once per test binary.
fn source() -> &'static Path {
    static SOURCE: OnceLock<PathBuf> = OnceLock::new();
    SOURCE.get_or_init(|| common::media::make_source(&tempfile::tempdir().expect("tempdir").keep()))
}

fn webrtc_process(id: &str, access: &str) -> Value {
    json!({
        "id": id,
        // Relative to the data directory, where start() links the shared source.
        "input": [{"id": "in", "address": "source.mkv", "options": ["-re", "-stream_loop", "-1"]}],
        "output": [{"id": "null", "address": "-", "options": ["-f", "null"]}],
        "reconnect": true,
        "reconnect_delay_seconds": 1,
        "webrtc": {"enabled": true, "access": access}
    })
}

/// A WebRTC process that never runs, so it never has media (409).
fn idle_process(id: &str, access: &str) -> Value {
    let mut config = webrtc_process(id, access);
    config["autostart"] = json!(false);
    config
}

/// Starts a server whose RTP legs use a range of their own (`slot` 0..).
async fn start(slot: u16, auth: bool, extra: &[(&str, &str)]) -> TestServer {
    let min = (46000 + slot * 20).to_string();
    let max = (46000 + slot * 20 + 19).to_string();
    let mut env = vec![
        ("STREAMCORE_WEBRTC_RTP_PORT_MIN", min.as_str()),
        ("STREAMCORE_WEBRTC_RTP_PORT_MAX", max.as_str()),
    ];
    env.extend_from_slice(extra);
    let server = if auth {
        TestServer::start_with_auth(&env).await
    } else {
        TestServer::start_with(&env).await
    };
    // Processes read only inside their data directory (docs/security.md).
    let linked = server.data_dir.join("source.mkv");
    if std::fs::hard_link(source(), &linked).is_err() {
        std::fs::copy(source(), &linked).expect("copy the source into the data directory");
    }
    server
}

/// A fresh client and its offer (gathering blocks, so it runs off the runtime).
async fn receiver(opts: &OfferOptions) -> (whep::Receiver, String) {
    let o = opts.clone();
    tokio::task::spawn_blocking(move || whep::Receiver::new(&o))
        .await
        .unwrap()
}

/// POSTs fresh offers until the answer is not 409 (WHEP's "no media yet"), and returns the
/// receiver with the final status, headers and body.
async fn post_when_ready(
    server: &TestServer,
    path: &str,
    token: Option<&str>,
    opts: &OfferOptions,
) -> (whep::Receiver, StatusCode, HeaderMap, String) {
    let url = server.url(path);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (rx, offer) = receiver(opts).await;
        let (status, headers, body) = whep::post_offer(&server.http, &url, token, &offer).await;
        if status == StatusCode::CONFLICT && Instant::now() < deadline {
            assert!(retry_after(&headers) >= 1, "409 carries Retry-After");
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        return (rx, status, headers, body);
    }
}

/// Like [`post_when_ready`], expecting 201; applies the answer. Returns the receiver, the absolute
/// session URL, the ETag and the answer.
async fn connect(
    server: &TestServer,
    id: &str,
    token: Option<&str>,
    opts: &OfferOptions,
) -> (whep::Receiver, String, String, String) {
    let (rx, status, headers, body) =
        post_when_ready(server, &format!("/whep/{id}"), token, opts).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let location = header_str(&headers, header::LOCATION);
    let etag = header_str(&headers, header::ETAG);
    rx.set_answer(&body).unwrap();
    (rx, server.url(&location), etag, body)
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> String {
    headers
        .get(&name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {name} header in {headers:?}"))
        .to_string()
}

fn retry_after(headers: &HeaderMap) -> u64 {
    headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn wait_frames(rx: &whep::Receiver, n: u64, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    while rx.frames_decoded() < n {
        if Instant::now() > end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

fn assert_decodes(rx: &whep::Receiver, server: &TestServer, frames: u64, ok: bool) {
    if !ok {
        eprintln!("{}", server.log.lock().unwrap().join("\n"));
    }
    assert!(
        ok,
        "decoded {} frames (wanted {frames}); state {}; errors {:?}",
        rx.frames_decoded(),
        rx.connection_state(),
        rx.errors()
    );
}

/// Sends a raw request and returns status, headers and body text.
async fn send(req: reqwest::RequestBuilder) -> (StatusCode, HeaderMap, String) {
    let res = req.send().await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    (status, headers, res.text().await.unwrap_or_default())
}

fn assert_status(got: &(StatusCode, HeaderMap, String), want: u16) {
    assert_eq!(got.0.as_u16(), want, "headers {:?} body {}", got.1, got.2);
}

#[tokio::test]
async fn post_errors_discovery_and_cors() {
    let server = start(0, false, &[]).await;
    server.create(webrtc_process("cam", "public")).await;
    server.create(idle_process("idle", "public")).await;
    let mut plain = common::testsrc_process("plain");
    plain["autostart"] = json!(false);
    server.create(plain).await;
    let (offer_rx, offer) = receiver(&OfferOptions::default()).await;
    let post = |path: &str, content_type: &str, body: String| {
        server
            .http
            .post(server.url(path))
            .header(header::CONTENT_TYPE, content_type)
            .body(body)
    };

    // The public list has the WebRTC processes only.
    let (status, list) = server.get("/whep").await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["cam", "idle"]);
    assert_eq!(list[0]["access"], "public");
    assert_eq!(list[0]["player"], "/player/cam");
    assert!(list[0]["reference"].is_string());

    // Discovery: HEAD and GET answer 200 application/sdp without a body.
    for method in [Method::HEAD, Method::GET] {
        let got = send(server.http.request(method.clone(), server.url("/whep/cam"))).await;
        assert_status(&got, 200);
        assert_eq!(got.1[header::CONTENT_TYPE], "application/sdp", "{method}");
        assert!(got.2.is_empty(), "{method} has a body");
        let got = send(server.http.request(method, server.url("/whep/nope"))).await;
        assert_status(&got, 404);
    }

    // CORS preflight and plain OPTIONS on the endpoint.
    let preflight = send(
        server
            .http
            .request(Method::OPTIONS, server.url("/whep/cam"))
            .header(header::ORIGIN, "https://player.example")
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .header(
                header::ACCESS_CONTROL_REQUEST_HEADERS,
                "authorization, content-type",
            ),
    )
    .await;
    assert!(preflight.0.is_success(), "{preflight:?}");
    let plain_options = send(
        server
            .http
            .request(Method::OPTIONS, server.url("/api/v3/whep/cam")),
    )
    .await;
    assert!(plain_options.0.is_success(), "{plain_options:?}");
    for (_, h, _) in [&preflight, &plain_options] {
        assert_eq!(h["accept-post"], "application/sdp");
        assert_eq!(
            h[header::ACCESS_CONTROL_ALLOW_METHODS],
            "OPTIONS, GET, HEAD, POST, PATCH, DELETE"
        );
        assert_eq!(
            h[header::ACCESS_CONTROL_ALLOW_HEADERS],
            "Authorization, Content-Type, If-Match"
        );
        assert_eq!(
            h[header::ACCESS_CONTROL_EXPOSE_HEADERS],
            "Location, ETag, Link"
        );
    }
    assert_eq!(preflight.1[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");

    // Errors that need no media.
    assert_status(
        &send(post("/whep/cam", "text/plain", offer.clone())).await,
        415,
    );
    assert_status(
        &send(post("/whep/nope", "application/sdp", offer.clone())).await,
        404,
    );
    assert_status(
        &send(post("/whep/plain", "application/sdp", offer.clone())).await,
        404,
    );
    assert_status(
        &send(post("/whep/cam", "application/sdp", "hello".into())).await,
        400,
    );
    let (_two, two_offer) = receiver(&OfferOptions {
        two_video_tracks: true,
        ..OfferOptions::default()
    })
    .await;
    assert_status(
        &send(post("/whep/cam", "application/sdp", two_offer)).await,
        422,
    );
    let idle = send(post("/whep/idle", "application/sdp", offer.clone())).await;
    assert_status(&idle, 409);
    assert!(retry_after(&idle.1) >= 1, "409 without Retry-After");
    drop(offer_rx);

    // A working POST: 201 with Location, ETag, and the headers a browser needs to read them.
    let (rx, status, headers, answer) =
        post_when_ready(&server, "/api/v3/whep/cam", None, &OfferOptions::default()).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert_eq!(headers[header::CONTENT_TYPE], "application/sdp");
    let location = header_str(&headers, header::LOCATION);
    assert!(location.starts_with("/api/v3/whep/cam/"), "{location}");
    let etag = header_str(&headers, header::ETAG);
    assert!(
        etag.len() > 2 && etag.starts_with('"') && etag.ends_with('"'),
        "{etag}"
    );
    assert_eq!(
        headers[header::ACCESS_CONTROL_EXPOSE_HEADERS],
        "Location, ETag, Link"
    );
    assert!(
        headers.get(header::LINK).is_none(),
        "no ICE servers are configured"
    );
    rx.set_answer(&answer).unwrap();
    let ok = wait_frames(&rx, 10, Duration::from_secs(15)).await;
    assert_decodes(&rx, &server, 10, ok);

    // Media flows now, so codec mismatches show: a VP8-only viewer of an H.264 stream.
    let (_vp8, vp8_offer) = receiver(&OfferOptions {
        video_codecs: vec!["VP8"],
        ..OfferOptions::default()
    })
    .await;
    let got = send(post("/whep/cam", "application/sdp", vp8_offer)).await;
    assert_status(&got, 406);
    assert!(got.2.contains("H264") && got.2.contains("VP8"), "{}", got.2);

    // The session: OPTIONS without Accept-Post, GET without content, the admin view of the stream.
    let resource = server.url(&location);
    let got = send(server.http.request(Method::OPTIONS, &resource)).await;
    assert!(got.0.is_success(), "{got:?}");
    assert!(got.1.get("accept-post").is_none());
    assert_eq!(
        got.1[header::ACCESS_CONTROL_ALLOW_METHODS],
        "OPTIONS, GET, HEAD, POST, PATCH, DELETE"
    );
    assert!(send(server.http.get(&resource)).await.0.is_success());
    let (status, info) = server.get("/api/v3/process/cam/webrtc").await;
    assert_eq!(status, StatusCode::OK, "{info}");
    assert_eq!(info["flowing"], true);
    assert_eq!(info["viewers"], 1);
    let paths: Vec<&str> = info["tracks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, vec!["passthrough", "passthrough"], "{info}");
    assert!(info["tracks"][0]["reason"].is_string());
    assert_eq!(
        server.get("/api/v3/process/plain/webrtc").await.0,
        StatusCode::NOT_FOUND
    );

    // DELETE is idempotent.
    assert_status(&send(server.http.delete(&resource)).await, 200);
    assert_status(&send(server.http.delete(&resource)).await, 200);
    assert_eq!(
        server.get("/api/v3/process/cam/webrtc").await.1["viewers"],
        0
    );
}

#[tokio::test]
async fn viewer_cap_sessions_kick_and_metrics() {
    let server = start(
        1,
        false,
        &[("STREAMCORE_WEBRTC_MAX_VIEWERS_PER_STREAM", "1")],
    )
    .await;
    server.create(webrtc_process("cap", "public")).await;
    let (rx, resource_url, _, _) = connect(&server, "cap", None, &OfferOptions::default()).await;
    let ok = wait_frames(&rx, 30, Duration::from_secs(15)).await;
    assert_decodes(&rx, &server, 30, ok);

    // The cap is per stream: a second viewer gets 503 + Retry-After.
    let (_second, offer) = receiver(&OfferOptions::default()).await;
    let (status, headers, body) =
        whep::post_offer(&server.http, &server.url("/whep/cap"), None, &offer).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(retry_after(&headers) >= 1, "503 without Retry-After");

    // The session shows what webrtcbin reports about the viewer.
    let resource = resource_url.rsplit('/').next().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    let session = loop {
        let (status, list) = server.get("/api/v3/webrtc/sessions").await;
        assert_eq!(status, StatusCode::OK, "{list}");
        let list = list.as_array().unwrap().clone();
        assert_eq!(list.len(), 1, "{list:?}");
        if list[0]["bytes_sent"].as_u64().unwrap_or(0) > 0 || Instant::now() > deadline {
            break list[0].clone();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(session["resource"], resource.as_str());
    assert_eq!(session["process"], "cap");
    assert_eq!(session["state"], "connected");
    assert!(session["bytes_sent"].as_u64().unwrap() > 0, "{session}");
    assert!(session["packets_sent"].as_u64().unwrap() > 0, "{session}");
    assert!(session["packets_lost"].is_u64(), "{session}");
    assert!(
        session.get("rtt_ms").is_some() && session.get("fraction_lost").is_some(),
        "{session}"
    );
    assert!(session["remote_address"].is_string(), "{session}");
    let codecs: Vec<&str> = session["codecs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(
        codecs.contains(&"H264") && codecs.contains(&"OPUS"),
        "{codecs:?}"
    );

    // The Prometheus families, with this viewer in them.
    let deadline = Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let text = server.get_text("/metrics").await;
        if text.contains("streamcore_webrtc_ice_connect_seconds_count 1")
            || Instant::now() > deadline
        {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for family in [
        "# TYPE streamcore_webrtc_viewers gauge",
        "# TYPE streamcore_webrtc_viewer_bytes_sent gauge",
        "# TYPE streamcore_whep_requests counter",
        "# TYPE streamcore_webrtc_ice_connect_seconds histogram",
        "# TYPE streamcore_webrtc_viewer_rejections counter",
        "streamcore_webrtc_viewers{stream=\"cap\"} 1",
        "streamcore_webrtc_ice_connect_seconds_count 1",
        "streamcore_webrtc_viewer_rejections_total{cap=\"stream\"} 1",
        "streamcore_whep_requests_total{method=\"POST\",route=\"/whep/{id}\",status=\"201\"} 1",
        "streamcore_whep_requests_total{method=\"POST\",route=\"/whep/{id}\",status=\"503\"} 1",
    ] {
        assert!(metrics.contains(family), "missing {family:?} in\n{metrics}");
    }
    let bytes: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("streamcore_webrtc_viewer_bytes_sent{stream=\"cap\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(bytes > 0, "{metrics}");

    // Kicking the viewer removes it and stops its media.
    let kick = format!("/api/v3/webrtc/sessions/{resource}");
    let (status, _) = server.call(Method::DELETE, &kick, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(server.get("/api/v3/webrtc/sessions").await.1, json!([]));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let stopped_at = rx.frames_decoded();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(
        rx.frames_decoded(),
        stopped_at,
        "frames still arrive after the kick"
    );
    assert_eq!(
        server.call(Method::DELETE, &kick, None).await.0,
        StatusCode::NOT_FOUND
    );
    // The session URL is gone too, and the freed slot takes a new viewer.
    let got = send(
        server
            .http
            .patch(&resource_url)
            .header(header::CONTENT_TYPE, SDPFRAG)
            .header(header::IF_MATCH, "*")
            .body("a=end-of-candidates\r\n"),
    )
    .await;
    assert_status(&got, 404);
    let (rx2, _, _, _) = connect(&server, "cap", None, &OfferOptions::default()).await;
    let ok = wait_frames(&rx2, 5, Duration::from_secs(15)).await;
    assert_decodes(&rx2, &server, 5, ok);
}

/// The m-line of each client candidate, as (mid, `candidate:...`) from the client's offer.
fn client_candidates(rx: &whep::Receiver, offer: &str) -> Vec<(String, String)> {
    let msg = gst_sdp::SDPMessage::parse_buffer(offer.as_bytes()).unwrap();
    rx.local_candidates()
        .into_iter()
        .map(|(mline, c)| {
            let mid = msg
                .media(mline)
                .and_then(|m| m.attribute_val("mid"))
                .unwrap()
                .to_string();
            (mid, c)
        })
        .collect()
}

/// An RFC 8840 fragment: per mid of `offer`, its credentials and the given candidates.
fn fragment(
    offer: &gst_sdp::SDPMessageRef,
    ufrag: &str,
    pwd: &str,
    candidates: &[(String, String)],
) -> String {
    let mut out = String::from("a=ice-options:trickle\r\n");
    for media in offer.medias() {
        let mid = media.attribute_val("mid").unwrap();
        let formats: Vec<&str> = media.formats().collect();
        out.push_str(&format!(
            "m={} 9 {} {}\r\na=mid:{mid}\r\na=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\n",
            media.media().unwrap(),
            media.proto().unwrap(),
            formats.join(" ")
        ));
        for (_, c) in candidates.iter().filter(|(m, _)| m == mid) {
            out.push_str(&format!("a={c}\r\n"));
        }
    }
    out
}

async fn patch(
    server: &TestServer,
    url: &str,
    content_type: &str,
    if_match: Option<&str>,
    body: &str,
) -> (StatusCode, HeaderMap, String) {
    let mut req = server
        .http
        .patch(url)
        .header(header::CONTENT_TYPE, content_type)
        .body(body.to_string());
    if let Some(tag) = if_match {
        req = req.header(header::IF_MATCH, tag);
    }
    send(req).await
}

#[tokio::test]
async fn trickle_patch_and_preconditions() {
    let server = start(2, false, &[]).await;
    server.create(webrtc_process("trickle", "public")).await;
    let opts = OfferOptions {
        strip_candidates: true,
        ..OfferOptions::default()
    };
    let (rx, status, headers, answer) =
        post_when_ready(&server, "/whep/trickle", None, &opts).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let url = server.url(&header_str(&headers, header::LOCATION));
    let etag = header_str(&headers, header::ETAG);
    rx.set_answer(&answer).unwrap();

    let offer_text = rx
        .webrtcbin()
        .property::<Option<gst_webrtc::WebRTCSessionDescription>>("local-description")
        .unwrap()
        .sdp()
        .as_text()
        .unwrap();
    let offer = gst_sdp::SDPMessage::parse_buffer(offer_text.as_bytes()).unwrap();
    let (ufrag, pwd) = rx.ice_ufrag_pwd();
    let mut candidates = client_candidates(&rx, &offer_text);
    assert!(!candidates.is_empty());
    let first_mid = candidates[0].0.clone();
    // Candidates libnice cannot use must be dropped silently, not crash or stall anything.
    candidates.push((
        first_mid.clone(),
        "candidate:9 1 udp 2113937151 0b1f6c5e-8d4b-4c3e-9a4f-2a6d7c1e9b01.local 54321 typ host"
            .into(),
    ));
    candidates.push((
        first_mid,
        "candidate:10 1 TCP 1518280447 192.0.2.9 9 typ host tcptype active".into(),
    ));
    let body = fragment(&offer, &ufrag, &pwd, &candidates);

    // Preconditions and content checks.
    assert_status(&patch(&server, &url, SDPFRAG, None, &body).await, 428);
    assert_status(
        &patch(&server, &url, SDPFRAG, Some("\"not-the-tag\""), &body).await,
        412,
    );
    assert_status(
        &patch(&server, &url, SDPFRAG, Some(&format!("W/{etag}")), &body).await,
        412,
    );
    assert_status(
        &patch(&server, &url, "application/sdp", Some(&etag), &body).await,
        415,
    );
    assert_status(
        &patch(&server, &url, SDPFRAG, Some(&etag), "hello, world").await,
        400,
    );
    assert_status(
        &patch(
            &server,
            &url,
            SDPFRAG,
            Some(&etag),
            "a=candidate:1 1 udp x y z",
        )
        .await,
        400,
    );
    let unknown = format!("{}/0123456789abcdef", server.url("/whep/trickle"));
    assert_status(
        &patch(&server, &unknown, SDPFRAG, Some("*"), &body).await,
        404,
    );

    // The trickle itself: 204, no body, no ETag; then media decodes.
    let got = patch(&server, &url, SDPFRAG, Some(&etag), &body).await;
    assert_status(&got, 204);
    assert!(got.2.is_empty());
    assert!(
        got.1.get(header::ETAG).is_none(),
        "a trickle answer has no ETag"
    );
    // `*` matches any current tag; an end-of-candidates-only fragment is a valid trickle.
    let got = patch(&server, &url, SDPFRAG, Some("*"), "a=end-of-candidates\r\n").await;
    assert_status(&got, 204);
    let ok = wait_frames(&rx, 30, Duration::from_secs(15)).await;
    assert_decodes(&rx, &server, 30, ok);
    // The same PATCH under /api/v3/whep.
    let v3 = url.replace("/whep/", "/api/v3/whep/");
    assert_status(&patch(&server, &v3, SDPFRAG, Some(&etag), &body).await, 204);
}

/// Applies `new` ICE credentials to a description (every m-section), optionally replacing its
/// candidates with `candidates` (section index, `candidate:...`).
fn with_ice(
    sdp: &gst_sdp::SDPMessageRef,
    ufrag: &str,
    pwd: &str,
    candidates: Option<&[(u32, String)]>,
) -> gst_sdp::SDPMessage {
    let mut out = sdp.to_owned();
    for (index, media) in out.medias_mut().enumerate() {
        for i in (0..media.attributes_len()).rev() {
            let key = media.attribute(i).unwrap().key().to_string();
            match key.as_str() {
                "ice-ufrag" => media
                    .replace_attribute(i, gst_sdp::SDPAttribute::new("ice-ufrag", Some(ufrag)))
                    .unwrap(),
                "ice-pwd" => media
                    .replace_attribute(i, gst_sdp::SDPAttribute::new("ice-pwd", Some(pwd)))
                    .unwrap(),
                "candidate" | "end-of-candidates" if candidates.is_some() => {
                    media.remove_attribute(i).unwrap()
                }
                _ => {}
            }
        }
        for (_, c) in candidates
            .unwrap_or(&[])
            .iter()
            .filter(|(m, _)| *m as usize == index)
        {
            media.add_attribute("candidate", Some(c.strip_prefix("candidate:").unwrap_or(c)));
        }
    }
    out
}

fn sdp_credentials(sdp: &str) -> (String, String) {
    let msg = gst_sdp::SDPMessage::parse_buffer(sdp.as_bytes()).unwrap();
    let m = msg.media(0).unwrap();
    (
        m.attribute_val("ice-ufrag").unwrap().into(),
        m.attribute_val("ice-pwd").unwrap().into(),
    )
}

#[tokio::test]
async fn ice_restart_renews_credentials_and_media_keeps_flowing() {
    let server = start(3, false, &[]).await;
    server.create(webrtc_process("restart", "public")).await;
    let (rx, url, old_etag, answer) =
        connect(&server, "restart", None, &OfferOptions::default()).await;
    let ok = wait_frames(&rx, 30, Duration::from_secs(15)).await;
    assert_decodes(&rx, &server, 30, ok);
    let (old_server_ufrag, old_server_pwd) = sdp_credentials(&answer);
    assert_eq!(old_etag, format!("\"{old_server_ufrag}\""));

    // The client restarts as a browser does: a new offer with new credentials, applied locally,
    // then PATCHed with If-Match: *.
    let client = rx.webrtcbin().clone();
    let new_offer = tokio::task::spawn_blocking(move || {
        // The same media with new credentials. (webrtcbin 1.22 has no iceRestart offer option,
        // and its create-offer fails here once the recvonly pads are linked; a copy of the
        // first offer is what a browser's restart offer amounts to.)
        let offer = client
            .property::<Option<gst_webrtc::WebRTCSessionDescription>>("local-description")
            .unwrap();
        let offer = with_ice(
            offer.sdp(),
            "clientNEWufrag",
            "clientNEWpassword0123456789",
            None,
        );
        let desc = gst_webrtc::WebRTCSessionDescription::new(
            gst_webrtc::WebRTCSDPType::Offer,
            offer.clone(),
        );
        whep::call_with_promise(&client, "set-local-description", desc.to_value()).unwrap();
        offer
    })
    .await
    .unwrap();
    let offer_text = new_offer.as_text().unwrap();
    let candidates = client_candidates(&rx, &offer_text);
    let body = fragment(
        &new_offer,
        "clientNEWufrag",
        "clientNEWpassword0123456789",
        &candidates,
    );

    assert_status(
        &patch(&server, &url, SDPFRAG, Some("\"stale\""), &body).await,
        412,
    );
    let got = patch(&server, &url, SDPFRAG, Some("*"), &body).await;
    assert_status(&got, 200);
    assert_eq!(got.1[header::CONTENT_TYPE], SDPFRAG);
    let new_etag = header_str(&got.1, header::ETAG);
    assert_ne!(new_etag, old_etag, "a restart must change the ETag");
    let (server_ufrag, server_pwd, server_candidates) = read_fragment(&got.2);
    assert_eq!(new_etag, format!("\"{server_ufrag}\""));
    assert_ne!(server_ufrag, old_server_ufrag);
    assert_ne!(server_pwd, old_server_pwd);
    assert!(!server_candidates.is_empty(), "{}", got.2);
    assert!(got.2.contains("a=end-of-candidates"), "{}", got.2);
    assert!(got.2.contains("a=mid:"), "{}", got.2);

    // The client takes the server's new credentials and candidates as its new remote answer.
    let client = rx.webrtcbin().clone();
    let cands = server_candidates.clone();
    let (su, sp) = (server_ufrag.clone(), server_pwd.clone());
    tokio::task::spawn_blocking(move || {
        let old = client
            .property::<Option<gst_webrtc::WebRTCSessionDescription>>("remote-description")
            .unwrap();
        let answer = with_ice(old.sdp(), &su, &sp, Some(&cands));
        let desc =
            gst_webrtc::WebRTCSessionDescription::new(gst_webrtc::WebRTCSDPType::Answer, answer);
        whep::call_with_promise(&client, "set-remote-description", desc.to_value()).unwrap();
    })
    .await
    .unwrap();

    // Media keeps flowing through and after the restart.
    let before = rx.frames_decoded();
    let ok = wait_frames(&rx, before + 60, Duration::from_secs(15)).await;
    assert_decodes(&rx, &server, before + 60, ok);
    assert_eq!(rx.connection_state(), "connected");

    // The server's ICE agent really switched: a STUN check signed with the new credentials is
    // answered with success, one signed with the old ones is not.
    let target = server_candidates
        .iter()
        .find_map(|(_, c)| udp_ipv4_address(c))
        .expect("an IPv4 UDP server candidate");
    let new = stun::check(
        target,
        &format!("{server_ufrag}:clientNEWufrag"),
        &server_pwd,
    );
    assert_eq!(
        new,
        Some(stun::BINDING_SUCCESS),
        "new credentials refused by {target}"
    );
    let old = stun::check(
        target,
        &format!("{old_server_ufrag}:clientNEWufrag"),
        &old_server_pwd,
    );
    assert_ne!(
        old,
        Some(stun::BINDING_SUCCESS),
        "old credentials still accepted by {target}"
    );

    // Trickle is tied to the new tag now.
    assert_status(
        &patch(&server, &url, SDPFRAG, Some(&old_etag), &body).await,
        412,
    );
    assert_status(
        &patch(&server, &url, SDPFRAG, Some(&new_etag), &body).await,
        204,
    );
    let before = rx.frames_decoded();
    let ok = wait_frames(&rx, before + 30, Duration::from_secs(10)).await;
    assert_decodes(&rx, &server, before + 30, ok);
}

#[tokio::test]
async fn viewer_tokens_guard_token_streams() {
    let mut server = start(4, true, &[]).await;
    server.login().await;
    let admin = server.token.clone().unwrap();
    server.create(webrtc_process("secret", "token")).await;
    server.create(idle_process("other", "token")).await;
    server.create(idle_process("open", "public")).await;
    let (_rx, offer) = receiver(&OfferOptions::default()).await;
    let post = |id: &str, token: Option<&str>| {
        let url = server.url(&format!("/whep/{id}"));
        let http = server.http.clone();
        let offer = offer.clone();
        let token = token.map(str::to_string);
        async move {
            let (status, headers, body) =
                whep::post_offer(&http, &url, token.as_deref(), &offer).await;
            (status, headers, body)
        }
    };

    // Public streams need no token (409: past the gate, no media yet).
    assert_eq!(post("open", None).await.0, StatusCode::CONFLICT);
    // Token streams: none, garbage, a refresh token -> 401 with the Bearer challenge.
    let refresh = server
        .http
        .post(server.url("/api/login"))
        .json(&json!({"username": common::USER, "password": common::PASS}))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    for token in [None, Some("garbage"), Some(refresh.as_str())] {
        let (status, headers, body) = post("secret", token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token:?}: {body}");
        assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
    }

    // Minting needs the admin guard; the body is optional.
    let mint = "/api/v3/process/secret/webrtc/token";
    let anonymous = server.http.post(server.url(mint)).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let (status, minted) = server.call(Method::POST, mint, None).await;
    assert_eq!(status, StatusCode::OK, "{minted}");
    let viewer = minted["token"].as_str().unwrap().to_string();
    let now = common_now();
    let expires = minted["expires_at"].as_u64().unwrap();
    assert!(
        (now + 3590..=now + 3610).contains(&expires),
        "default lifetime: {minted}"
    );
    assert_eq!(
        server
            .call(Method::POST, mint, Some(json!({"ttl_seconds": 0})))
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        server
            .call(Method::POST, "/api/v3/process/nope/webrtc/token", None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    let (_, short) = server
        .call(Method::POST, mint, Some(json!({"ttl_seconds": 1})))
        .await;
    let short = short["token"].as_str().unwrap().to_string();

    // A viewer token is no admin token.
    let api = server
        .http
        .get(server.url("/api/v3/process"))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), StatusCode::UNAUTHORIZED);
    // ... and opens only its own process.
    let (status, headers, _) = post("other", Some(&viewer)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
    // An admin token opens any token stream.
    assert_eq!(post("other", Some(&admin)).await.0, StatusCode::CONFLICT);

    // Expired: 401.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        post("secret", Some(&short)).await.0,
        StatusCode::UNAUTHORIZED
    );

    // The right tokens connect: admin bearer, viewer bearer, viewer ?token=.
    let mut sessions = Vec::new();
    for (token, query) in [
        (Some(admin.as_str()), false),
        (Some(viewer.as_str()), false),
        (None, true),
    ] {
        let path = if query {
            format!("/whep/secret?token={viewer}")
        } else {
            "/whep/secret".to_string()
        };
        let (rx, status, headers, body) =
            post_when_ready(&server, &path, token, &OfferOptions::default()).await;
        assert_eq!(
            status,
            StatusCode::CREATED,
            "token {token:?} query {query}: {body}"
        );
        rx.set_answer(&body).unwrap();
        sessions.push((rx, server.url(&header_str(&headers, header::LOCATION))));
    }
    let ok = wait_frames(&sessions[2].0, 10, Duration::from_secs(15)).await;
    assert_decodes(&sessions[2].0, &server, 10, ok);
    for (_, url) in &sessions {
        assert_status(&send(server.http.delete(url)).await, 200);
    }
}

fn common_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A local IPv4 address libnice gathers on (it ignores loopback, and a STUN server on loopback is
/// unreachable from its host sockets): the first IPv4 host candidate of a client.
async fn host_ipv4() -> std::net::IpAddr {
    let (rx, _) = receiver(&OfferOptions::default()).await;
    rx.local_candidates()
        .iter()
        .find_map(|(_, c)| udp_ipv4_address(c))
        .expect("a local IPv4 host candidate")
        .ip()
}

#[tokio::test]
async fn gather_timeout_answers_504() {
    // A STUN server that never answers keeps server-reflexive gathering open far past 50 ms.
    let silent = UdpSocket::bind((host_ipv4().await, 0)).unwrap();
    let stun = silent.local_addr().unwrap().to_string();
    let server = start(
        5,
        false,
        &[
            ("STREAMCORE_WEBRTC_STUN_SERVER", stun.as_str()),
            ("STREAMCORE_WEBRTC_GATHER_TIMEOUT_MS", "50"),
        ],
    )
    .await;
    server.create(webrtc_process("slow", "public")).await;
    let (_rx, status, _, body) =
        post_when_ready(&server, "/whep/slow", None, &OfferOptions::default()).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    let (status, info) = server.get("/api/v3/process/slow/webrtc").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(info["viewers"], 0, "a timed-out viewer is not kept");
    drop(silent);
}

#[tokio::test]
async fn link_headers_announce_stun_and_turn() {
    let responder = stun::Responder::start(host_ipv4().await);
    let stun = responder.addr.to_string();
    let server = start(
        6,
        false,
        &[
            ("STREAMCORE_WEBRTC_STUN_SERVER", stun.as_str()),
            ("STREAMCORE_WEBRTC_TURN_SERVERS", "turn.example.test:3478"),
            ("STREAMCORE_WEBRTC_TURN_SECRET", "s3cret"),
            ("STREAMCORE_WEBRTC_TURN_CREDENTIAL_SECONDS", "600"),
        ],
    )
    .await;
    server.create(webrtc_process("links", "public")).await;
    let (rx, status, headers, body) =
        post_when_ready(&server, "/whep/links", None, &OfferOptions::default()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let links: Vec<&str> = headers
        .get_all(header::LINK)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(links.len(), 2, "{links:?}");
    assert_eq!(links[0], format!("<stun:{stun}>; rel=\"ice-server\""));
    let turn = links[1];
    assert!(
        turn.starts_with("<turn:turn.example.test:3478?transport=udp>; rel=\"ice-server\"; "),
        "{turn}"
    );
    assert!(turn.ends_with("credential-type=\"password\""), "{turn}");
    let attr = |name: &str| {
        let start = turn
            .find(&format!("{name}=\""))
            .unwrap_or_else(|| panic!("{name} in {turn}"))
            + name.len()
            + 2;
        turn[start..].split('"').next().unwrap().to_string()
    };
    let username = attr("username");
    let (expiry, user) = username.split_once(':').unwrap();
    assert_eq!(user, "streamcore");
    let expiry: u64 = expiry.parse().unwrap();
    let now = common_now();
    assert!((now + 590..=now + 610).contains(&expiry), "{username}");
    use base64::Engine;
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(b"s3cret").unwrap();
    mac.update(username.as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    assert_eq!(attr("credential"), expected);
    // The server used the STUN server for its own gathering.
    assert!(
        responder.requests() > 0,
        "the server never asked the STUN server"
    );
    rx.set_answer(&body).unwrap();
    let ok = wait_frames(&rx, 10, Duration::from_secs(15)).await;
    assert_decodes(&rx, &server, 10, ok);
}

//! The built-in SRT server with real FFmpeg (libsrt) on both ends: a process publishes to
//! `{srt,name=cam,mode=publish}` with the server's passphrase, a process reading
//! `{srt,name=cam,mode=request}` is watched over WHEP, an external FFmpeg reads the same name,
//! wrong or missing passphrases and tokens and a second publisher are refused, garbage datagrams
//! leave the server serving, and a publisher restart resumes the reader. Without a passphrase,
//! an encrypting caller is refused while the others keep their streams.

mod common;

use std::time::Duration;

use common::ingest::{self, frames_grow, free_udp_port, garbage, read_frames};
use common::media::connect_when_ready;
use common::whep::OfferOptions;
use common::{ServerLogOnPanic, TestServer};
use serde_json::json;

const PASSPHRASE: &str = "correct-horse-battery";
const TOKEN: &str = "tok42";

/// Core's caller URL for `streamid`, with `passphrase` if any.
fn srt_url(address: &str, streamid: &str, passphrase: Option<&str>) -> String {
    let mut url =
        format!("srt://{address}?mode=caller&transtype=live&latency=20000&streamid={streamid}");
    if let Some(p) = passphrase {
        url.push_str(&format!("&passphrase={p}"));
    }
    url
}

/// Process `pub`, publishing the test picture to `{srt,name=cam,mode=publish}`.
fn cam_publisher() -> serde_json::Value {
    ingest::publisher_process("pub", "{srt,name=cam,mode=publish}", "mpegts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srt_server_relays_refuses_and_survives() {
    let port = free_udp_port();
    let address = format!("127.0.0.1:{port}");
    let server = TestServer::start_with(&[
        ("STREAMCORE_SRT_ENABLE", "true"),
        ("STREAMCORE_SRT_ADDRESS", &address),
        ("STREAMCORE_SRT_PASSPHRASE", PASSPHRASE),
        ("STREAMCORE_SRT_TOKEN", TOKEN),
    ])
    .await;
    let _log = ServerLogOnPanic(&server);
    let (status, body) = server.get("/api/v3/srt").await;
    assert_eq!(status, 200);
    assert_eq!(body["publisher"], json!({}));

    server.create(cam_publisher()).await;
    server
        .create(ingest::reader_process(
            "watch",
            "{srt,name=cam,mode=request}",
        ))
        .await;
    let state = server.state("watch").await;
    let expected = srt_url(
        &address,
        &format!("cam,mode:request,token:{TOKEN}"),
        Some(PASSPHRASE),
    );
    assert!(
        state["command"].to_string().contains(&expected),
        "{{srt,name=cam,mode=request}} resolves as Core does: {state}"
    );

    let (rx, _, _) = connect_when_ready(&server, "watch", &OfferOptions::default()).await;
    assert!(
        rx.wait_frames(30, Duration::from_secs(30)),
        "WHEP viewer decodes the relayed stream"
    );
    let (_, body) = server.get("/api/v3/srt").await;
    let publisher = body["publisher"]["cam"].as_u64().expect("cam is published");
    assert!(body["connections"][publisher.to_string()]["stats"]["recv_bytes"].as_u64() > Some(0));
    assert_eq!(
        body["subscriber"]["cam"].as_array().map(Vec::len),
        Some(1),
        "{body}"
    );
    // The session API lists the publisher and the reading process under collector `srt`.
    ingest::sessions_listed(&server, "srt", &["publish:cam", "play:cam"]).await;

    let reader = |streamid: &str, passphrase: Option<&str>| srt_url(&address, streamid, passphrase);
    let good = format!("cam,mode:request,token:{TOKEN}");
    let (decoded, log) = read_frames(&reader(&good, Some(PASSPHRASE)), 30).await;
    assert!(decoded, "a second reader decodes 30 frames:\n{log}");
    // Core's older stream id form.
    let old = format!("#!:m=request,r=cam,token={TOKEN}");
    let (decoded, log) = read_frames(&reader(&old, Some(PASSPHRASE)), 10).await;
    assert!(decoded, "#!: stream id:\n{log}");

    let (decoded, _) = read_frames(&reader(&good, Some("wrong-passphrase")), 5).await;
    assert!(!decoded, "a wrong passphrase is refused");
    assert!(
        server
            .wait_logged("SRT handshake failed", Duration::from_secs(5))
            .await
    );
    let (decoded, _) = read_frames(&reader(&good, None), 5).await;
    assert!(!decoded, "an unencrypted caller is refused");
    let (decoded, _) =
        read_frames(&reader("cam,mode:request,token:bad", Some(PASSPHRASE)), 5).await;
    assert!(!decoded, "a wrong token is refused");
    let (decoded, _) = read_frames(
        &reader(
            &format!("nope,mode:request,token:{TOKEN}"),
            Some(PASSPHRASE),
        ),
        5,
    )
    .await;
    assert!(!decoded, "a resource without publisher is refused");
    let second = reader(&format!("cam,mode:publish,token:{TOKEN}"), Some(PASSPHRASE));
    ingest::second_publisher_refused(&server, &rx, &second, "mpegts").await;

    // Garbage datagrams, a cut handshake header.
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for bytes in garbage() {
        let _ = socket.send_to(&bytes, &address).await;
    }
    let induction_head = [0x80u8, 0x00, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 1];
    let _ = socket.send_to(&induction_head, &address).await;
    let (decoded, log) = read_frames(&reader(&good, Some(PASSPHRASE)), 10).await;
    assert!(decoded, "still serving readers after garbage:\n{log}");
    assert!(
        frames_grow(&rx, 15, Duration::from_secs(10)).await,
        "and the viewer"
    );

    // The publisher goes away and comes back.
    let empty = json!({"publisher": {}, "subscriber": {}, "connections": {}, "log": {}});
    ingest::restart_resumes(&server, &rx, "/api/v3/srt", empty).await;
    ingest::assert_metrics(&server, "srt").await;
    let metrics = server.get_text("/metrics").await;
    assert!(
        metrics.contains(r#"streamcore_ingest_refused_total{protocol="srt",reason="conflict"}"#)
    );
    assert!(server.alive());
}

/// A caller that encrypts, on a server without passphrase, is refused in the handshake
/// (UNSECURE, as libsrt refuses it), and the publisher and reader connected at that moment keep
/// their streams. srt-protocol 0.4 panicked here and the listener task took every connection
/// with it (vendor/srt-protocol/README.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypting_caller_is_refused_without_cutting_the_others() {
    let address = format!("127.0.0.1:{}", free_udp_port());
    let server = TestServer::start_with(&[
        ("STREAMCORE_SRT_ENABLE", "true"),
        ("STREAMCORE_SRT_ADDRESS", &address),
    ])
    .await;
    let _log = ServerLogOnPanic(&server);
    server.create(cam_publisher()).await;
    let channel = |subscribed: usize| {
        let server = &server;
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            loop {
                let (_, body) = server.get("/api/v3/srt").await;
                let readers = body["subscriber"]["cam"].as_array().map_or(0, Vec::len);
                if let Some(id) = body["publisher"]["cam"].as_u64() {
                    let bytes = body["connections"][id.to_string()]["stats"]["recv_bytes"]
                        .as_u64()
                        .unwrap_or(0);
                    if readers >= subscribed {
                        return (id, bytes);
                    }
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "cam published with {subscribed} reader(s): {body}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    channel(0).await;
    // 300 frames are 10 s of the live picture: the reader spans the refused attempt.
    let reader_url = srt_url(&address, "cam,mode:request", None);
    let reader = tokio::spawn(async move { read_frames(&reader_url, 300).await });
    let (publisher, bytes_before) = channel(1).await;

    let out = ingest::publish(
        &srt_url(&address, "other,mode:publish", Some(PASSPHRASE)),
        "mpegts",
        1,
    )
    .await;
    assert!(!out.status.success(), "an encrypting caller is refused");
    assert!(
        server
            .wait_logged("SRT handshake failed", Duration::from_secs(5))
            .await
    );
    assert!(
        !reader.is_finished(),
        "the reader is still reading after the refusal"
    );
    let (decoded, log) = reader.await.unwrap();
    assert!(decoded, "the reader got all 300 frames:\n{log}");
    let (same, bytes_after) = channel(0).await;
    assert_eq!(same, publisher, "the publisher's connection was not cut");
    assert!(bytes_after > bytes_before, "and it kept sending");
    assert!(!server.logged("SRT listener stopped"));
    let metrics = server.get_text("/metrics").await;
    assert!(
        metrics.contains(r#"streamcore_ingest_refused_total{protocol="srt",reason="handshake"}"#),
        "{metrics}"
    );
    assert!(server.alive());
}

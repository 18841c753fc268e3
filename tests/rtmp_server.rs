//! The built-in RTMP server with real FFmpeg on both ends: a process publishes to
//! `{rtmp,name=cam}`, a process reading `{rtmp,name=cam}` is watched over WHEP, an external
//! FFmpeg reads the same name, wrong tokens and a second publisher are refused, garbage and cut
//! handshakes leave the server serving, and a publisher restart resumes the reader.

mod common;

use std::time::Duration;

use common::ingest::{self, frames_grow, free_tcp_port, garbage, publish, read_frames};
use common::media::connect_when_ready;
use common::whep::OfferOptions;
use common::{ServerLogOnPanic, TestServer};
use serde_json::json;
use tokio::io::AsyncWriteExt;

const TOKEN: &str = "s3cret";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtmp_server_relays_refuses_and_survives() {
    let port = free_tcp_port().to_string();
    let address = format!("127.0.0.1:{port}");
    let server = TestServer::start_with(&[
        ("STREAMCORE_RTMP_ENABLE", "true"),
        ("STREAMCORE_RTMP_ADDRESS", &address),
        ("STREAMCORE_RTMP_TOKEN", TOKEN),
    ])
    .await;
    let _log = ServerLogOnPanic(&server);
    let url = |token: &str| format!("rtmp://{address}/cam?token={token}");

    // Nothing published yet: the list is empty, a reader is refused.
    let (status, body) = server.get("/api/v3/rtmp").await;
    assert_eq!((status.as_u16(), body), (200, json!([])));

    server
        .create(ingest::publisher_process("pub", "{rtmp,name=cam}", "flv"))
        .await;
    server
        .create(ingest::reader_process("watch", "{rtmp,name=cam}"))
        .await;
    let state = server.state("pub").await;
    assert!(
        state["command"].to_string().contains(&url(TOKEN)),
        "{{rtmp,name=cam}} resolves with the token: {state}"
    );

    let (rx, _, _) = connect_when_ready(&server, "watch", &OfferOptions::default()).await;
    assert!(
        rx.wait_frames(30, Duration::from_secs(30)),
        "WHEP viewer decodes the relayed stream"
    );
    let (status, body) = server.get("/api/v3/rtmp").await;
    assert_eq!((status.as_u16(), body), (200, json!([{"name": "/cam"}])));
    // The session API lists the publisher and the reading process under collector `rtmp`.
    ingest::sessions_listed(&server, "rtmp", &["publish:/cam", "play:/cam"]).await;

    // A second reader of the same name, outside the server.
    let (decoded, log) = read_frames(&url(TOKEN), 30).await;
    assert!(decoded, "a second reader decodes 30 frames:\n{log}");
    // The token may also be the last path element.
    let (decoded, log) = read_frames(&format!("rtmp://{address}/cam/{TOKEN}"), 10).await;
    assert!(decoded, "token as last path element:\n{log}");

    // Wrong or missing tokens are refused, for readers and publishers.
    let (decoded, _) = read_frames(&url("wrong"), 5).await;
    assert!(!decoded, "a reader with a wrong token is refused");
    let out = publish(&format!("rtmp://{address}/other?token=wrong"), "flv", 2).await;
    assert!(
        !out.status.success(),
        "a publisher with a wrong token is refused"
    );
    let out = publish(&format!("rtmp://{address}/other"), "flv", 2).await;
    assert!(
        !out.status.success(),
        "a publisher without a token is refused"
    );
    // A second publisher of a live name is refused; the first goes on.
    ingest::second_publisher_refused(&server, &rx, &url(TOKEN), "flv").await;

    // Garbage, cut handshakes and a silent connection.
    let mut silent = tokio::net::TcpStream::connect(&address).await.unwrap();
    for bytes in garbage() {
        let mut s = tokio::net::TcpStream::connect(&address).await.unwrap();
        let _ = s.write_all(&bytes).await;
        drop(s);
    }
    let _ = silent.write_all(&[3]).await;
    let (decoded, log) = read_frames(&url(TOKEN), 10).await;
    assert!(decoded, "still serving readers after garbage:\n{log}");
    assert!(
        frames_grow(&rx, 15, Duration::from_secs(10)).await,
        "and the viewer"
    );
    drop(silent);

    // The publisher goes away and comes back: the reader process reconnects and the viewer,
    // still attached to the same stream, decodes frames again.
    ingest::restart_resumes(&server, &rx, "/api/v3/rtmp", json!([])).await;
    ingest::assert_metrics(&server, "rtmp").await;
    assert!(server.alive());
}

/// With the server off the endpoint answers 404 (Core has no route then) and `{rtmp}` resolves
/// to nothing, so a definition using it is refused.
#[tokio::test]
async fn rtmp_off_means_404_and_no_placeholder() {
    let server = TestServer::start().await;
    let (status, body) = server.get("/api/v3/rtmp").await;
    common::assert_error(status, &body, 404);
    let (status, body) = server
        .call(
            reqwest::Method::POST,
            "/api/v3/process",
            Some(ingest::reader_process("r", "{rtmp,name=cam}")),
        )
        .await;
    common::assert_error(status, &body, 400);
}

//! RTMPS with real FFmpeg (GnuTLS, which does not verify certificates by default) against a
//! self-signed certificate: publishers and readers on either listener share one hub, the token
//! rules hold on both, hostile bytes on the TLS port leave the server serving, bad certificates
//! are configuration errors, and the config API can neither point the certificate outside the
//! data directory nor keep the TLS listener alive across a reload that turns it off.

mod common;

use std::path::Path;
use std::time::Duration;

use common::ingest::{
    free_tcp_port, garbage, publish, read_frames, spawn_publisher, wait_rtmp_listed,
};
use common::media::connect_when_ready;
use common::whep::OfferOptions;
use common::{reload, start_fails, ServerLogOnPanic, TestServer};
use reqwest::StatusCode;
use serde_json::json;
use tokio::io::AsyncWriteExt;

const TOKEN: &str = "s3cret";

/// Writes a self-signed certificate for 127.0.0.1 and its key into `dir`; returns their paths.
fn self_signed(dir: &Path) -> (String, String) {
    let rcgen::CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key_pair.serialize_pem()).unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    (s(&cert_file), s(&key_file))
}

/// The first bytes of a TLS 1.2 ClientHello record, cut off inside the handshake message.
const CUT_CLIENT_HELLO: &[u8] = &[
    0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0x11, 0x22, 0x33,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtmps_shares_the_hub_and_the_rules_and_survives_garbage() {
    // The operator's certificate may be anywhere (here outside the data directory).
    let certs = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = self_signed(certs.path());
    let plain = format!("127.0.0.1:{}", free_tcp_port());
    let secure = format!("127.0.0.1:{}", free_tcp_port());
    let server = TestServer::start_with(&[
        ("STREAMCORE_RTMP_ENABLE", "true"),
        ("STREAMCORE_RTMP_ADDRESS", &plain),
        ("STREAMCORE_RTMP_TOKEN", TOKEN),
        ("STREAMCORE_RTMP_ENABLE_TLS", "true"),
        ("STREAMCORE_RTMP_ADDRESS_TLS", &secure),
        ("STREAMCORE_TLS_ENABLE", "true"),
        ("STREAMCORE_TLS_CERT_FILE", &cert_file),
        ("STREAMCORE_TLS_KEY_FILE", &key_file),
    ])
    .await;
    let _log = ServerLogOnPanic(&server);
    let rtmp = |name: &str, token: &str| format!("rtmp://{plain}/{name}?token={token}");
    let rtmps = |name: &str, token: &str| format!("rtmps://{secure}/{name}?token={token}");

    // Published over RTMPS: read over RTMP, over RTMPS, and by a process through `{rtmp}`.
    let _publisher = spawn_publisher(&rtmps("cam", TOKEN), "flv");
    wait_rtmp_listed(&server, "/cam").await;
    let (decoded, log) = read_frames(&rtmp("cam", TOKEN), 30).await;
    assert!(decoded, "an RTMP reader of an RTMPS publisher:\n{log}");
    let (decoded, log) = read_frames(&rtmps("cam", TOKEN), 30).await;
    assert!(decoded, "an RTMPS reader:\n{log}");
    server
        .create(common::ingest::reader_process("watch", "{rtmp,name=cam}"))
        .await;
    let (rx, _, _) = connect_when_ready(&server, "watch", &OfferOptions::default()).await;
    assert!(
        rx.wait_frames(30, Duration::from_secs(30)),
        "a WHEP viewer of a process reading {{rtmp,name=cam}}"
    );

    // Published over RTMP, read over RTMPS; both names listed.
    let _plain_publisher = spawn_publisher(&rtmp("cam2", TOKEN), "flv");
    wait_rtmp_listed(&server, "/cam2").await;
    let (decoded, log) = read_frames(&rtmps("cam2", TOKEN), 10).await;
    assert!(decoded, "an RTMPS reader of an RTMP publisher:\n{log}");
    let (_, body) = server.get("/api/v3/rtmp").await;
    assert_eq!(body, json!([{"name": "/cam"}, {"name": "/cam2"}]));

    // The token rules hold over RTMPS.
    let (decoded, _) = read_frames(&rtmps("cam", "wrong"), 5).await;
    assert!(!decoded, "an RTMPS reader with a wrong token is refused");
    let out = publish(&rtmps("other", "wrong"), "flv", 2).await;
    assert!(
        !out.status.success(),
        "an RTMPS publisher with a wrong token"
    );
    assert!(
        server
            .wait_logged("reason=\"token\"", Duration::from_secs(5))
            .await
    );

    // Garbage, plain RTMP and a cut ClientHello on the TLS port; one cut hello stays open.
    let mut silent = tokio::net::TcpStream::connect(&secure).await.unwrap();
    let _ = silent.write_all(CUT_CLIENT_HELLO).await;
    for bytes in garbage().into_iter().chain([CUT_CLIENT_HELLO.to_vec()]) {
        let mut s = tokio::net::TcpStream::connect(&secure).await.unwrap();
        let _ = s.write_all(&bytes).await;
    }
    let out = publish(&rtmp("after", TOKEN), "flv", 2).await;
    assert!(
        out.status.success(),
        "a plain RTMP publish after garbage on the TLS port:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (decoded, log) = read_frames(&rtmps("cam", TOKEN), 10).await;
    assert!(decoded, "RTMPS still serves:\n{log}");
    drop(silent);
    let metrics = server.get_text("/metrics").await;
    assert!(
        metrics.contains(r#"streamcore_ingest_refused_total{protocol="rtmp",reason="tls"}"#),
        "{metrics}"
    );
    assert!(server.alive());
}

#[test]
fn bad_certificates_and_rtmps_settings_are_start_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = self_signed(dir.path());
    let (other_cert, other_key) = {
        let other = dir.path().join("other");
        std::fs::create_dir(&other).unwrap();
        self_signed(&other)
    };
    let garbage_file = dir.path().join("garbage.pem");
    std::fs::write(&garbage_file, "not a certificate\n").unwrap();
    let garbage_file = garbage_file.to_str().unwrap();
    let missing = dir.path().join("missing.pem");
    let missing = missing.to_str().unwrap();
    let rtmps = |cert: &str, key: &str| -> String {
        start_fails(&[
            ("STREAMCORE_RTMP_ENABLE", "true"),
            ("STREAMCORE_RTMP_ADDRESS", "127.0.0.1:0"),
            ("STREAMCORE_RTMP_ENABLE_TLS", "true"),
            ("STREAMCORE_RTMP_ADDRESS_TLS", "127.0.0.1:0"),
            ("STREAMCORE_TLS_ENABLE", "true"),
            ("STREAMCORE_TLS_CERT_FILE", cert),
            ("STREAMCORE_TLS_KEY_FILE", key),
        ])
    };
    let cases = [
        (rtmps(&cert_file, missing), "tls.key_file"),
        (rtmps(missing, &key_file), "tls.cert_file"),
        (rtmps(garbage_file, &key_file), "no CERTIFICATE block"),
        (rtmps(&cert_file, garbage_file), "tls.key_file"),
        (
            rtmps(&cert_file, &other_key),
            "does not belong to the certificate",
        ),
        (rtmps(&other_cert, ""), "must both be set"),
        (
            start_fails(&[
                ("STREAMCORE_TLS_ENABLE", "true"),
                ("STREAMCORE_TLS_AUTO", "true"),
            ]),
            "Let's Encrypt",
        ),
        (
            start_fails(&[
                ("STREAMCORE_RTMP_ENABLE", "true"),
                ("STREAMCORE_RTMP_ENABLE_TLS", "true"),
            ]),
            "rtmp.enable_tls needs tls.enable",
        ),
    ];
    for (stderr, wanted) in cases {
        eprintln!("{}", stderr.trim());
        assert!(stderr.contains(wanted), "{wanted:?} in:\n{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(
            !stderr.contains("not a certificate"),
            "no file contents: {stderr}"
        );
    }
}

/// The config API may point the certificate only inside the data directory; a stored RTMPS
/// configuration is served after a reload, and the TLS port closes on the reload that turns it
/// off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_api_confines_certificates_and_reload_restarts_rtmps() {
    let plain = format!("127.0.0.1:{}", free_tcp_port());
    let secure = format!("127.0.0.1:{}", free_tcp_port());
    let server = TestServer::start_with(&[
        ("STREAMCORE_RTMP_ENABLE", "true"),
        ("STREAMCORE_RTMP_ADDRESS", &plain),
    ])
    .await;
    let _log = ServerLogOnPanic(&server);
    let put = |tls: serde_json::Value, enable_tls: bool| {
        let server = &server;
        let secure = secure.clone();
        async move {
            let (_, got) = server.get("/api/v3/config").await;
            let mut config = got["config"].clone();
            config["tls"] = tls;
            config["rtmp"]["enable_tls"] = json!(enable_tls);
            config["rtmp"]["address_tls"] = json!(secure);
            server
                .call(reqwest::Method::PUT, "/api/v3/config", Some(config))
                .await
        }
    };
    let tls = |cert: &str, key: &str| json!({"enable": true, "auto": false, "cert_file": cert, "key_file": key});

    let outside = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = self_signed(outside.path());
    for (cert, key) in [
        ("/etc/passwd", "/etc/passwd"),
        (cert_file.as_str(), key_file.as_str()),
        ("../../etc/passwd", "key.pem"),
    ] {
        let (status, body) = put(tls(cert, key), true).await;
        assert_eq!(status, StatusCode::CONFLICT, "{cert}: {body}");
        let text = body.to_string();
        assert!(body["tls.cert_file"].is_array(), "{body}");
        assert!(text.contains("inside the data directory"), "{body}");
        assert!(!text.contains("root:"), "never a file's contents: {body}");
    }

    // Inside the data directory (relative to it) the same files are accepted and served.
    let (_cert, _key) = self_signed(&server.data_dir);
    let (status, body) = put(tls("cert.pem", "key.pem"), true).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    reload(&server).await;
    let _publisher = spawn_publisher(&format!("rtmps://{secure}/cam"), "flv");
    wait_rtmp_listed(&server, "/cam").await;
    let (decoded, log) = read_frames(&format!("rtmp://{plain}/cam"), 10).await;
    assert!(decoded, "served after the reload:\n{log}");
    // A process may read the data directory, but not the server's private key in it.
    let peek = json!({"id": "peek",
        "input": [{"id": "in", "address": "key.pem", "options": ["-f", "data"]}],
        "output": [{"id": "out", "address": "-", "options": ["-f", "null"]}]});
    let (status, body) = server
        .call(reqwest::Method::POST, "/api/v3/process", Some(peek))
        .await;
    common::assert_error(status, &body, 400);
    assert!(body.to_string().contains("server's own files"), "{body}");

    let (status, body) = put(tls("cert.pem", "key.pem"), false).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    reload(&server).await;
    assert!(
        tokio::net::TcpStream::connect(&secure).await.is_err(),
        "the RTMPS port is closed after a reload that turned it off"
    );
    assert!(server.alive());
}

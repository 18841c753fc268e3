//! Sessions (`/api/v3/session[/active]`) counting real readers — an HTTP client reading the
//! HLS playlist FFmpeg writes into the public directory, a WebRTC viewer — with the HLS limit,
//! and the metrics query (`POST /api/v3/metrics`) restreamer-ui sends, changing over time.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::media::{connect_when_ready, make_source, webrtc_process};
use common::whep::OfferOptions;
use common::{ServerLogOnPanic, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

fn hls_process(id: &str) -> Value {
    json!({
        "id": id,
        "options": ["-loglevel", "level+info"],
        "input": [{"id": "in", "address": "testsrc=size=320x240:rate=25", "options": ["-re", "-f", "lavfi"]}],
        "output": [{"id": "hls", "address": "{diskfs}/live.m3u8", "options": [
            "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-f", "hls", "-hls_time", "1",
            "-hls_list_size", "4", "-hls_flags", "delete_segments"]}],
        "autostart": true
    })
}

/// Reads `{base}/live.m3u8` and every new segment it names, as a player does, for `duration`.
async fn play(http: &reqwest::Client, base: &str, duration: Duration) -> u64 {
    play_list(http, base, "live.m3u8", duration).await
}

async fn play_list(http: &reqwest::Client, base: &str, list: &str, duration: Duration) -> u64 {
    let mut seen = HashSet::new();
    let mut bytes = 0;
    let end = Instant::now() + duration;
    while Instant::now() < end {
        let res = http.get(format!("{base}/{list}")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let playlist = res.text().await.unwrap();
        for segment in playlist
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            if seen.insert(segment.to_string()) {
                let res = http.get(format!("{base}/{segment}")).send().await.unwrap();
                if res.status() == StatusCode::OK {
                    bytes += res.bytes().await.unwrap().len() as u64;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bytes
}

async fn metric(server: &TestServer, name: &str, labels: Value) -> f64 {
    let (status, body) = server
        .call(
            Method::POST,
            "/api/v3/metrics",
            Some(json!({"metrics": [{"name": name, "labels": labels}]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["metrics"][0]["values"][0][1].as_f64().unwrap_or(0.0)
}

#[tokio::test]
async fn memfs_hls_reader_is_a_session() {
    let server = TestServer::start_with(&[("STREAMCORE_SESSIONS_IP_IGNORELIST", "")]).await;
    let _log = ServerLogOnPanic(&server);
    let mut process = hls_process("mem");
    process["output"][0]["address"] = json!("{memfs}/mlive.m3u8");
    process["output"][0]["options"]
        .as_array_mut()
        .unwrap()
        .extend([json!("-method"), json!("PUT")]);
    server.create(process).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let res = server
            .http
            .get(server.url("/memfs/mlive.m3u8"))
            .send()
            .await
            .unwrap();
        if res.status() == StatusCode::OK {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "FFmpeg wrote no playlist to the memfs"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let base = format!("{}/memfs", server.base);
    let read = play_list(&server.http, &base, "mlive.m3u8", Duration::from_secs(4)).await;
    assert!(read > 10_000, "read {read} bytes");
    let (status, active) = server.get("/api/v3/session/active?collectors=hls").await;
    assert_eq!(status, StatusCode::OK);
    let list = active["hls"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{active}");
    assert_eq!(list[0]["local"], "/memfs/mlive.m3u8", "{active}");
    let tx = list[0]["bytes_tx"].as_u64().unwrap();
    assert!(tx >= read, "counted {tx} of {read} bytes");
}

#[tokio::test]
async fn hls_reader_is_a_session_and_the_limit_refuses_the_next() {
    let server = TestServer::start_with(&[
        // Test clients are on loopback, which Core's default ignore list leaves out.
        ("STREAMCORE_SESSIONS_IP_IGNORELIST", ""),
        ("STREAMCORE_SESSIONS_MAX_SESSIONS", "1"),
        ("STREAMCORE_METRICS_INTERVAL_SEC", "1"),
    ])
    .await;
    let _log = ServerLogOnPanic(&server);
    server.create(hls_process("hls")).await;
    let playlist = server.data_dir.join("public/live.m3u8");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !playlist.is_file() {
        assert!(Instant::now() < deadline, "FFmpeg wrote no playlist");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let read = play(&server.http, &server.base, Duration::from_secs(5)).await;
    assert!(read > 10_000, "read {read} bytes");
    let (status, active) = server.get("/api/v3/session/active?collectors=hls").await;
    assert_eq!(status, StatusCode::OK);
    let list = active["hls"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{active}");
    let session = &list[0];
    assert_eq!(session["reference"], "live");
    assert_eq!(session["local"], "/live.m3u8");
    assert_eq!(session["remote"], "127.0.0.1");
    let tx = session["bytes_tx"].as_u64().unwrap();
    assert!(tx >= read, "counted {tx} of {read} bytes");
    assert!(
        session["bandwidth_tx_kbit"].as_f64().unwrap() > 0.0,
        "{session}"
    );

    // A second client is one session too many: Core's 509.
    let other = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let res = other.get(server.url("/live.m3u8")).send().await.unwrap();
    let (status, body) = common::decode(res).await;
    assert_eq!(status.as_u16(), 509, "{body}");
    assert_eq!(body["message"], "Number of sessions exceeded");

    let (_, summary) = server.get("/api/v3/session?collectors=hls").await;
    assert_eq!(summary["hls"]["active"]["sessions"], 1, "{summary}");
    assert_eq!(summary["hls"]["active"]["max_sessions"], 1);
    assert_eq!(summary["hls"]["summary"]["sessions"], 1);
    assert_eq!(
        summary["hls"]["summary"]["reference"]["live"]["sessions"],
        1
    );

    // The same figures through the metrics restreamer-ui reads (sampled every second).
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(&server, "session_txbitrate", json!({"collector": "hls"})).await <= 0.0 {
        assert!(Instant::now() < deadline, "no HLS egress in the metrics");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        metric(&server, "session_active", json!({"collector": "hls"})).await,
        1.0
    );
    assert_eq!(
        metric(&server, "session_limit", json!({"collector": "hls"})).await,
        1.0
    );
    let usage = metric(&server, "filesystem_usage", json!({"name": "diskfs"})).await;
    assert!(usage > 0.0, "the HLS files are in diskfs");
}

#[tokio::test]
async fn webrtc_viewer_is_a_session() {
    let server = TestServer::start().await;
    let _log = ServerLogOnPanic(&server);
    let source = make_source(&server.data_dir);
    server.create(webrtc_process("cam", &source)).await;
    let (rx, resource, _) = connect_when_ready(&server, "cam", &OfferOptions::default()).await;
    assert!(rx.wait_frames(10, Duration::from_secs(15)), "no frames");
    let deadline = Instant::now() + Duration::from_secs(15);
    let session = loop {
        let active = server
            .get("/api/v3/session/active?collectors=webrtc")
            .await
            .1;
        if let Some(s) = active["webrtc"]
            .as_array()
            .and_then(|l| l.first())
            .filter(|s| {
                s["bytes_tx"].as_u64() > Some(0) && s["bandwidth_tx_kbit"].as_f64() > Some(0.0)
            })
        {
            break s.clone();
        }
        assert!(Instant::now() < deadline, "no webrtc session: {active}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(session["reference"], "cam");
    assert_eq!(session["id"].as_str(), resource.rsplit('/').next());
    let res = server.http.delete(&resource).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server
        .get("/api/v3/session/active?collectors=webrtc")
        .await
        .1["webrtc"]
        .as_array()
        .unwrap()
        .is_empty()
    {
        assert!(Instant::now() < deadline, "the session outlived its viewer");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        server.get("/api/v3/session?collectors=webrtc").await.1["webrtc"]["summary"]["sessions"],
        1
    );
}

#[tokio::test]
async fn metrics_answer_restreamer_ui_and_keep_a_history() {
    let server = TestServer::start_with(&[("STREAMCORE_METRICS_INTERVAL_SEC", "1")]).await;
    let (status, described) = server.get("/api/v3/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(described
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["name"] == "session_active" && d["labels"] == json!(["collector"])));
    // restreamer-ui's query (src/utils/restreamer.js _getResources): current values only.
    let names = [
        "uptime_uptime",
        "cpu_ncpu",
        "cpu_idle",
        "mem_total",
        "mem_free",
        "filesystem_limit",
        "filesystem_usage",
        "session_limit",
        "session_active",
        "session_txbitrate",
        "session_maxtxbitrate",
    ];
    let query = json!({"metrics": names.iter().map(|n| json!({"name": n})).collect::<Vec<_>>()});
    let (status, body) = server
        .call(Method::POST, "/api/v3/metrics", Some(query))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let metrics = body["metrics"].as_array().unwrap();
    for name in names {
        let series: Vec<&Value> = metrics.iter().filter(|m| m["name"] == name).collect();
        assert!(!series.is_empty(), "{name} missing");
        for s in series {
            assert_eq!(s["values"].as_array().unwrap().len(), 1, "{s}");
            assert!(
                s["values"][0][0].is_i64() && s["values"][0][1].is_number(),
                "{s}"
            );
        }
    }
    let value = |n: &str| {
        metrics.iter().find(|m| m["name"] == n).unwrap()["values"][0][1]
            .as_f64()
            .unwrap()
    };
    assert!(value("cpu_ncpu") >= 1.0);
    assert!(value("mem_total") > value("mem_free") && value("mem_free") > 0.0);
    assert!(metrics
        .iter()
        .any(|m| m["name"] == "filesystem_usage" && m["labels"]["name"] == "memfs"));

    // The history: uptime grows sample after sample.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, body) = server
            .call(
                Method::POST,
                "/api/v3/metrics",
                Some(json!({"timerange_sec": 60, "interval_sec": 1, "metrics": [{"name": "uptime_uptime"}]})),
            )
            .await;
        let values = body["metrics"][0]["values"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if values.len() >= 3 {
            let first = values[0][1].as_f64().unwrap();
            let last = values[values.len() - 1][1].as_f64().unwrap();
            assert!(last > first, "{values:?}");
            assert!(values
                .windows(2)
                .all(|w| w[0][0].as_i64() < w[1][0].as_i64()));
            break;
        }
        assert!(Instant::now() < deadline, "no history: {body}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

//! Media fixtures shared by the WebRTC tests: encoded sources, WebRTC-enabled processes, and a
//! WHEP connect that waits for the stream the way WHEP says to (409 + Retry-After).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::whep::{self, OfferOptions};
use super::TestServer;

/// Encodes `name` in `dir` once with the given FFmpeg arguments (inputs and codecs).
pub fn encode(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let file = dir.join(name);
    if file.exists() {
        return file;
    }
    let status = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .arg(&file)
        .status()
        .expect("ffmpeg");
    assert!(status.success(), "encoding {name} failed");
    file
}

/// A test clip: `testsrc` at `size` and 30 fps plus a 48 kHz sine, `seconds` long, encoded with
/// `codecs` (FFmpeg codec options, whitespace-separated).
pub fn clip(dir: &Path, name: &str, size: &str, seconds: u32, codecs: &str) -> PathBuf {
    let video = format!("testsrc=size={size}:rate=30");
    let seconds = seconds.to_string();
    let mut args = vec![
        "-f",
        "lavfi",
        "-i",
        &video,
        "-f",
        "lavfi",
        "-i",
        "sine=sample_rate=48000",
    ];
    args.extend(["-t", &seconds]);
    args.extend(codecs.split_whitespace());
    encode(dir, name, &args)
}

/// `file` (a fixture shared by a test binary) linked into the server's data directory, where
/// processes may read it (docs/security.md), under the same name.
pub fn shared_into(server: &TestServer, file: &Path) -> PathBuf {
    let linked = server.data_dir.join(file.file_name().expect("a file name"));
    if !linked.exists() && std::fs::hard_link(file, &linked).is_err() {
        std::fs::copy(file, &linked).expect("copy the fixture into the data directory");
    }
    linked
}

/// A looping test source: 640x360 30 fps H.264 (constrained baseline, 1 s GOP) + Opus, 6 s.
pub fn make_source(dir: &Path) -> PathBuf {
    clip(
        dir,
        "source.mkv",
        "640x360",
        6,
        "-c:v libx264 -profile:v baseline -pix_fmt yuv420p -g 30 -bf 0 -c:a libopus -b:a 64k",
    )
}

/// [`make_source`] encoded once per test binary, in a directory of its own (link it into a
/// server's data directory with [`shared_into`]).
pub fn source() -> &'static Path {
    static SOURCE: OnceLock<PathBuf> = OnceLock::new();
    SOURCE.get_or_init(|| make_source(&tempfile::tempdir().expect("tempdir").keep()))
}

/// A real client's offer (gathering blocks, so it runs off the runtime).
pub async fn real_offer() -> (whep::Receiver, String) {
    tokio::task::spawn_blocking(|| whep::Receiver::new(&OfferOptions::default()))
        .await
        .unwrap()
}

/// A process looping `source` with WebRTC on and reconnect after 1 s.
pub fn webrtc_process(id: &str, source: &Path) -> Value {
    json!({
        "id": id,
        "input": [{"id": "in", "address": source.to_string_lossy(), "options": ["-re", "-stream_loop", "-1"]}],
        "output": [{"id": "null", "address": "-", "options": ["-f", "null"]}],
        "reconnect": true,
        "reconnect_delay_seconds": 1,
        "webrtc": {"enabled": true}
    })
}

/// POSTs until the stream accepts viewers: 409 + Retry-After is WHEP's "no media yet" signal.
pub async fn connect_when_ready(
    server: &TestServer,
    id: &str,
    opts: &OfferOptions,
) -> (whep::Receiver, String, String) {
    let url = server.url(&format!("/whep/{id}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let o = opts.clone();
        let (rx, offer) = tokio::task::spawn_blocking(move || whep::Receiver::new(&o))
            .await
            .unwrap();
        let (status, headers, body) = whep::post_offer(&server.http, &url, None, &offer).await;
        if status == reqwest::StatusCode::CONFLICT && Instant::now() < deadline {
            let wait = headers
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .expect("409 carries Retry-After");
            assert!(wait >= 1);
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        assert_eq!(
            status,
            reqwest::StatusCode::CREATED,
            "{body}\n{}",
            server.log.lock().unwrap().join("\n")
        );
        let location = headers
            .get(reqwest::header::LOCATION)
            .unwrap()
            .to_str()
            .unwrap();
        let etag = headers
            .get(reqwest::header::ETAG)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        rx.set_answer(&body).unwrap();
        return (rx, server.url(location), etag);
    }
}

/// A valid offer broken one way each, as hostile clients send them: `direction` is the offer's
/// own direction attribute (`recvonly` for a viewer, `sendonly` for a publisher) and
/// `opposite` the one that makes no sense for the endpoint.
pub fn broken_offers(offer: &str, direction: &str, opposite: &str) -> Vec<(&'static str, String)> {
    let without = |prefix: &str| -> String {
        offer
            .lines()
            .filter(|l| !l.starts_with(prefix))
            .map(|l| format!("{l}\r\n"))
            .collect()
    };
    let replaced = |from: &str, to: &str| offer.replace(from, to);
    vec![
        ("no fingerprint", without("a=fingerprint")),
        ("no ice-pwd", without("a=ice-pwd")),
        ("no mid", without("a=mid")),
        ("no rtpmap", without("a=rtpmap")),
        ("no bundle group", without("a=group")),
        ("no extmap", without("a=extmap")),
        ("no rtcp-fb", without("a=rtcp-fb")),
        (
            "setup passive",
            replaced("a=setup:actpass", "a=setup:passive"),
        ),
        (
            "wrong direction",
            replaced(&format!("a={direction}"), &format!("a={opposite}")),
        ),
        (
            "inactive",
            replaced(&format!("a={direction}"), "a=inactive"),
        ),
        (
            "all ports zero",
            replaced("m=video 9", "m=video 0").replace("m=audio 9", "m=audio 0"),
        ),
        ("duplicate mids", replaced("a=mid:1", "a=mid:0")),
        (
            "bogus candidates",
            replaced(
                "a=ice-options",
                "a=candidate:1 1 udp 1 999.1.1.1 99999 typ host\r\na=ice-options",
            ),
        ),
        ("truncated", offer[..offer.len() / 2].to_string()),
    ]
}

//! Secure defaults (docs/security.md) against the real binary: process definitions cannot read or
//! write files outside the data directory, FFmpeg runs unprivileged when the server is root, the
//! control API answers only this machine while no credentials are set, and other sites' pages
//! cannot drive it.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{testsrc_process, TestServer};
use reqwest::{header, Method, StatusCode};
use serde_json::{json, Value};

/// A definition that reads `input` (with `input_options`) and writes `output`.
fn definition(id: &str, input: &str, input_options: &[&str], output: &str) -> Value {
    json!({
        "id": id,
        "input": [{"id": "in", "address": input, "options": input_options}],
        "output": [{"id": "out", "address": output, "options": ["-c", "copy", "-f", "data", "-y"]}],
        "autostart": true
    })
}

/// Every way the outside review used (or could have used) to read or write a file of the host.
fn hostile_definitions(server: &TestServer, outside: &std::path::Path) -> Vec<(Value, String)> {
    let secret = server.data_dir.join("jwt_secret");
    let secret = secret.to_string_lossy();
    let owned = outside.join("owned.txt");
    let owned = owned.to_string_lossy();
    let lavfi = ["-f", "lavfi"];
    vec![
        (
            definition("a", "file:///etc/shadow", &[], "{diskfs}/shadow.txt"),
            "file:///etc/shadow".into(),
        ),
        (
            definition("b", "/etc/shadow", &["-f", "data"], "{diskfs}/shadow.txt"),
            "/etc/shadow".into(),
        ),
        (
            definition("c", &secret, &["-f", "data"], "{diskfs}/secret.txt"),
            secret.to_string(),
        ),
        (
            definition("d", "testsrc", &lavfi, &owned),
            owned.to_string(),
        ),
        (
            definition("e", "testsrc", &lavfi, &format!("file:{owned}")),
            format!("file:{owned}"),
        ),
        (
            definition("f", "amovie=/etc/shadow:f=u8", &lavfi, "{diskfs}/x.raw"),
            "amovie=/etc/shadow".into(),
        ),
        (
            definition("g", "concat:/etc/passwd|/etc/shadow", &[], "{diskfs}/x.raw"),
            "concat:".into(),
        ),
        (
            definition(
                "h",
                "{diskfs}/../../../../../../etc/shadow",
                &[],
                "{diskfs}/x.raw",
            ),
            "etc/shadow".into(),
        ),
        (
            json!({
                "id": "i",
                "options": ["-vstats_file", owned],
                "input": [{"address": "testsrc", "options": lavfi}],
                "output": [{"address": "-", "options": ["-f", "null"]}]
            }),
            "-vstats_file".into(),
        ),
        (
            json!({
                "id": "j",
                "input": [{"address": "testsrc", "options": lavfi}],
                "output": [{"address": "{diskfs}/x.mp4", "options": ["-vf", "drawtext=textfile=/etc/shadow"]}]
            }),
            "textfile".into(),
        ),
    ]
}

async fn refuses_file_access(mut server: TestServer, auth: bool) {
    if auth {
        server.login().await;
    }
    let _log = common::ServerLogOnPanic(&server);
    let outside = tempfile::tempdir().unwrap();
    // A running process that the refused PUTs below must leave alone.
    server.create(testsrc_process("keep")).await;
    server
        .wait_state("keep", Duration::from_secs(15), |s| s["exec"] == "running")
        .await;
    let kept_config = server.get("/api/v3/process/keep/config").await.1;

    for (config, named) in hostile_definitions(&server, outside.path()) {
        let (status, body) = server
            .call(Method::POST, "/api/v3/process", Some(config.clone()))
            .await;
        common::assert_error(status, &body, 400);
        let details = body["details"].to_string();
        assert!(
            details.contains(&named),
            "auth {auth}: {details} should name {named}"
        );
        assert!(details.contains("not allowed"), "{details}");

        let mut update = config.clone();
        update["id"] = json!("keep");
        let (status, body) = server
            .call(Method::PUT, "/api/v3/process/keep", Some(update))
            .await;
        common::assert_error(status, &body, 400);
    }
    let (_, list) = server.get("/api/v3/process").await;
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["keep"], "a refused definition was stored");
    assert_eq!(
        server.get("/api/v3/process/keep/config").await.1,
        kept_config
    );
    assert_eq!(server.state("keep").await["exec"], "running");
    let public = server.data_dir.join("public");
    for leaked in ["shadow.txt", "secret.txt", "x.raw"] {
        assert!(!public.join(leaked).exists(), "{leaked} was written");
    }
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn file_reads_and_writes_outside_the_data_directory_are_refused_with_auth_off() {
    refuses_file_access(TestServer::start().await, false).await;
}

#[tokio::test]
async fn file_reads_and_writes_outside_the_data_directory_are_refused_with_auth_on() {
    refuses_file_access(TestServer::start_with_auth(&[]).await, true).await;
}

/// The uid a process runs as, from /proc.
fn uid_of(pid: i32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// With an allow rule that lets everything through, the FFmpeg account is the remaining wall: as
/// root, the server runs FFmpeg as `nobody`, which cannot read a root-only file, while it still
/// writes its outputs into the data directory.
#[tokio::test]
async fn ffmpeg_runs_unprivileged_when_the_server_is_root() {
    let root = nix::unistd::Uid::effective().is_root();
    let server = TestServer::start_with(&[("STREAMCORE_FFMPEG_ACCESS_INPUT_ALLOW", ".*")]).await;
    let _log = common::ServerLogOnPanic(&server);
    // A file only its owner may read, outside the data directory.
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret.txt");
    std::fs::write(&secret, "top secret\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();

    let mut config = testsrc_process("writer");
    config["output"] = json!([{"id": "out", "address": "{diskfs}/writer.ts", "options": ["-t", "30", "-f", "mpegts"]}]);
    server.create(config).await;
    server
        .wait_state("writer", Duration::from_secs(15), |s| {
            s["exec"] == "running"
        })
        .await;
    let children = server.ffmpeg_children();
    assert!(!children.is_empty());
    let expected = if root {
        65534
    } else {
        nix::unistd::Uid::effective().as_raw()
    };
    for pid in &children {
        assert_eq!(
            uid_of(*pid),
            expected,
            "ffmpeg {pid} runs as the wrong user"
        );
    }
    let written = server.data_dir.join("public/writer.ts");
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::fs::metadata(&written).map_or(0, |m| m.len()) == 0 {
        assert!(
            Instant::now() < deadline,
            "the unprivileged FFmpeg wrote nothing"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    if !root {
        return;
    }
    let reader = definition(
        "reader",
        &secret.to_string_lossy(),
        &["-f", "data"],
        "{diskfs}/stolen.txt",
    );
    server.create(reader).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, report) = server.get("/api/v3/process/reader/report").await;
        let text = report.to_string();
        if text.contains("Permission denied") {
            break;
        }
        assert!(Instant::now() < deadline, "no permission error: {text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stolen = server.data_dir.join("public/stolen.txt");
    assert!(std::fs::read(&stolen).map_or(true, |b| b.is_empty()));
    // The server's own files stay closed to FFmpeg.
    for own in ["jwt_secret", "streamcore.db"] {
        let mode = std::fs::metadata(server.data_dir.join(own))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{own} is readable by others: {mode:o}");
    }
}

/// Runs `ip` and panics with its output when it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace joined to this host by a veth pair: a second host on a private link that
/// this test made, so a request can come from an address that is not loopback.
struct RemoteHost {
    name: String,
    host_link: String,
    /// The host's address on the link, which the remote host connects to.
    host_ip: String,
}

impl RemoteHost {
    fn create() -> RemoteHost {
        let tag = std::process::id() % 10000;
        let name = format!("scsec{tag}");
        let host_link = format!("scsh{tag}");
        let peer_link = format!("scsp{tag}");
        let octet = 1 + tag % 250;
        let host_ip = format!("10.213.{octet}.1");
        let remote_ip = format!("10.213.{octet}.2");
        let remote = RemoteHost {
            name: name.clone(),
            host_link: host_link.clone(),
            host_ip: host_ip.clone(),
        };
        ip(&["netns", "add", &name]);
        ip(&[
            "link", "add", &host_link, "type", "veth", "peer", "name", &peer_link,
        ]);
        ip(&["link", "set", &peer_link, "netns", &name]);
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &host_link]);
        ip(&["link", "set", &host_link, "up"]);
        ip(&[
            "netns",
            "exec",
            &name,
            "ip",
            "addr",
            "add",
            &format!("{remote_ip}/30"),
            "dev",
            &peer_link,
        ]);
        ip(&[
            "netns", "exec", &name, "ip", "link", "set", &peer_link, "up",
        ]);
        remote
    }

    /// curl from the remote host: status and body.
    fn curl(&self, method: &str, url: &str, extra: &[&str]) -> (u16, String) {
        let out = Command::new("ip")
            .args([
                "netns", "exec", &self.name, "curl", "-sS", "-m", "10", "-X", method,
            ])
            .args(extra)
            .args(["-w", "\n%{http_code}", url])
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }
}

impl Drop for RemoteHost {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_link])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Without credentials the control API answers this machine only; another host gets 403 with a
/// body that says how to set credentials, and can still watch public streams' list and ping.
#[tokio::test]
async fn remote_clients_cannot_control_a_server_without_credentials() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "this test makes a network namespace and needs root (CI runs as root)"
    );
    let remote = RemoteHost::create();
    let server = TestServer::start_with(&[("STREAMCORE_HTTP_ADDRESS", "0.0.0.0:0")]).await;
    let _log = common::ServerLogOnPanic(&server);
    let port = server.base.rsplit(':').next().unwrap().to_string();
    let remote_base = format!("http://{}:{port}", remote.host_ip);
    let json = [
        "-H",
        "Content-Type: application/json",
        "--data",
        r#"{"id":"evil","input":[{"address":"testsrc","options":["-f","lavfi"]}],"output":[{"address":"-","options":["-f","null"]}]}"#,
    ];

    let (status, body) = remote.curl("POST", &format!("{remote_base}/api/v3/process"), &json);
    assert_eq!(status, 403, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["code"], 403);
    assert!(
        body["details"]
            .to_string()
            .contains("STREAMCORE_AUTH_USERNAME"),
        "{body}"
    );
    for path in ["/api/v3/process", "/api/v3/skills", "/api/v3/metadata"] {
        let (status, _) = remote.curl("GET", &format!("{remote_base}{path}"), &[]);
        assert_eq!(status, 403, "{path}");
    }
    let (status, body) = remote.curl("GET", &format!("{remote_base}/api"), &[]);
    assert_eq!(status, 200);
    assert!(
        serde_json::from_str::<Value>(&body).unwrap()["id"].is_null(),
        "{body}"
    );
    let (status, body) = remote.curl("GET", &format!("{remote_base}/ping"), &[]);
    assert_eq!((status, body.as_str()), (200, "pong"));
    let (status, _) = remote.curl("GET", &format!("{remote_base}/whep"), &[]);
    assert_eq!(status, 200);

    // The same request from this machine works, so the refusal was about the peer.
    let local = format!("http://127.0.0.1:{port}");
    let res = server
        .http
        .post(format!("{local}/api/v3/process"))
        .json(&testsrc_process("mine"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = server
        .http
        .get(format!("{local}/api/v3/process"))
        .send()
        .await
        .unwrap();
    let list: Value = res.json().await.unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
}

/// A page of another site (or one that rebinds its name to 127.0.0.1) cannot drive the API from
/// a browser on this machine: no CORS grant, and the request itself is refused.
#[tokio::test]
async fn other_sites_cannot_use_the_api_from_a_browser() {
    let server = TestServer::start().await;
    let post = |origin: &'static str, host: Option<&'static str>| {
        let mut req = server
            .http
            .post(server.url("/api/v3/process"))
            .header(header::ORIGIN, origin)
            .json(&testsrc_process("x"));
        if let Some(host) = host {
            req = req.header(header::HOST, host);
        }
        req.send()
    };
    let res = post("http://evil.example", None).await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(res
        .headers()
        .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
        .is_none());
    // DNS rebinding: the page's own name in Host and Origin, from a loopback peer.
    let res = post("http://evil.example:8080", Some("evil.example:8080"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let preflight = server
        .http
        .request(Method::OPTIONS, server.url("/api/v3/process"))
        .header(header::ORIGIN, "http://evil.example")
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .send()
        .await
        .unwrap();
    assert!(preflight
        .headers()
        .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
        .is_none());
    assert_eq!(server.get("/api/v3/process").await.1, json!([]));

    // A named origin is let in; WHEP stays open to every origin.
    let server =
        TestServer::start_with(&[("STREAMCORE_HTTP_CORS_ORIGINS", "http://ui.example")]).await;
    let res = server
        .http
        .post(server.url("/api/v3/process"))
        .header(header::ORIGIN, "http://ui.example")
        .json(&testsrc_process("ok"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "http://ui.example"
    );
    let preflight = server
        .http
        .request(Method::OPTIONS, server.url("/whep/ok"))
        .header(header::ORIGIN, "http://player.example")
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(
        preflight.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "*"
    );
}

/// Landlock confines FFmpeg whatever its account may read: a world-readable file outside the
/// data directory, let through by an allow-everything rule, still cannot be opened; the same file
/// under `ffmpeg.read_paths` can.
#[tokio::test]
async fn landlock_confines_ffmpeg_to_the_data_directory() {
    let outside = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(outside.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let open_file = outside.path().join("open.txt");
    std::fs::write(&open_file, "anyone may read this\n").unwrap();
    std::fs::set_permissions(&open_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let readable = outside.path().join("readable");
    std::fs::create_dir(&readable).unwrap();
    std::fs::set_permissions(&readable, std::fs::Permissions::from_mode(0o755)).unwrap();
    let listed = readable.join("listed.txt");
    std::fs::write(&listed, "read_paths lets this through\n").unwrap();
    std::fs::set_permissions(&listed, std::fs::Permissions::from_mode(0o644)).unwrap();

    let server = TestServer::start_with(&[
        ("STREAMCORE_FFMPEG_ACCESS_INPUT_ALLOW", ".*"),
        ("STREAMCORE_FFMPEG_READ_PATHS", readable.to_str().unwrap()),
    ])
    .await;
    let _log = common::ServerLogOnPanic(&server);
    assert!(
        server.logged("ffmpeg is confined by Landlock"),
        "Landlock is not enforced on this kernel"
    );
    let copy = |id: &str, input: &std::path::Path| {
        let mut d = definition(
            id,
            &input.to_string_lossy(),
            &["-f", "data"],
            "{diskfs}/{processid}.txt",
        );
        d["output"][0]["options"] = json!(["-map", "0", "-c", "copy", "-f", "data", "-y"]);
        d
    };
    server.create(copy("blocked", &open_file)).await;
    server.create(copy("listed", &listed)).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, report) = server.get("/api/v3/process/blocked/report").await;
        if report.to_string().contains("Permission denied") {
            break;
        }
        assert!(Instant::now() < deadline, "no permission error: {report}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let copied = server.data_dir.join("public/listed.txt");
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::fs::read(&copied).unwrap_or_default() != b"read_paths lets this through\n" {
        assert!(
            Instant::now() < deadline,
            "the read_paths file was not copied"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        std::fs::read(server.data_dir.join("public/blocked.txt")).map_or(true, |b| b.is_empty())
    );
}

/// Refused requests change nothing that runs: a PUT refused for a hostile output (asking for
/// other WebRTC options too) and a POST refused as a duplicate leave a connected viewer decoding.
#[tokio::test]
async fn refused_requests_leave_a_live_viewer_decoding() {
    use common::media::{connect_when_ready, make_source, webrtc_process};
    use common::whep::OfferOptions;
    let server = TestServer::start().await;
    let _log = common::ServerLogOnPanic(&server);
    let source = make_source(&server.data_dir);
    server.create(webrtc_process("live", &source)).await;
    let (rx, _resource, _) = connect_when_ready(&server, "live", &OfferOptions::default()).await;
    assert!(
        rx.wait_frames(30, Duration::from_secs(15)),
        "the viewer never decoded"
    );

    let mut hostile = webrtc_process("live", &source);
    hostile["webrtc"]["force_transcode"] = json!(true);
    hostile["output"][0]["address"] = json!("/tmp/owned.txt");
    let (status, body) = server
        .call(Method::PUT, "/api/v3/process/live", Some(hostile))
        .await;
    common::assert_error(status, &body, 400);
    let mut duplicate = webrtc_process("live", &source);
    duplicate["webrtc"]["force_transcode"] = json!(true);
    let (status, body) = server
        .call(Method::POST, "/api/v3/process", Some(duplicate))
        .await;
    common::assert_error(status, &body, 400);

    let before = rx.frames_decoded();
    assert!(
        rx.wait_frames(before + 60, Duration::from_secs(10)),
        "frames stopped at {} after the refused requests (from {before}); state {}",
        rx.frames_decoded(),
        rx.connection_state()
    );
    let (_, stream) = server.get("/api/v3/process/live/webrtc").await;
    assert_eq!(stream["viewers"], 1, "{stream}");
    assert!(!stream.to_string().contains("transcode\":true"), "{stream}");
}

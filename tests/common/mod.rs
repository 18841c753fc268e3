//! Test harness: runs the real `streamcore` binary on a private data directory and talks to it
//! over real HTTP.

#![allow(dead_code)]

pub mod ice;
pub mod ingest;
pub mod lipsync;
pub mod media;
pub mod sources;
pub mod whep;
pub mod whip;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::{Client, Method, RequestBuilder, Response, StatusCode};
use serde_json::{json, Value};

/// Prints the server's log when the test panics; hold one for the length of a test.
pub struct ServerLogOnPanic<'a>(pub &'a TestServer);

impl Drop for ServerLogOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.0.log.lock().unwrap_or_else(|e| e.into_inner());
            let tail = &log[log.len().saturating_sub(150)..];
            eprintln!("--- server log (tail) ---\n{}", tail.join("\n"));
        }
    }
}

/// A private RTP port range for the next server: 100 ports out of 41000–48999, by test process
/// and server count, so concurrent servers (and concurrent test binaries) do not share one.
fn rtp_range() -> (u16, u16) {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let slot = (std::process::id().wrapping_mul(7) + NEXT.fetch_add(1, Ordering::Relaxed)) % 80;
    let min = 41000 + slot as u16 * 100;
    (min, min + 99)
}

/// A running server.
pub struct TestServer {
    child: Child,
    /// `http://127.0.0.1:port`.
    pub base: String,
    /// Data directory (kept across restarts of the same test).
    pub data_dir: PathBuf,
    /// Everything the server printed to stderr.
    pub log: Arc<Mutex<Vec<String>>>,
    /// Bearer token sent with every request made through [`TestServer::request`].
    pub token: Option<String>,
    /// HTTP client.
    pub http: Client,
    env: Vec<(String, String)>,
}

/// Admin credentials used by tests that turn auth on.
pub const USER: &str = "admin";
/// Admin password used by tests that turn auth on.
pub const PASS: &str = "secret-pw";

impl TestServer {
    /// Starts a server with auth off.
    pub async fn start() -> TestServer {
        Self::start_with(&[]).await
    }

    /// Starts a server with extra `STREAMCORE_*` variables.
    pub async fn start_with(env: &[(&str, &str)]) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir").keep();
        Self::start_in(
            &dir,
            env.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
        .await
    }

    /// Starts a server whose FFmpeg is `script`, written to `path` and made executable: a
    /// stand-in that ends in the real `ffmpeg`. The sandbox is off, since the script lives in
    /// the test's own temporary directory and writes files there, which the unprivileged,
    /// Landlock-confined FFmpeg account could not.
    pub async fn start_with_ffmpeg_script(path: &Path, script: &str) -> TestServer {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(path, script).expect("write the FFmpeg script");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
            .expect("make the FFmpeg script executable");
        Self::start_with(&[
            (
                "STREAMCORE_FFMPEG_BINARY",
                path.to_str().expect("a UTF-8 path"),
            ),
            ("STREAMCORE_FFMPEG_USER", ""),
            ("STREAMCORE_FFMPEG_SANDBOX", "false"),
        ])
        .await
    }

    /// Starts a server with auth on.
    pub async fn start_with_auth(extra: &[(&str, &str)]) -> TestServer {
        let mut env = vec![
            ("STREAMCORE_AUTH_USERNAME", USER),
            ("STREAMCORE_AUTH_PASSWORD", PASS),
        ];
        env.extend_from_slice(extra);
        Self::start_with(&env).await
    }

    async fn start_in(dir: &Path, env: Vec<(String, String)>) -> TestServer {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_streamcore"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("STREAMCORE_HTTP_ADDRESS", "127.0.0.1:0")
            .env("STREAMCORE_DATA_DIR", dir)
            .env("STREAMCORE_DEMO", "false")
            .env(
                "STREAMCORE_LOG",
                std::env::var("STREAMCORE_TEST_SERVER_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("STREAMCORE_FFMPEG_KILL_TIMEOUT_SECONDS", "2")
            .env("STREAMCORE_AUTH_LOGIN_FAILURE_DELAY_MS", "300");
        // Each server of a test run gets its own loopback RTP range. WHIP inputs hand their ports
        // to FFmpeg for each run, and a second server allocating in the same range at that moment
        // would take them (the server recovers by moving the input, but tests want no detours).
        let (min, max) = rtp_range();
        cmd.env("STREAMCORE_WEBRTC_RTP_PORT_MIN", min.to_string())
            .env("STREAMCORE_WEBRTC_RTP_PORT_MAX", max.to_string());
        // GStreamer debugging of the server from the test's environment.
        for var in ["GST_DEBUG", "GST_DEBUG_NO_COLOR"] {
            if let Ok(v) = std::env::var(var) {
                cmd.env(var, v);
            }
        }
        // Its own file: the test process's GStreamer (the viewers) writes to GST_DEBUG_FILE too.
        if let Ok(v) = std::env::var("GST_DEBUG_FILE") {
            cmd.env("GST_DEBUG_FILE", format!("{v}.server"));
        }
        for (k, v) in &env {
            cmd.env(k, v);
        }
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn streamcore");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            let re = regex::Regex::new(r"streamcore listening address=(\S+)").unwrap();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(c) = re.captures(&strip_ansi(&line)) {
                    let _ = tx.send(c[1].to_string());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "server did not start; log:\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
        };
        TestServer {
            child,
            base: format!("http://{addr}"),
            data_dir: dir.to_path_buf(),
            log,
            token: None,
            http: Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            env,
        }
    }

    /// Kills the server with SIGKILL (no shutdown handling at all).
    pub fn kill9(&mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
    }

    /// Starts a new server on the same data directory and settings.
    pub async fn restart_after_kill(mut self) -> TestServer {
        self.kill9();
        let env = std::mem::take(&mut self.env);
        let dir = self.data_dir.clone();
        TestServer::start_in(&dir, env).await
    }

    /// Server pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// False once the server process has exited (it stays a zombie until it is reaped on drop).
    pub fn alive(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
            .ok()
            .and_then(|stat| {
                stat.rsplit_once(')')
                    .map(|(_, rest)| rest.trim_start().to_string())
            })
            .is_some_and(|rest| !rest.starts_with('Z') && !rest.starts_with('X'))
    }

    /// Logs in and keeps the access token for later requests.
    pub async fn login(&mut self) -> Value {
        let res = self
            .http
            .post(self.url("/api/login"))
            .json(&json!({"username": USER, "password": PASS}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let body: Value = res.json().await.unwrap();
        self.token = Some(body["access_token"].as_str().unwrap().to_string());
        body
    }

    /// Whether the server has logged a line containing `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    /// Waits until the server logs a line containing `needle` (the log line is the event);
    /// false when `timeout` passes first.
    pub async fn wait_logged(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.logged(needle) {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Absolute URL of a path.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A request with the stored token.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let req = self.http.request(method, self.url(path));
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// Sends a request and returns status and JSON body (`Null` when the body is not JSON).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.request(method, path);
        if let Some(body) = body {
            req = req.json(&body);
        }
        decode(req.send().await.unwrap()).await
    }

    /// GET returning status and JSON.
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    /// GET returning the body as text (for non-JSON answers such as `/metrics`).
    pub async fn get_text(&self, path: &str) -> String {
        self.http
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Creates a process and asserts 200.
    pub async fn create(&self, config: Value) -> Value {
        let (status, body) = self
            .call(Method::POST, "/api/v3/process", Some(config))
            .await;
        assert_eq!(status, StatusCode::OK, "create failed: {body}");
        body
    }

    /// Runs a process command and returns the status.
    pub async fn command(&self, id: &str, command: &str) -> (StatusCode, Value) {
        self.call(
            Method::PUT,
            &format!("/api/v3/process/{id}/command"),
            Some(json!({ "command": command })),
        )
        .await
    }

    /// The state of a process.
    pub async fn state(&self, id: &str) -> Value {
        let (status, body) = self.get(&format!("/api/v3/process/{id}/state")).await;
        assert_eq!(status, StatusCode::OK, "state: {body}");
        body
    }

    /// Polls the process state until `pred` holds; panics with the last state after `timeout`.
    /// The API has no push channel for state, so polling it is how a client observes changes.
    pub async fn wait_state(
        &self,
        id: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let state = self.state(id).await;
            if pred(&state) {
                return state;
            }
            if Instant::now() > deadline {
                let report = self.get(&format!("/api/v3/process/{id}/report")).await.1;
                panic!("timed out waiting on {id}; state: {state:#}\nreport: {report:#}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Pids of the server's ffmpeg children.
    pub fn ffmpeg_children(&self) -> Vec<i32> {
        children_of(self.pid() as i32)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Unix seconds now (JWT time claims).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Status and JSON body of a response.
pub async fn decode(res: Response) -> (StatusCode, Value) {
    let status = res.status();
    let text = res.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Asserts the datarhei error shape with the given status.
pub fn assert_error(status: StatusCode, body: &Value, expected: u16) {
    assert_eq!(status.as_u16(), expected, "body: {body}");
    assert_eq!(body["code"], json!(expected), "body: {body}");
    assert!(body["message"].is_string(), "body: {body}");
    assert!(body["details"].is_array(), "body: {body}");
}

/// Direct children of `pid`, from `/proc`.
pub fn children_of(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // Fields after the parenthesised command name: state, ppid, ...
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(1).and_then(|p| p.parse::<i32>().ok()) == Some(pid) && fields[0] != "Z" {
            out.push(child);
        }
    }
    out
}

/// A testsrc → null-output process definition.
pub fn testsrc_process(id: &str) -> Value {
    json!({
        "id": id,
        "options": ["-loglevel", "level+info"],
        "input": [{"id": "in", "address": "testsrc=size=320x240:rate=25", "options": ["-re", "-f", "lavfi"]}],
        "output": [{"id": "out", "address": "-", "options": ["-f", "null"]}],
        "autostart": true
    })
}

fn strip_ansi(s: &str) -> String {
    let re = regex::Regex::new(r"\x1b\[[0-9;]*m").unwrap();
    re.replace_all(s, "").into_owned()
}

/// Threads and file descriptors of a process, from /proc.
///
/// Threads of tokio's runtime are not counted: its blocking pool grows to as many threads as ran
/// at once (a burst of negotiations, four per CPU) and the server's periodic blocking jobs
/// (cleanup, metrics, sessions) wake them in turn, so they outlive their 10 s keep-alive. That is
/// the pool's size, not a leak; a blocking job that never ends shows up as a request that never
/// returns, which the tests assert on.
pub fn threads_and_fds(pid: u32) -> (usize, usize) {
    let threads = thread_names(pid)
        .iter()
        .filter(|(name, _)| name.as_str() != "tokio-rt-worker")
        .map(|(_, count)| count)
        .sum();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    (threads, fds)
}

/// Waits for the server's threads and fds to settle and asserts they are back at `baseline` or
/// below, and that no sessions are left.
pub async fn assert_back_to(server: &TestServer, baseline: (usize, usize)) {
    assert_eq!(
        server.get("/api/v3/webrtc/sessions").await.1,
        serde_json::json!([])
    );
    let after = settled_counts(server.pid(), Some(baseline)).await;
    assert_no_growth(server.pid(), after, baseline, "the sessions ended");
}

/// Counts settle shortly after a teardown (GLib thread pools park idle threads for a moment), so
/// read until two consecutive samples agree, or until they are back at `target` or below.
pub async fn settled_counts(pid: u32, target: Option<(usize, usize)>) -> (usize, usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = threads_and_fds(pid);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = threads_and_fds(pid);
        let back = target.is_some_and(|t| now.0 <= t.0 && now.1 <= t.1);
        if back || (target.is_none() && now == last) || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

/// Threads that may be alive at any sample without belonging to anything: GLib's task pool parks
/// a finished streaming thread (it keeps the name of its last pad). A leak grows with the number
/// of cycles, far past this.
const PARKED_THREADS: usize = 2;

/// Threads and fds did not grow past `baseline` (threads: past the parked ones). Fewer is fine:
/// the test client's keep-alive connections may close in the meantime (the server's idle timeout),
/// which means nothing. On failure the message names the threads, so a leak can be told apart.
pub fn assert_no_growth(pid: u32, after: (usize, usize), baseline: (usize, usize), what: &str) {
    assert!(
        after.0 <= baseline.0 + PARKED_THREADS && after.1 <= baseline.1,
        "threads/fds after {what}: {after:?} vs baseline {baseline:?}; threads now: {:?}",
        thread_names(pid)
    );
}

/// Names of a process's threads and how many share each name, from /proc.
pub fn thread_names(pid: u32) -> std::collections::BTreeMap<String, usize> {
    let mut names = std::collections::BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        *names.entry(name.trim().to_string()).or_insert(0) += 1;
    }
    names
}

/// Runs the server binary with `env` and expects it to refuse to start; returns its stderr.
pub fn start_fails(env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_streamcore"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("STREAMCORE_HTTP_ADDRESS", "127.0.0.1:0")
        .env("STREAMCORE_DATA_DIR", dir.path())
        .env("STREAMCORE_DEMO", "false");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("run streamcore");
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    // A start-up error makes the server exit by itself; still running after this long means it
    // started, which is the failure this test looks for.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server started:\n{}", reader.join().unwrap());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    reader.join().unwrap()
}

/// Reloads and waits until `GET /api` shows the restarted instance (its `created_at` changes),
/// as restreamer-ui does after a reload.
pub async fn reload(server: &TestServer) {
    let before = server.get("/api").await.1["created_at"].clone();
    let (status, body) = server.get("/api/v3/config/reload").await;
    assert_eq!((status, &body), (StatusCode::OK, &json!("OK")));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(res) = server.http.get(server.url("/api")).send().await {
            if let Ok(about) = res.json::<Value>().await {
                // The minimal About of a server that now wants a token has no created_at.
                if about["created_at"] != before {
                    return;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "the server did not come back after the reload"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

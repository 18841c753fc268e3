//! Hostile clients against the real binary (issue 9): half-open connections (slowloris) over
//! the connection cap, login brute force and oversized login bodies, not-yet-valid tokens,
//! metadata numbers that must round-trip exactly, and process ids that break paths.

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::{assert_error, decode, threads_and_fds, unix_now, TestServer, PASS, USER};
use rand::{Rng, SeedableRng};
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The id rule as the server states it (src/process/id.rs).
const ID_RULE: &str =
    "a process ID has at most 255 bytes and contains no control characters, no '/' and no '..'";

fn set_fd_limit(pid: libc::pid_t, soft: u64, hard: u64) {
    let limit = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: prlimit only reads `limit`; a null old-limit pointer is allowed.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &limit, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

/// Raises this test process's own descriptor limit as far as it may (up to `wanted`) and
/// returns what it got.
fn raise_own_fd_limit(wanted: u64) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
        0
    );
    let got = wanted.min(limit.rlim_max);
    if limit.rlim_cur < got {
        set_fd_limit(0, got, limit.rlim_max);
    }
    got.max(limit.rlim_cur)
}

/// A client that opens a new connection for every request (pooled connections may be closed by
/// the server as idle, which is not what these tests look at).
fn fresh_client() -> Client {
    Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn ping(srv: &TestServer) -> Duration {
    let started = Instant::now();
    let res = fresh_client().get(srv.url("/ping")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.text().await.unwrap(), "pong");
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_over_the_cap_are_closed_while_ping_answers() {
    const HEADER_TIMEOUT: Duration = Duration::from_secs(1);
    // Scheduling on a loaded 2-core machine; far below the 10 s default timeout.
    const SLACK: Duration = Duration::from_millis(1500);
    // The report's numbers: 1,100 half-open connections, the default cap of 512. Where this
    // process may not hold that many sockets, fewer, with the cap at half of them.
    let fds = raise_own_fd_limit(1100 + 300);
    let half_open = 1100.min(fds as usize - 300);
    let cap = 512.min(half_open / 2).to_string();
    let srv = TestServer::start_with(&[
        ("STREAMCORE_HTTP_HEADER_READ_TIMEOUT_MS", "1000"),
        ("STREAMCORE_HTTP_MAX_CONNECTIONS", &cap),
    ])
    .await;
    let _log = common::ServerLogOnPanic(&srv);
    // The situation of the report: the server under a 1,024 descriptor limit.
    let server_fds = 1024.min(fds);
    set_fd_limit(srv.pid() as libc::pid_t, server_fds, server_fds);
    ping(&srv).await;
    let (_, baseline_fds) = threads_and_fds(srv.pid());

    let addr = srv.base.trim_start_matches("http://").to_string();
    let mut sockets = Vec::with_capacity(half_open);
    let mut pings = Vec::new();
    for i in 0..half_open {
        let mut socket = TcpStream::connect(&addr).await.unwrap();
        // Most send half a request; every tenth sends nothing at all.
        if i % 10 != 0 {
            socket
                .write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n")
                .await
                .unwrap();
        }
        let opened = Instant::now();
        sockets.push(tokio::spawn(async move {
            let mut buf = [0u8; 256];
            // EOF or a reset: either way the server closed it. Bounded far above the timeout.
            let read = tokio::time::timeout(Duration::from_secs(10), socket.read(&mut buf)).await;
            let closed = match read {
                Ok(Ok(0)) | Ok(Err(_)) => true,
                Ok(Ok(n)) => panic!(
                    "a half-open connection got {n} bytes: {:?}",
                    String::from_utf8_lossy(&buf[..n])
                ),
                Err(_) => false,
            };
            (closed, opened.elapsed())
        }));
        if i % (half_open / 4) == half_open / 4 - 1 {
            pings.push(ping(&srv).await);
        }
    }
    pings.push(ping(&srv).await);

    let mut slowest = Duration::ZERO;
    for socket in sockets {
        let (closed, after) = socket.await.unwrap();
        assert!(
            closed,
            "a half-open connection was still open after {after:?}"
        );
        slowest = slowest.max(after);
    }
    let worst_ping = pings.iter().max().unwrap();
    eprintln!(
        "{half_open} half-open connections (cap {cap}): slowest closed after {slowest:?}; /ping during the flood: {pings:?}"
    );
    assert!(
        slowest <= HEADER_TIMEOUT + SLACK,
        "slowest close {slowest:?}"
    );
    assert!(
        *worst_ping < Duration::from_secs(1),
        "/ping took {worst_ping:?}"
    );

    assert!(srv.alive());
    let log = srv.log.lock().unwrap().join("\n");
    assert!(!log.contains("accept failed"), "{log}");
    assert!(!log.contains("Too many open files"), "{log}");
    // Every closed connection gave its descriptor back.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, fds) = threads_and_fds(srv.pid());
        if fds <= baseline_fds {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{fds} descriptors open, {baseline_fds} before"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ping(&srv).await;
}

/// A login POST from `client`; status, JSON body, Retry-After and how long it took.
async fn login_as(
    srv: &TestServer,
    client: &Client,
    password: &str,
) -> (StatusCode, Value, Option<u64>, Duration) {
    let started = Instant::now();
    let res = client
        .post(srv.url("/api/login"))
        .json(&json!({"username": USER, "password": password}))
        .send()
        .await
        .unwrap();
    let retry_after = res
        .headers()
        .get(RETRY_AFTER)
        .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
    let (status, body) = decode(res).await;
    (status, body, retry_after, started.elapsed())
}

const LOGIN_DELAY: Duration = Duration::from_millis(1000);

/// A server whose login checks wait `LOGIN_DELAY` after a failure and lock a client out after five.
async fn lockout_server() -> TestServer {
    TestServer::start_with_auth(&[
        ("STREAMCORE_AUTH_LOGIN_FAILURE_DELAY_MS", "1000"),
        ("STREAMCORE_AUTH_LOGIN_MAX_FAILURES", "5"),
        ("STREAMCORE_AUTH_LOGIN_LOCKOUT_SECONDS", "4"),
    ])
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_wrong_logins_are_locked_out_at_once() {
    const DELAY: Duration = LOGIN_DELAY;
    let client = Client::new();
    // A round is 200 wrong logins at once against a fresh server. A 429 must come without the
    // failure delay; on this shared 2-core machine one answer in 200 was once 30 ms late
    // (1.03 s), so the round may be repeated once on a new server. A server that delays its
    // 429s fails both rounds.
    let mut round = 0;
    let (srv, answers, total) = loop {
        round += 1;
        let srv = lockout_server().await;
        let started = Instant::now();
        let guesses = (0..200).map(|i| {
            let client = client.clone();
            let srv = &srv;
            async move { login_as(srv, &client, &format!("guess-{i}")).await }
        });
        let answers = futures_util::future::join_all(guesses).await;
        let total = started.elapsed();
        let slowest_429 = answers
            .iter()
            .filter(|a| a.0 == StatusCode::TOO_MANY_REQUESTS)
            .map(|a| a.3)
            .max()
            .unwrap_or_default();
        eprintln!(
            "round {round}: 200 parallel wrong logins in {total:?}; slowest 429 {slowest_429:?}"
        );
        if slowest_429 < DELAY || round == 2 {
            break (srv, answers, total);
        }
    };
    let _log = common::ServerLogOnPanic(&srv);

    let checked: Vec<_> = answers
        .iter()
        .filter(|a| a.0 == StatusCode::UNAUTHORIZED)
        .collect();
    let refused: Vec<_> = answers
        .iter()
        .filter(|a| a.0 == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    let slowest_429 = refused.iter().map(|a| a.3).max().unwrap();
    eprintln!(
        "200 parallel wrong logins: {} checked (401), {} refused (429) in {total:?}; slowest 429 {slowest_429:?}",
        checked.len(),
        refused.len()
    );
    assert_eq!(checked.len(), 5, "only the first five guesses are checked");
    assert_eq!(refused.len(), 195);
    assert!(
        slowest_429 < DELAY,
        "429s are answered without the failure delay (in each of {round} rounds)"
    );
    assert!(total < DELAY * 3, "all 200 answered in {total:?}");
    for (status, body, retry_after, _) in &refused {
        assert_error(*status, body, 429);
        assert!(
            matches!(retry_after, Some(1..=4)),
            "Retry-After {retry_after:?}"
        );
    }

    // Locked out: even the right password is not looked at.
    let (status, body, retry_after, took) = login_as(&srv, &client, PASS).await;
    assert_error(status, &body, 429);
    assert!(took < DELAY);
    // Another client (another loopback source address) is not locked out.
    let other = Client::builder()
        .local_address(IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let (status, body, ..) = login_as(&srv, &other, PASS).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Time semantics: the lockout ends after Retry-After seconds.
    tokio::time::sleep(Duration::from_secs(retry_after.unwrap()) + Duration::from_millis(100))
        .await;
    let (status, body, ..) = login_as(&srv, &client, PASS).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["access_token"].is_string());
    // The success cleared the record: a wrong password is checked again (401, not 429).
    let (status, body, ..) = login_as(&srv, &client, "wrong").await;
    assert_error(status, &body, 401);
}

#[tokio::test]
async fn a_2mb_login_body_is_413_at_once() {
    let srv =
        TestServer::start_with_auth(&[("STREAMCORE_AUTH_LOGIN_FAILURE_DELAY_MS", "5000")]).await;
    let big = format!(
        r#"{{"username":"{USER}","password":"{}"}}"#,
        "x".repeat(2 << 20)
    );
    // More oversized bodies than the failure threshold: they must not lock the client out.
    for _ in 0..6 {
        let started = Instant::now();
        let res = srv
            .http
            .post(srv.url("/api/login"))
            .header(CONTENT_TYPE, "application/json")
            .body(big.clone())
            .send()
            .await
            .unwrap();
        let (status, body) = decode(res).await;
        let took = started.elapsed();
        assert_error(status, &body, 413);
        assert!(took < Duration::from_millis(500), "413 after {took:?}");
    }

    // Without a declared length (chunked), the limit stops the read after 4 KiB. The client is
    // slow and still sending after the answer: the server drains the rest instead of resetting
    // the connection, so every write succeeds and the answer arrives intact.
    let addr = srv.base.trim_start_matches("http://").to_string();
    let socket = TcpStream::connect(&addr).await.unwrap();
    let (mut rx, mut tx) = socket.into_split();
    let started = Instant::now();
    let writer = tokio::spawn(async move {
        let head = "POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
        tx.write_all(head.as_bytes()).await?;
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..32 {
            tx.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                .await?;
            tx.write_all(&chunk).await?;
            tx.write_all(b"\r\n").await?;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tx.write_all(b"0\r\n\r\n").await
    });
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), rx.read_to_end(&mut answer)).await;
    let took = started.elapsed();
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 413"),
        "chunked answer after {took:?}: {answer}"
    );
    assert!(answer.contains(r#""code":413"#), "{answer}");
    assert!(answer.contains("connection: close\r\n"), "{answer}");
    assert!(took < Duration::from_millis(500), "413 after {took:?}");
    let written = tokio::time::timeout(Duration::from_secs(5), writer).await;
    assert!(
        matches!(written, Ok(Ok(Ok(())))),
        "the slow client's writes failed: {written:?}"
    );

    let (status, body, ..) = login_as(&srv, &srv.http, PASS).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn a_token_whose_nbf_is_in_the_future_is_401() {
    let mut srv = TestServer::start_with_auth(&[]).await;
    let login = srv.login().await;
    let access = login["access_token"].as_str().unwrap();
    use base64::Engine;
    let payload = access.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        claims["nbf"], claims["iat"],
        "tokens are issued with nbf = iat"
    );

    // Signed with the server's own key (credentials + the generated secret).
    let secret = std::fs::read_to_string(srv.data_dir.join("jwt_secret")).unwrap();
    let key =
        jsonwebtoken::EncodingKey::from_secret(format!("{USER}{PASS}{}", secret.trim()).as_bytes());
    let sign = |nbf: u64| {
        let mut claims = claims.clone();
        claims["nbf"] = json!(nbf);
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
    };
    let call = |token: String| {
        let srv = &srv;
        async move {
            decode(
                srv.http
                    .get(srv.url("/api/v3/process"))
                    .bearer_auth(token)
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    // The forged key is right: the same claims valid from now are accepted.
    let (status, body) = call(sign(unix_now())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = call(sign(unix_now() + 3600)).await;
    assert_error(status, &body, 401);
    assert_eq!(body["details"], json!(["Missing or invalid JWT token"]));
}

/// 500 doubles: random bit patterns over every exponent (subnormals included), and the edges.
fn doubles() -> Vec<f64> {
    let mut values = vec![
        0.0,
        -0.0,
        f64::MIN_POSITIVE,
        -f64::MIN_POSITIVE,
        f64::from_bits(1),
        -f64::from_bits(1),
        f64::from_bits(0x000f_ffff_ffff_ffff),
        f64::MAX,
        f64::MIN,
        1e308,
        -1e308,
        0.1,
        1.0 / 3.0,
        2f64.powi(53) + 2.0,
        f64::EPSILON,
        1e-300,
        123456789.12345679,
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    while values.len() < 500 {
        let x = f64::from_bits(rng.gen::<u64>());
        if x.is_finite() {
            values.push(x);
        }
    }
    values
}

/// The numbers of a JSON array, as bit patterns.
fn bits(value: &Value) -> Vec<u64> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|v| {
            v.as_f64()
                .unwrap_or_else(|| panic!("not a number: {v}"))
                .to_bits()
        })
        .collect()
}

#[tokio::test]
async fn metadata_numbers_round_trip_bit_for_bit_across_a_restart() {
    let srv = TestServer::start().await;
    srv.create(json!({
        "id": "p",
        "input": [{"id": "in", "address": "testsrc", "options": ["-f", "lavfi"]}],
        "output": [{"id": "out", "address": "-", "options": ["-f", "null"]}],
        "autostart": false
    }))
    .await;
    let values = doubles();
    let expected: Vec<u64> = values.iter().map(|v| v.to_bits()).collect();
    // Shortest round-trip text, written by Rust's formatter, not by the JSON library under test.
    let text = format!(
        "[{}]",
        values
            .iter()
            .map(|v| format!("{v:e}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let paths = [
        "/api/v3/metadata/doubles",
        "/api/v3/process/p/metadata/doubles",
    ];
    for path in paths {
        let res = srv
            .request(Method::PUT, path)
            .header(CONTENT_TYPE, "application/json")
            .body(text.clone())
            .send()
            .await
            .unwrap();
        let (status, echoed) = decode(res).await;
        assert_eq!(status, StatusCode::OK, "{echoed}");
        assert_eq!(bits(&echoed), expected, "PUT {path} echo");
        let (status, got) = srv.get(path).await;
        assert_eq!(status, StatusCode::OK);
        let lost = bits(&got)
            .iter()
            .zip(&expected)
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(lost, 0, "GET {path}: {lost} of 500 changed");
    }

    let srv = srv.restart_after_kill().await;
    for path in paths {
        let (status, got) = srv.get(path).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(bits(&got), expected, "GET {path} after a restart");
    }
}

fn idle_process(id: &str) -> Value {
    json!({
        "id": id,
        "reference": "r",
        "input": [{"id": "in", "address": "testsrc=size=320x240:rate=25", "options": ["-re", "-f", "lavfi"]}],
        "output": [{"id": "out", "address": "-", "options": ["-f", "null"]}],
        "autostart": false
    })
}

async fn ids(srv: &TestServer) -> Vec<String> {
    let (status, list) = srv.get("/api/v3/process").await;
    assert_eq!(status, StatusCode::OK);
    list.as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn process_ids_follow_one_rule_on_create_and_rename() {
    let srv = TestServer::start().await;
    srv.create(idle_process("keep")).await;
    let bad = [
        "x".repeat(256),
        "y".repeat(70_000),
        "a\0b".to_string(),
        "a\rb".to_string(),
        "a\nb".to_string(),
        "a\u{1b}b".to_string(),
        "a/b".to_string(),
        "../up".to_string(),
        "..".to_string(),
        "a..b".to_string(),
    ];
    for id in &bad {
        let shown = format!("{:?}", &id[..id.len().min(20)]);
        let (status, body) = srv
            .call(Method::POST, "/api/v3/process", Some(idle_process(id)))
            .await;
        assert_error(status, &body, 400);
        assert!(body.to_string().contains(ID_RULE), "create {shown}: {body}");
        let (status, body) = srv
            .call(Method::PUT, "/api/v3/process/keep", Some(idle_process(id)))
            .await;
        assert_error(status, &body, 400);
        assert!(body.to_string().contains(ID_RULE), "rename {shown}: {body}");
        assert_eq!(ids(&srv).await, vec!["keep"], "after {shown}");
    }

    // The longest id (255 bytes, multi-byte characters included) works end to end.
    let long = format!("{}{}", "é".repeat(100), "x".repeat(55));
    assert_eq!(long.len(), 255);
    let path = format!("/api/v3/process/{long}");
    srv.create(idle_process(&long)).await;
    let (status, body) = srv.get(&path).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["id"], json!(long));
    let mut changed = idle_process(&long);
    changed["reference"] = json!("changed");
    let (status, body) = srv.call(Method::PUT, &path, Some(changed)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, body) = srv.get(&path).await;
    assert_eq!(body["reference"], json!("changed"));
    let (status, body) = srv.call(Method::DELETE, &path, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(ids(&srv).await, vec!["keep"]);
}

#[tokio::test]
async fn requests_hyper_refuses_get_json_error_bodies() {
    let srv = TestServer::start().await;
    let addr = srv.base.trim_start_matches("http://").to_string();
    for (request, code) in [
        // A target over hyper's 65,534-byte limit (a 70,000-byte process id) never reaches the
        // router; neither does a malformed request line nor an oversized header.
        (
            format!(
                "GET /api/v3/process/{} HTTP/1.1\r\nHost: x\r\n\r\n",
                "y".repeat(70_000)
            ),
            414,
        ),
        ("GET /a b c HTTP/1.1\r\nHost: x\r\n\r\n".to_string(), 400),
        (
            format!(
                "GET / HTTP/1.1\r\nHost: x\r\nX: {}\r\n\r\n",
                "a".repeat(500_000)
            ),
            431,
        ),
    ] {
        let mut socket = TcpStream::connect(&addr).await.unwrap();
        socket.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut answer))
            .await
            .expect("answered and closed")
            .unwrap();
        let answer = String::from_utf8(answer).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with(&format!("HTTP/1.1 {code} ")), "{head}");
        assert!(head.contains("content-type: application/json"), "{head}");
        let body: Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["code"], json!(code), "{body}");
        assert!(body["details"][0].is_string(), "{body}");
    }
    ping(&srv).await;
}

#[tokio::test]
async fn sigterm_still_shuts_down_gracefully_with_connections_open() {
    let srv = TestServer::start_with(&[("STREAMCORE_HTTP_HEADER_READ_TIMEOUT_MS", "1000")]).await;
    let _log = common::ServerLogOnPanic(&srv);
    srv.create(common::testsrc_process("run")).await;
    srv.wait_state("run", Duration::from_secs(20), |s| s["exec"] == "running")
        .await;
    let ffmpeg = srv.ffmpeg_children();
    assert_eq!(ffmpeg.len(), 1);

    // A half-open connection and an idle keep-alive one must not hold the shutdown up.
    let addr = srv.base.trim_start_matches("http://").to_string();
    let mut half_open = TcpStream::connect(&addr).await.unwrap();
    half_open
        .write_all(b"GET /ping HTTP/1.1\r\n")
        .await
        .unwrap();
    let keep_alive = Client::new();
    keep_alive.get(srv.url("/ping")).send().await.unwrap();

    let started = Instant::now();
    // SAFETY: kill sends a signal to the server process this test started.
    assert_eq!(unsafe { libc::kill(srv.pid() as i32, libc::SIGTERM) }, 0);
    while srv.alive() {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "server still running after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("server exited {:?} after SIGTERM", started.elapsed());
    let log = srv.log.lock().unwrap().join("\n");
    assert!(log.contains("shutting down"), "{log}");
    for pid in ffmpeg {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit_once(')')
            .map(|(_, r)| r.trim_start().to_string());
        assert!(
            state.is_none_or(|s| s.starts_with('Z')),
            "ffmpeg {pid} outlived the server: {stat}"
        );
    }
}

#[tokio::test]
async fn a_trickled_body_is_cut_at_the_body_read_timeout() {
    let srv = TestServer::start_with(&[("STREAMCORE_HTTP_BODY_READ_TIMEOUT_SECONDS", "1")]).await;
    let addr = srv.base.trim_start_matches("http://").to_string();
    let socket = TcpStream::connect(&addr).await.unwrap();
    let (mut rx, mut tx) = socket.into_split();
    let started = Instant::now();
    // A complete head, then the body one byte every 200 ms: the head timeout does not apply
    // and the connection is busy, so only the body deadline stops it.
    let trickle = tokio::spawn(async move {
        let head = "POST /api/v3/process HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n";
        tx.write_all(head.as_bytes()).await.unwrap();
        while tx.write_all(b" ").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), rx.read_to_end(&mut answer))
        .await
        .expect("answered and closed")
        .unwrap();
    let took = started.elapsed();
    trickle.abort();
    let answer = String::from_utf8(answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 400 "), "{head}");
    let body: Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["code"], json!(400), "{body}");
    assert!(body.to_string().contains("did not arrive within"), "{body}");
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_millis(2500),
        "answered after {took:?}"
    );
    assert_eq!(ids(&srv).await, Vec::<String>::new());
}

/// Reads more of an answer into `buf`; the server must not close before `what`.
async fn read_more(socket: &mut TcpStream, buf: &mut Vec<u8>, what: &str) {
    let mut chunk = [0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut chunk))
        .await
        .unwrap_or_else(|_| panic!("{what} within 5 s"))
        .unwrap();
    assert!(n > 0, "closed before {what}: {buf:?}");
    buf.extend_from_slice(&chunk[..n]);
}

/// One answer read off a kept-alive socket: its head (lower-cased) and body.
async fn read_answer(socket: &mut TcpStream) -> (String, String) {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        read_more(socket, &mut buf, "the head").await;
    };
    let head = String::from_utf8(buf[..head_end].to_vec())
        .unwrap()
        .to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length: "))
        .expect("a content-length")
        .trim()
        .parse()
        .unwrap();
    while buf.len() < head_end + length {
        read_more(socket, &mut buf, "the body").await;
    }
    let body = String::from_utf8(buf[head_end..head_end + length].to_vec()).unwrap();
    (head, body)
}

/// A refusal sent before the body was read ends the connection, and the answer says so: a
/// client that is still sending must not put the socket back in its pool and send its next
/// request into it (reqwest did, and got "connection closed before message completed" instead
/// of the next 413). A body that was read keeps the connection.
#[tokio::test]
async fn an_answer_given_before_the_body_was_read_says_connection_close() {
    let srv = TestServer::start().await;
    let addr = srv.base.trim_start_matches("http://").to_string();

    // Read, refused (400), kept: a second request on the same socket is answered.
    let mut socket = TcpStream::connect(&addr).await.unwrap();
    let request = format!("POST /api/v3/process HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 1\r\n\r\n{{");
    socket.write_all(request.as_bytes()).await.unwrap();
    let (head, body) = read_answer(&mut socket).await;
    assert!(head.starts_with("http/1.1 400 "), "{head}{body}");
    assert!(!head.contains("connection: close"), "{head}");
    socket
        .write_all(format!("GET /ping HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let (head, _) = read_answer(&mut socket).await;
    assert!(head.starts_with("http/1.1 200 "), "{head}");

    // Over the limit: 413 once the limit is passed, with most of the body still unsent, and
    // the header.
    let mut socket = TcpStream::connect(&addr).await.unwrap();
    let request = format!(
        "POST /api/v3/process HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
        4 << 20,
        "x".repeat(2 << 20)
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let (head, body) = read_answer(&mut socket).await;
    assert!(head.starts_with("http/1.1 413 "), "{head}{body}");
    assert!(head.contains("connection: close"), "{head}");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut rest)).await;
    assert!(
        matches!(closed, Ok(Ok(0))),
        "the server closes its side after the 413: {closed:?}"
    );

    // A pooled client sending many such bodies gets every answer (none lost to reuse).
    let big = "x".repeat(2 << 20);
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (http, url, big) = (srv.http.clone(), srv.url("/api/v3/process"), big.clone());
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                for _ in 0..4 {
                    let res = http
                        .post(&url)
                        .header(CONTENT_TYPE, "application/json")
                        .body(big.clone())
                        .send()
                        .await
                        .expect("an answer, not a closed connection");
                    statuses.push(res.status().as_u16());
                }
                statuses
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), vec![413; 4]);
    }
}

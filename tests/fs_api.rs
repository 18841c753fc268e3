//! The file API (`/api/v3/fs`) and the `/memfs` mount against the real server over real HTTP:
//! Core's statuses (201 new, 204 replaced, `Deleted:` text, 404 without a body on HEAD), names
//! that try to leave their file system, the memfs Basic challenge FFmpeg needs, and the memfs
//! size limit with and without purge.
//!
//! Run with `cargo test --test fs_api`.

mod common;

use common::{assert_error, decode, ServerLogOnPanic, TestServer};
use reqwest::{header, Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MEM_USER: &str = "admin";
const MEM_PASS: &str = "mem-secret";

async fn server(extra: &[(&str, &str)]) -> TestServer {
    let mut env = vec![("STREAMCORE_STORAGE_MEMORY_AUTH_PASSWORD", MEM_PASS)];
    env.extend_from_slice(extra);
    let mut server = TestServer::start_with_auth(&env).await;
    server.login().await;
    server
}

async fn put(server: &TestServer, path: &str, body: &'static [u8]) -> reqwest::Response {
    server
        .request(Method::PUT, path)
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn memfs(
    server: &TestServer,
    method: Method,
    path: &str,
    auth: Option<(&str, &str)>,
    body: Vec<u8>,
) -> reqwest::Response {
    let mut req = server.http.request(method, server.url(path)).body(body);
    if let Some((user, pass)) = auth {
        req = req.basic_auth(user, Some(pass));
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn file_api_answers_with_cores_statuses() {
    let server = server(&[]).await;
    let _log = ServerLogOnPanic(&server);

    let (status, body) = server.get("/api/v3/fs").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!([{"name": "disk", "type": "disk", "mount": "/"}, {"name": "mem", "type": "mem", "mount": "/memfs"}])
    );

    for fs in ["disk", "mem"] {
        let path = format!("/api/v3/fs/{fs}/player/x.html");
        let res = put(&server, &path, b"<p>one</p>").await;
        assert_eq!(res.status(), StatusCode::CREATED, "{fs}");
        assert_eq!(res.headers()[header::CONTENT_LOCATION], path.as_str());
        assert_eq!(res.text().await.unwrap(), "");
        let res = put(&server, &path, b"<p>two!</p>").await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT, "{fs}");

        let res = server.request(Method::HEAD, &path).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert!(res.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        let res = server.request(Method::GET, &path).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.text().await.unwrap(), "<p>two!</p>");

        // A missing file: HEAD is a bare 404 (no body, no JSON type); GET has the error body.
        let missing = format!("/api/v3/fs/{fs}/index.html");
        let res = server.request(Method::HEAD, &missing).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
        assert!(res.headers().get(header::CONTENT_TYPE).is_none(), "{res:?}");
        assert_eq!(res.bytes().await.unwrap().len(), 0);
        let (status, body) = server.get(&missing).await;
        assert_error(status, &body, 404);

        let res = server.request(Method::DELETE, &path).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.text().await.unwrap(), "Deleted: /player/x.html");
        let (status, body) = server.call(Method::DELETE, &path, None).await;
        assert_error(status, &body, 404);
    }

    // What the file API writes to `disk` is the public directory, served at `/`.
    put(&server, "/api/v3/fs/disk/site/a.txt", b"aaa").await;
    put(&server, "/api/v3/fs/disk/site/deep/b.txt", b"b").await;
    put(&server, "/api/v3/fs/disk/site/c.dat", b"cc").await;
    assert_eq!(server.get_text("/site/a.txt").await, "aaa");
    let (status, listed) = server
        .get("/api/v3/fs/disk?glob=/site/**.txt&sort=size&order=desc")
        .await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["/site/a.txt", "/site/deep/b.txt"]);
    assert_eq!(listed[0]["size_bytes"], json!(3));
    assert!(listed[0]["last_modified"].as_i64().unwrap() > 1_600_000_000);
    let (_, listed) = server.get("/api/v3/fs/disk?glob=/site/*.txt").await;
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    let (status, body) = server.get("/api/v3/fs/disk?glob=[").await;
    assert_error(status, &body, 400);

    for path in ["/api/v3/fs/s3/x", "/api/v3/fs/nope"] {
        let (status, body) = server.get(path).await;
        assert_error(status, &body, 404);
    }
    // The file API is behind the admin guard.
    let res = server
        .http
        .get(server.url("/api/v3/fs/disk"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn names_cannot_leave_their_file_system() {
    let server = server(&[]).await;
    let _log = ServerLogOnPanic(&server);
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), b"secret").unwrap();
    let public = server.data_dir.join("public");
    std::os::unix::fs::symlink(outside.path(), public.join("out")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret"), public.join("link")).unwrap();

    for path in [
        "/api/v3/fs/disk/..%2F..%2Fescape.txt",
        "/api/v3/fs/disk/a/..%2F..%2F..%2Fescape.txt",
        "/api/v3/fs/mem/..%2Fescape.txt",
        "/api/v3/fs/disk/out/new.txt",
        "/api/v3/fs/disk/out/deeper/new.txt",
    ] {
        let res = put(&server, path, b"x").await;
        let (status, body) = decode(res).await;
        assert_error(status, &body, 400);
    }
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 1);
    assert!(!server.data_dir.join("escape.txt").exists());

    for path in [
        "/api/v3/fs/disk/out/secret",
        "/api/v3/fs/disk/link",
        "/api/v3/fs/disk//etc/passwd",
        "/api/v3/fs/disk/%2Fetc%2Fpasswd",
    ] {
        let (status, body) = server.get(path).await;
        assert_error(status, &body, 404);
    }
    let (status, body) = server.get("/api/v3/fs/disk/..%2Fjwt_secret").await;
    assert_error(status, &body, 400);
    let (status, _) = server
        .call(Method::DELETE, "/api/v3/fs/disk/out/secret", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(outside.path().join("secret").exists());
    // A listing does not follow the links either.
    let (_, listed) = server.get("/api/v3/fs/disk").await;
    assert_eq!(listed, json!([]));
}

#[tokio::test]
async fn memfs_writes_need_basic_auth_and_reads_are_public() {
    let server = server(&[]).await;
    let _log = ServerLogOnPanic(&server);

    for auth in [None, Some((MEM_USER, "wrong")), Some(("other", MEM_PASS))] {
        let res = memfs(&server, Method::PUT, "/memfs/a.ts", auth, b"x".to_vec()).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
        let challenge = res.headers()[header::WWW_AUTHENTICATE].to_str().unwrap();
        assert!(challenge.starts_with("Basic "), "{challenge}");
        let (status, body) = decode(res).await;
        assert_error(status, &body, 401);
    }
    let auth = Some((MEM_USER, MEM_PASS));
    let ts = vec![0x47u8; 188 * 10];
    let res = memfs(&server, Method::PUT, "/memfs/a.ts", auth, ts.clone()).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let res = memfs(&server, Method::POST, "/memfs/a.ts", auth, ts.clone()).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);

    let res = memfs(&server, Method::GET, "/memfs/a.ts", None, vec![]).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()[header::CONTENT_TYPE], "video/mp2t");
    assert_eq!(res.bytes().await.unwrap().to_vec(), ts);
    let res = server
        .http
        .get(server.url("/memfs/a.ts"))
        .header(header::RANGE, "bytes=188-375")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(res.headers()[header::CONTENT_RANGE], "bytes 188-375/1880");
    assert_eq!(res.bytes().await.unwrap().len(), 188);
    let res = server
        .http
        .get(server.url("/memfs/a.ts"))
        .header(header::RANGE, "bytes=5000-")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::RANGE_NOT_SATISFIABLE);

    // The same file through the file API, and HEAD of a missing one without a body.
    let res = server
        .request(Method::HEAD, "/api/v3/fs/mem/a.ts")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()[header::CONTENT_LENGTH], "1880");
    let res = server
        .request(Method::HEAD, "/api/v3/fs/mem/ch.m3u8")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert!(res.headers().get(header::CONTENT_TYPE).is_none());

    let res = memfs(&server, Method::DELETE, "/memfs/a.ts", None, vec![]).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = memfs(&server, Method::DELETE, "/memfs/a.ts", auth, vec![]).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.text().await.unwrap(), "Deleted: /a.ts");
    let res = memfs(&server, Method::GET, "/memfs/a.ts", None, vec![]).await;
    let (status, body) = decode(res).await;
    assert_error(status, &body, 404);
}

/// A chunked PUT as FFmpeg sends it (`Transfer-Encoding: chunked`, Basic credentials), over a
/// raw socket so the body really arrives in pieces; returns the status line. The answer is read
/// while the body is still being sent, since a refusal comes before the body ends.
async fn chunked_put(server: &TestServer, path: &str, chunks: usize, chunk_size: usize) -> String {
    use base64::Engine;
    let addr = server.base.trim_start_matches("http://").to_string();
    let socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (mut reader, mut writer) = socket.into_split();
    let answer = tokio::spawn(async move {
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        // A reset after the answer (the server closes with the rest of the body unread) ends it.
        while let Ok(n) = reader.read(&mut buf).await {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
        }
        answer
    });
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{MEM_USER}:{MEM_PASS}"));
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Basic {auth}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    writer.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b'z'; chunk_size];
    for _ in 0..chunks {
        let frame = [
            format!("{chunk_size:x}\r\n").into_bytes(),
            chunk.clone(),
            b"\r\n".to_vec(),
        ]
        .concat();
        if writer.write_all(&frame).await.is_err() {
            break;
        }
    }
    let _ = writer.write_all(b"0\r\n\r\n").await;
    let answer = tokio::time::timeout(std::time::Duration::from_secs(20), answer)
        .await
        .expect("an answer within 20 s")
        .unwrap();
    let text = String::from_utf8_lossy(&answer);
    text.lines().next().unwrap_or_default().to_string()
}

#[tokio::test]
async fn memfs_size_limit_refuses_or_purges() {
    let limit = [
        ("STREAMCORE_STORAGE_MEMORY_MAX_SIZE_MBYTES", "1"),
        ("STREAMCORE_STORAGE_MAX_FILE_MBYTES", "2"),
    ];
    let server = server(&limit).await;
    let _log = ServerLogOnPanic(&server);
    let auth = Some((MEM_USER, MEM_PASS));
    let kb600 = vec![1u8; 600 * 1024];

    // A chunked body of 600 KiB in 64 KiB pieces is stored whole.
    let status = chunked_put(&server, "/memfs/chunked.bin", 10, 60 * 1024).await;
    assert!(status.contains("201"), "{status}");
    let res = memfs(&server, Method::GET, "/memfs/chunked.bin", None, vec![]).await;
    assert_eq!(res.bytes().await.unwrap().len(), 600 * 1024);

    // Full, no purge: 507 with the error body, and nothing replaced.
    let res = memfs(&server, Method::PUT, "/memfs/b.bin", auth, kb600.clone()).await;
    let (status, body) = decode(res).await;
    assert_error(status, &body, 507);
    // Larger than the whole file system: 413, also when it comes chunked without a length.
    let res = memfs(
        &server,
        Method::PUT,
        "/memfs/c.bin",
        auth,
        vec![1u8; 1536 * 1024],
    )
    .await;
    let (status, body) = decode(res).await;
    assert_error(status, &body, 413);
    let status = chunked_put(&server, "/memfs/d.bin", 40, 64 * 1024).await;
    assert!(status.contains("413"), "{status}");
    let (_, listed) = server.get("/api/v3/fs/mem").await;
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["/chunked.bin"]);

    // With purge, the oldest file makes room.
    let mut purging = limit.to_vec();
    purging.push(("STREAMCORE_STORAGE_MEMORY_PURGE", "true"));
    let server = self::server(&purging).await;
    let _log = ServerLogOnPanic(&server);
    for name in ["/memfs/1.bin", "/memfs/2.bin"] {
        let res = memfs(&server, Method::PUT, name, auth, kb600.clone()).await;
        assert_eq!(res.status(), StatusCode::CREATED, "{name}");
    }
    let (_, listed): (_, Value) = server.get("/api/v3/fs/mem").await;
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["name"], "/2.bin");
}

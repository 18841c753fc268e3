//! The OpenAPI document against the running server (auth on). Every operation the document
//! declares is called — with no token, a bad token and a valid one; on made-up and real ids; with
//! no body, bodies the server accepts, bodies the schema refuses, broken bodies and a body over the
//! size limit; with parameters the server cannot read — and every answer must be a status the
//! document declares for that operation, with a declared content type and a body its schema
//! accepts. Every operation must also answer 2xx at least once (so its success schema is checked),
//! except those whose success needs a real WebRTC negotiation. The routes of `src/api/mod.rs` and
//! the paths of the document must be the same set.
//!
//! Run with `cargo test --test openapi`.

mod common;
#[path = "openapi/document.rs"]
mod document;
#[path = "openapi/inputs.rs"]
mod inputs;
#[path = "openapi/routes.rs"]
mod routes;
#[path = "openapi/run.rs"]
mod run;

use std::collections::{BTreeMap, BTreeSet};

use common::{ServerLogOnPanic, TestServer};
use document::{operations, refs};
use inputs::{
    assignments, broken_bodies, expand, query_values, relay_process, source_process, valid_bodies,
    violations, MAX_BODY,
};
use reqwest::Method;
use routes::{NEEDS_SESSION, ROUTES};
use run::{Call, Run};
use serde_json::{json, Value};

/// A body to send: content type, bytes, and whether the document refuses it.
type Body = Option<(String, Vec<u8>, bool)>;

/// Every body to send to one operation at `ids`: none where the body is optional, the bodies the
/// server accepts (checked against the request schema here), and on the `last` (all real ids)
/// the schema's violations; broken bodies; and once (`first`) one over the size limit.
fn bodies(
    run: &mut Run,
    operation: &Value,
    ids: &BTreeMap<String, String>,
    first: bool,
    last: bool,
) -> Vec<Body> {
    let Some(request_body) = operation.get("requestBody") else {
        return vec![None];
    };
    let request_body = run.document.deref(request_body).clone();
    let operation_id = operation["operationId"].as_str().unwrap_or("");
    let mut out = Vec::new();
    if request_body["required"] != json!(true) {
        out.push(None);
    }
    for (media, declared) in request_body["content"].as_object().expect("content") {
        for body in valid_bodies(operation_id, ids) {
            let instance: Value = serde_json::from_str(&body).unwrap();
            if let Err(e) = run.document.validate(&declared["schema"], &instance) {
                run.failures.push(format!(
                    "{operation_id}: the body {body} that the server accepts is refused by \
                     the request schema: {e}"
                ));
            }
            out.push(Some((media.clone(), body.into_bytes(), false)));
        }
        if last && media == "application/json" {
            let mut base = valid_bodies(operation_id, ids).into_iter().next();
            if operation_id == "process_create" {
                // A fresh id, so that a refusal is about the violation alone.
                base = base.map(|b| b.replace("oa-created", "oa-violation"));
            }
            for violation in violations(&mut run.document, &declared["schema"], base.as_deref()) {
                out.push(Some((media.clone(), violation.into_bytes(), true)));
            }
        }
        for (content_type, bytes) in broken_bodies(media) {
            out.push(Some((content_type, bytes, false)));
        }
        if first {
            out.push(Some((media.clone(), vec![b' '; MAX_BODY + 1], false)));
        }
    }
    out
}

/// Calls one operation on every assignment of its path parameters, with every token and body.
async fn exercise(
    run: &mut Run,
    method: &str,
    template: &str,
    operation: &Value,
    tokens: &[(&str, Option<String>)],
) {
    let assignments = assignments(template);
    let count = assignments.len();
    for (n, ids) in assignments.into_iter().enumerate() {
        let path = expand(template, &ids);
        for body in bodies(run, operation, &ids, n == 0, n + 1 == count) {
            for (token_name, token) in tokens {
                let shown = match &body {
                    None => "no body".to_string(),
                    Some((content_type, bytes, _)) => format!(
                        "{content_type} body {:?}",
                        String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
                    ),
                };
                let call = Call {
                    method: Method::from_bytes(method.as_bytes()).unwrap(),
                    path: path.clone(),
                    token: token.clone(),
                    authorized: *token_name == "valid token",
                    body: body.as_ref().map(|(ct, b, _)| (ct.clone(), b.clone())),
                    refused: body.as_ref().is_some_and(|(_, _, refused)| *refused),
                    what: format!("{method} {path} ({token_name}, {shown})"),
                };
                run.send(template, operation, call).await;
            }
        }
    }
}

/// The parameters, on real ids with a valid token and, where the operation takes a body, the
/// first one the server accepts: each declared query parameter with each of its test values; and
/// parameters the server cannot read: path segments that are not UTF-8 once decoded, a repeated
/// query key.
async fn parameters(run: &mut Run, method: &str, template: &str, operation: &Value, token: &str) {
    let operation_id = operation["operationId"].as_str().unwrap_or("");
    let ids = assignments(template).pop().unwrap_or_default();
    let real = expand(template, &ids);
    let mut paths = Vec::new();
    let names: Vec<&str> = operation["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["in"] == "query")
        .filter_map(|p| p["name"].as_str())
        .collect();
    for name in &names {
        for value in query_values(name) {
            paths.push(format!("{real}?{name}={value}"));
        }
    }
    if let Some(name) = names.first() {
        paths.push(format!("{real}?{name}=a&{name}=b"));
    }
    if !ids.is_empty() {
        let bad: BTreeMap<String, String> =
            ids.keys().map(|k| (k.clone(), "%FF".to_string())).collect();
        paths.push(expand(template, &bad));
    }
    let body = valid_bodies(operation_id, &ids).into_iter().next();
    let media = operation["requestBody"]["content"]
        .as_object()
        .and_then(|c| c.keys().next().cloned());
    for path in paths {
        let call = Call {
            method: Method::from_bytes(method.as_bytes()).unwrap(),
            path: path.clone(),
            token: Some(token.to_string()),
            authorized: true,
            body: body
                .clone()
                .zip(media.clone())
                .map(|(b, m)| (m, b.into_bytes())),
            refused: false,
            what: format!("{method} {path} (valid token)"),
        };
        run.send(template, operation, call).await;
    }
}

/// How many times the server has logged that it listens (once per start and per reload).
fn starts(server: &TestServer) -> usize {
    server
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|line| line.contains("streamcore listening"))
        .count()
}

/// `GET /api/v3/config/reload` answers before the server restarts its services (as Core does,
/// whose UI waits for the server to come back). Waits, bounded, until the server has started
/// again since `before` (its count of starts before the reload was asked for), so the next
/// operation is checked against the restarted instance. The count is taken before the request,
/// not compared with the "reload requested" lines: the log is read by another thread and may
/// not hold that line yet when the answer arrives.
async fn settle_reload(server: &TestServer, before: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while starts(server) <= before {
        assert!(
            std::time::Instant::now() < deadline,
            "the server did not come back after a reload"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_answers_as_documented() {
    let max_body = MAX_BODY.to_string();
    // `/memfs` writes open (its Basic credentials are not the bearer tokens this run sends), and
    // the RTMP and SRT servers on, so their endpoints answer 200 (404 while they are off).
    let rtmp = format!("127.0.0.1:{}", common::ingest::free_tcp_port());
    let srt = format!("127.0.0.1:{}", common::ingest::free_udp_port());
    let mut server = TestServer::start_with_auth(&[
        ("STREAMCORE_HTTP_MAX_BODY_BYTES", max_body.as_str()),
        ("STREAMCORE_STORAGE_MEMORY_AUTH_ENABLE", "false"),
        ("STREAMCORE_RTMP_ENABLE", "true"),
        ("STREAMCORE_RTMP_ADDRESS", &rtmp),
        ("STREAMCORE_SRT_ENABLE", "true"),
        ("STREAMCORE_SRT_ADDRESS", &srt),
    ])
    .await;
    // The document is public, as in datarhei Core.
    let answer = server
        .http
        .get(server.url("/api/swagger/doc.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let doc: Value = answer.json().await.unwrap();
    assert_eq!(doc["openapi"], json!("3.1.0"));

    let tokens = server.login().await;
    let _log = ServerLogOnPanic(&server);
    let access = tokens["access_token"].as_str().unwrap().to_string();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_string();
    server.create(source_process()).await;
    server.create(relay_process()).await;
    for path in [
        "/api/v3/process/oa-src/metadata/oa-key",
        "/api/v3/metadata/oa-key",
    ] {
        let (status, _) = server
            .call(Method::PUT, path, Some(json!({"fixture": true})))
            .await;
        assert_eq!(status, 200, "{path}");
    }

    for fs in ["disk", "mem"] {
        let path = format!("/api/v3/fs/{fs}/oa-dir/oa-file.bin");
        let answer = server
            .request(Method::PUT, &path)
            .body("fixture")
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 201, "{path}");
    }

    let mut run = Run::new(&server.base, doc.clone());
    let operations = operations(&doc);
    for (method, template, operation) in &operations {
        // The refresh operation takes the refresh token; every other one the access token.
        let valid = if operation["operationId"] == "auth_refresh" {
            &refresh
        } else {
            &access
        };
        let tokens = [
            ("no token", None),
            ("bad token", Some("not-a-jwt".to_string())),
            ("valid token", Some(valid.clone())),
        ];
        let before = starts(&server);
        exercise(&mut run, method, template, operation, &tokens).await;
        parameters(&mut run, method, template, operation, valid).await;
        if template.ends_with("/config/reload") {
            settle_reload(&server, before).await;
        }
    }
    assert!(server.alive(), "the server died during the run");
    for (method, template, _) in &operations {
        let key = (method.clone(), template.clone());
        if !run.succeeded.contains(&key)
            && !NEEDS_SESSION.contains(&(method.as_str(), template.as_str()))
        {
            run.failures.push(format!(
                "{method} {template}: never answered 2xx, so its success was not checked"
            ));
        }
    }
    eprintln!(
        "{} operations, {} requests, {} operations answered 2xx",
        operations.len(),
        run.requests,
        run.succeeded.len()
    );
    assert!(
        run.failures.is_empty(),
        "{} mismatches:\n{}",
        run.failures.len(),
        run.failures.join("\n")
    );
}

#[tokio::test]
async fn document_and_router_agree() {
    let server = TestServer::start_with_auth(&[]).await;
    let doc: Value = server
        .http
        .get(server.url("/api/swagger/doc.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let operations = operations(&doc);
    let documented: BTreeSet<(String, String)> = operations
        .iter()
        .map(|(method, path, _)| (method.clone(), path.clone()))
        .collect();
    let routed: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(method, path)| (method.to_string(), path.to_string()))
        .collect();
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&routed).collect();
    assert!(
        undocumented.is_empty(),
        "routed but not documented: {undocumented:?}"
    );
    assert!(
        unrouted.is_empty(),
        "documented but not routed: {unrouted:?}"
    );

    let mut problems = Vec::new();
    let mut ids = BTreeSet::new();
    for (method, path, operation) in &operations {
        match operation["operationId"].as_str() {
            None => problems.push(format!("{method} {path}: no operationId")),
            Some(id) if !ids.insert(id.to_string()) => {
                problems.push(format!("{method} {path}: operationId {id} is not unique"))
            }
            Some(_) => {}
        }
        let in_template: BTreeSet<String> = assignments(path)
            .first()
            .map(|a| a.keys().cloned().collect())
            .unwrap_or_default();
        let declared: BTreeSet<String> = operation["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "path")
            .filter_map(|p| p["name"].as_str().map(str::to_string))
            .collect();
        if in_template != declared {
            problems.push(format!(
                "{method} {path}: path parameters declared {declared:?}, in the path {in_template:?}"
            ));
        }
        if operation["responses"]
            .as_object()
            .is_none_or(|r| r.is_empty())
        {
            problems.push(format!("{method} {path}: no responses"));
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    for r in all {
        if doc.pointer(r.trim_start_matches('#')).is_none() {
            problems.push(format!("dangling $ref {r}"));
        }
    }
    for (method, path, operation) in &operations {
        for requirement in operation["security"].as_array().into_iter().flatten() {
            for name in requirement
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, _)| k)
            {
                if doc["components"]["securitySchemes"].get(name).is_none() {
                    problems.push(format!("{method} {path}: unknown security scheme {name}"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

//! Every error status of the process API, with datarhei's error body (contract §0, §3, §11.1-2),
//! and that a refused request changes nothing.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{assert_error, decode, TestServer};
use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// A process that is never started (keeps the machine free).
fn idle(id: &str) -> Value {
    json!({
        "id": id,
        "input": [{"id": "in", "address": "testsrc=size=320x240:rate=25", "options": ["-re", "-f", "lavfi"]}],
        "output": [{"id": "out", "address": "-", "options": ["-f", "null"]}],
        "autostart": false
    })
}

/// Sends a raw body with an optional content type.
async fn send_raw(
    srv: &TestServer,
    method: Method,
    path: &str,
    content_type: Option<&str>,
    body: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = srv.request(method, path);
    if let Some(ct) = content_type {
        req = req.header(CONTENT_TYPE, ct);
    }
    if let Some(body) = body {
        req = req.body(body.to_string());
    }
    decode(req.send().await.unwrap()).await
}

/// Sends a JSON text (content type `application/json`).
async fn send_json(
    srv: &TestServer,
    method: Method,
    path: &str,
    body: &str,
) -> (StatusCode, Value) {
    send_raw(srv, method, path, Some("application/json"), Some(body)).await
}

/// Asserts the error shape, the status and the message.
fn expect(status: StatusCode, body: &Value, code: u16, message: &str) {
    assert_error(status, body, code);
    assert_eq!(body["message"], message, "body: {body}");
}

/// The detail lines joined, for substring checks.
fn details(body: &Value) -> String {
    body["details"]
        .as_array()
        .unwrap_or_else(|| panic!("no details: {body}"))
        .iter()
        .map(|d| d.as_str().expect("details are strings"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The ids of a process list, sorted.
fn ids(list: &Value) -> Vec<String> {
    let mut ids: Vec<String> = list
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

/// The raw text of a GET (for byte comparisons).
async fn text(srv: &TestServer, path: &str) -> String {
    let res = srv.request(Method::GET, path).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK, "GET {path}");
    res.text().await.unwrap()
}

#[tokio::test]
async fn create_rejects_unusable_bodies() {
    let srv = TestServer::start().await;
    let path = "/api/v3/process";
    let valid = idle("p").to_string();

    let (status, body) = send_json(&srv, Method::POST, path, r#"{"id": "p", "input": ["#).await;
    expect(status, &body, 400, "Invalid JSON");
    assert!(details(&body).contains("syntax error"), "{body}");

    let (status, body) = send_json(&srv, Method::POST, path, r#"{"id": "p",}"#).await;
    expect(status, &body, 400, "Invalid JSON");
    assert!(details(&body).contains("syntax error"), "{body}");

    let (status, body) = send_raw(&srv, Method::POST, path, Some("text/plain"), Some(&valid)).await;
    expect(status, &body, 400, "Invalid JSON");

    let (status, body) = send_raw(&srv, Method::POST, path, None, Some(&valid)).await;
    expect(status, &body, 400, "Invalid JSON");

    let (status, body) = send_json(&srv, Method::POST, path, "").await;
    expect(status, &body, 400, "Invalid JSON");
    assert!(details(&body).contains("content"), "{body}");

    let (status, body) = send_raw(&srv, Method::POST, path, None, None).await;
    expect(status, &body, 400, "Invalid JSON");

    // Type errors are "Invalid JSON" as well.
    let (status, body) = send_json(&srv, Method::POST, path, r#"{"id": 5}"#).await;
    expect(status, &body, 400, "Invalid JSON");
    let (status, body) = send_json(
        &srv,
        Method::POST,
        path,
        r#"{"id": "p", "autostart": "yes"}"#,
    )
    .await;
    expect(status, &body, 400, "Invalid JSON");

    // None of it created anything.
    let (status, list) = srv.get(path).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list, json!([]));
}

#[tokio::test]
async fn create_over_the_body_limit_is_413() {
    let srv = TestServer::start_with(&[("STREAMCORE_HTTP_MAX_BODY_BYTES", "4096")]).await;
    let mut big = idle("big");
    big["reference"] = json!("x".repeat(10 * 1024));
    let (status, body) = srv.call(Method::POST, "/api/v3/process", Some(big)).await;
    expect(status, &body, 413, "Payload Too Large");

    // The same limit leaves ordinary bodies alone.
    srv.create(idle("small")).await;
    let (status, list) = srv.get("/api/v3/process").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ids(&list), ["small"]);
}

#[tokio::test]
async fn create_rejects_invalid_definitions() {
    let srv = TestServer::start().await;
    let post = |body: Value| srv.call(Method::POST, "/api/v3/process", Some(body));

    let mut docker = idle("d");
    docker["type"] = json!("docker");
    let (status, body) = post(docker).await;
    expect(status, &body, 400, "Unsupported process type");
    assert_eq!(
        body["details"],
        json!(["Supported process types are: ffmpeg"])
    );

    for (field, value) in [("input", json!([])), ("output", json!([]))] {
        let mut p = idle("e");
        p[field] = value;
        let (status, body) = post(p).await;
        expect(
            status,
            &body,
            400,
            "At least one input and one output need to be defined",
        );
    }
    let mut no_output = idle("e");
    no_output.as_object_mut().unwrap().remove("output");
    let (status, body) = post(no_output).await;
    assert_error(status, &body, 400);

    for address in ["", "   "] {
        let mut p = idle("a");
        p["input"][0]["address"] = json!(address);
        let (status, body) = post(p).await;
        expect(status, &body, 400, "Invalid process config");
        assert!(details(&body).contains("address"), "{body}");
    }
    let mut p = idle("a");
    p["output"][0]["address"] = json!("");
    let (status, body) = post(p).await;
    expect(status, &body, 400, "Invalid process config");

    let mut p = idle("dupio");
    let input = p["input"][0].clone();
    p["input"] = json!([input.clone(), input]);
    let (status, body) = post(p).await;
    expect(status, &body, 400, "Invalid process config");
    assert!(details(&body).contains("already in use"), "{body}");

    let mut p = idle("   ");
    p["id"] = json!("   ");
    let (status, body) = post(p).await;
    expect(status, &body, 400, "Invalid process config");
    assert!(details(&body).contains("empty ID"), "{body}");

    for reference in ["#nope:output=out", "#self:output=out", "#bad-reference"] {
        let mut p = idle("self");
        p["input"][0]["address"] = json!(reference);
        let (status, body) = post(p).await;
        expect(status, &body, 400, "Invalid process config");
    }

    let (status, list) = srv.get("/api/v3/process").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list, json!([]), "a refused create left something behind");
}

#[tokio::test]
async fn duplicate_id_is_400_and_keeps_the_first() {
    let srv = TestServer::start().await;
    let first = srv.create(idle("dup")).await;
    let mut second = idle("dup");
    second["reference"] = json!("second");
    let (status, body) = srv
        .call(Method::POST, "/api/v3/process", Some(second))
        .await;
    expect(status, &body, 400, "Invalid process config");
    assert_eq!(body["details"], json!(["process already exists"]));

    let (status, config) = srv.get("/api/v3/process/dup/config").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(config, first);
    assert_eq!(config["reference"], "");
}

#[tokio::test]
async fn nulls_and_unknown_fields_are_accepted() {
    let srv = TestServer::start().await;
    let body = json!({
        "id": "nulls",
        "type": null,
        "reference": null,
        "limits": null,
        "options": null,
        "scheduler": null,
        "runtime_duration_seconds": null,
        "log_patterns": null,
        "binary": null,
        "domain": "",
        "owner": "",
        "reconnect": null,
        "reconnect_delay_seconds": null,
        "stale_timeout_seconds": null,
        "autostart": false,
        "input": [{"address": "testsrc=size=320x240:rate=25", "options": null, "cleanup": null}],
        "output": [{"id": null, "address": "-", "options": ["-f", "null"], "cleanup": null}]
    });
    let (status, config) = srv.call(Method::POST, "/api/v3/process", Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{config}");
    assert_eq!(config["id"], "nulls");
    assert_eq!(config["type"], "ffmpeg");
    assert_eq!(config["reference"], "");
    assert_eq!(config["options"], json!([]));
    assert!(config["limits"].is_object(), "{config}");
    assert_eq!(config["limits"]["cpu_usage"], json!(0.0));
    assert_eq!(config["limits"]["memory_mbytes"], json!(0));
    assert_eq!(config["reconnect"], json!(false));
    assert_eq!(config["autostart"], json!(false));
    for io in ["input", "output"] {
        let id = config[io][0]["id"].as_str().unwrap();
        assert_eq!(id.len(), 22, "generated {io} id {id:?}");
        assert!(
            id.chars().all(|c| c.is_ascii_alphanumeric()),
            "{io} id {id:?}"
        );
        assert!(config[io][0]["options"].is_array(), "{config}");
    }
    assert_eq!(config["input"][0]["options"], json!([]));
    assert!(
        config["input"][0].get("cleanup").is_none(),
        "inputs never show cleanup: {config}"
    );
    assert!(config.get("scheduler").is_none(), "{config}");

    // What was stored is what was answered.
    let (status, stored) = srv.get("/api/v3/process/nulls/config").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stored, config);
    assert_eq!(srv.state("nulls").await["order"], "stop");
}

#[tokio::test]
async fn unknown_process_ids() {
    let srv = TestServer::start().await;

    let (status, body) = srv.get("/api/v3/process/ghost").await;
    expect(status, &body, 404, "Unknown process ID");

    let (status, body) = srv
        .call(Method::PUT, "/api/v3/process/ghost", Some(idle("ghost")))
        .await;
    expect(status, &body, 404, "Process not found");
    assert_eq!(body["details"], json!(["ghost"]));

    let (status, body) = srv
        .call(Method::DELETE, "/api/v3/process/ghost", None)
        .await;
    expect(status, &body, 404, "Unknown process ID");

    for sub in ["config", "state", "report", "metadata"] {
        let (status, body) = srv.get(&format!("/api/v3/process/ghost/{sub}")).await;
        expect(status, &body, 404, "Unknown process ID");
    }

    // datarhei: a command on an unknown id is a 400, not a 404.
    for command in ["start", "stop", "restart", "reload"] {
        let (status, body) = srv.command("ghost", command).await;
        expect(status, &body, 400, "Command failed");
        assert_eq!(body["details"], json!(["unknown process"]), "{command}");
    }

    // probe never 404s.
    let (status, body) = srv.get("/api/v3/process/ghost/probe").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"streams": [], "log": ["Unknown process ID (ghost)"]})
    );

    // Ids with ':' (restreamer-ui's style) are path-unescaped like any other.
    let (status, body) = srv.get("/api/v3/process/restreamer-ui%3Aingest%3Ax").await;
    expect(status, &body, 404, "Unknown process ID");
}

#[tokio::test]
async fn bad_commands() {
    let srv = TestServer::start().await;
    srv.create(idle("c")).await;
    let path = "/api/v3/process/c/command";

    let (status, body) = srv.command("c", "explode").await;
    expect(status, &body, 400, "Unknown command provided");
    assert_eq!(
        body["details"],
        json!(["Known commands are: start, stop, reload, restart"])
    );

    let (status, body) = srv.command("c", "START").await;
    expect(status, &body, 400, "Unknown command provided");

    let (status, body) = send_raw(&srv, Method::PUT, path, None, None).await;
    expect(status, &body, 400, "Invalid JSON");

    let (status, body) = send_json(&srv, Method::PUT, path, "").await;
    expect(status, &body, 400, "Invalid JSON");

    for bad in ["{}", r#"{"command": null}"#, r#"{"command": 1}"#, "{"] {
        let (status, body) = send_json(&srv, Method::PUT, path, bad).await;
        expect(status, &body, 400, "Invalid JSON");
    }

    let (status, body) = send_raw(
        &srv,
        Method::PUT,
        path,
        Some("text/plain"),
        Some(r#"{"command": "start"}"#),
    )
    .await;
    expect(status, &body, 400, "Invalid JSON");

    // None of that started it.
    let state = srv.state("c").await;
    assert_eq!(state["order"], "stop", "{state}");
    assert_eq!(state["exec"], "finished", "{state}");
}

#[tokio::test]
async fn process_metadata_errors_and_round_trip() {
    let srv = TestServer::start().await;
    srv.create(idle("m")).await;

    let (status, body) = srv.get("/api/v3/process/ghost/metadata/k").await;
    expect(status, &body, 404, "Unknown process ID");
    assert_eq!(body["details"], json!(["unknown process"]));
    let (status, body) = srv
        .call(
            Method::PUT,
            "/api/v3/process/ghost/metadata/k",
            Some(json!(1)),
        )
        .await;
    expect(status, &body, 404, "Unknown process ID");

    let (status, body) = srv.get("/api/v3/process/m/metadata/k").await;
    expect(status, &body, 404, "Unknown process ID");
    assert_eq!(body["details"], json!(["unknown key"]));
    let (status, body) = srv.get("/api/v3/process/m/metadata").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, Value::Null);

    let value = json!({"name": "Channel 1", "nested": {"list": [1, 2.5, "x", null, true]}});
    let (status, body) = srv
        .call(
            Method::PUT,
            "/api/v3/process/m/metadata/k",
            Some(value.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, value, "PUT echoes the body");
    let (status, body) = srv.get("/api/v3/process/m/metadata/k").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, value);
    let (_, all) = srv.get("/api/v3/process/m/metadata").await;
    assert_eq!(all, json!({"k": value}));
    let (_, process) = srv.get("/api/v3/process/m").await;
    assert_eq!(process["metadata"], json!({"k": value}));

    // Bad bodies change nothing.
    let (status, body) = send_json(&srv, Method::PUT, "/api/v3/process/m/metadata/k", "{").await;
    expect(status, &body, 400, "Invalid JSON");
    let (status, body) = send_raw(
        &srv,
        Method::PUT,
        "/api/v3/process/m/metadata/k",
        Some("text/plain"),
        Some("1"),
    )
    .await;
    assert_error(status, &body, 400);
    let (_, body) = srv.get("/api/v3/process/m/metadata/k").await;
    assert_eq!(body, value);

    // null deletes.
    let (status, body) = srv
        .call(
            Method::PUT,
            "/api/v3/process/m/metadata/k",
            Some(Value::Null),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, Value::Null);
    let (status, body) = srv.get("/api/v3/process/m/metadata/k").await;
    expect(status, &body, 404, "Unknown process ID");
    let (_, all) = srv.get("/api/v3/process/m/metadata").await;
    assert_eq!(all, Value::Null);
    let (_, process) = srv.get("/api/v3/process/m").await;
    assert!(process.get("metadata").is_none(), "{process}");
}

#[tokio::test]
async fn system_metadata_errors() {
    let srv = TestServer::start().await;
    let (status, body) = srv.get("/api/v3/metadata/nope").await;
    expect(status, &body, 404, "Metadata not found");

    let (status, body) = send_json(&srv, Method::PUT, "/api/v3/metadata/k", "{").await;
    assert_error(status, &body, 400);
    let (status, body) = send_raw(&srv, Method::PUT, "/api/v3/metadata/k", None, None).await;
    assert_error(status, &body, 400);
    let (status, body) = srv.get("/api/v3/metadata/k").await;
    expect(status, &body, 404, "Metadata not found");

    let (status, body) = srv
        .call(Method::PUT, "/api/v3/metadata/k", Some(json!(["v"])))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(srv.get("/api/v3/metadata/k").await.1, json!(["v"]));
    let (status, _) = srv
        .call(Method::PUT, "/api/v3/metadata/k", Some(Value::Null))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = srv.get("/api/v3/metadata/k").await;
    expect(status, &body, 404, "Metadata not found");
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods() {
    let srv = TestServer::start().await;
    for path in [
        "/api/v3/nope",
        "/api/v4/process",
        "/api/nope",
        "/api/v3/process/x/nope",
    ] {
        let (status, body) = srv.get(path).await;
        assert_eq!(
            body,
            json!({"code": 404, "message": "Not Found", "details": ["Not Found"]}),
            "{path}"
        );
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    // Outside /api the public directory answers, with the same error body.
    let (status, body) = srv.get("/no-such-file.html").await;
    expect(status, &body, 404, "Not Found");

    for (method, path) in [
        (Method::PATCH, "/api/v3/process"),
        (Method::DELETE, "/api/v3/process"),
        (Method::POST, "/api/v3/process/x"),
        (Method::GET, "/api/v3/process/x/command"),
        (Method::DELETE, "/api/v3/process/x/state"),
        (Method::POST, "/api/v3/metadata/k"),
    ] {
        let (status, body) = srv.call(method.clone(), path, Some(json!({}))).await;
        assert_eq!(
            body,
            json!({"code": 405, "message": "Method Not Allowed", "details": ["Method Not Allowed"]}),
            "{method} {path}"
        );
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
    }
}

#[tokio::test]
async fn nothing_is_lost_by_refused_requests() {
    let srv = TestServer::start_with(&[("STREAMCORE_HTTP_MAX_BODY_BYTES", "4096")]).await;
    let mut keep = idle("keep");
    keep["reference"] = json!("precious");
    keep["reconnect"] = json!(true);
    keep["reconnect_delay_seconds"] = json!(3);
    srv.create(keep).await;
    srv.create(idle("other")).await;
    let (status, _) = srv
        .call(
            Method::PUT,
            "/api/v3/process/keep/metadata/note",
            Some(json!({"v": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let config_before = text(&srv, "/api/v3/process/keep/config").await;
    let (_, process_before) = srv.get("/api/v3/process/keep?filter=config,metadata").await;
    let path = "/api/v3/process/keep";

    // Bad PUT bodies.
    let mut too_big = idle("keep");
    too_big["reference"] = json!("y".repeat(10 * 1024));
    let bad_puts: Vec<(&str, Option<&str>, Option<String>, u16)> = vec![
        (
            "malformed",
            Some("application/json"),
            Some("{\"reference\": ".into()),
            400,
        ),
        (
            "wrong content type",
            Some("text/plain"),
            Some(r#"{"reference":"x"}"#.into()),
            400,
        ),
        (
            "no content type",
            None,
            Some(r#"{"reference":"x"}"#.into()),
            400,
        ),
        (
            "empty body",
            Some("application/json"),
            Some(String::new()),
            400,
        ),
        ("no body", None, None, 400),
        (
            "too big",
            Some("application/json"),
            Some(too_big.to_string()),
            413,
        ),
        (
            "docker",
            Some("application/json"),
            Some(r#"{"type":"docker"}"#.into()),
            400,
        ),
        (
            "empty type",
            Some("application/json"),
            Some(r#"{"type":""}"#.into()),
            400,
        ),
        (
            "no inputs",
            Some("application/json"),
            Some(r#"{"input":[]}"#.into()),
            400,
        ),
        (
            "no outputs",
            Some("application/json"),
            Some(r#"{"output":[]}"#.into()),
            400,
        ),
        (
            "empty input address",
            Some("application/json"),
            Some(r#"{"input":[{"id":"in","address":""}]}"#.into()),
            400,
        ),
        (
            "duplicate input ids",
            Some("application/json"),
            Some(r#"{"input":[{"id":"in","address":"a"},{"id":"in","address":"b"}]}"#.into()),
            400,
        ),
        (
            "self reference",
            Some("application/json"),
            Some(r##"{"input":[{"id":"in","address":"#keep:output=out"}]}"##.into()),
            400,
        ),
        (
            "unknown reference",
            Some("application/json"),
            Some(r##"{"input":[{"id":"in","address":"#ghost:output=out"}]}"##.into()),
            400,
        ),
        (
            "blank id",
            Some("application/json"),
            Some(r#"{"id":"   "}"#.into()),
            400,
        ),
        (
            "rename onto existing",
            Some("application/json"),
            Some(r#"{"id":"other"}"#.into()),
            400,
        ),
        (
            "wrong type",
            Some("application/json"),
            Some(r#"{"input":"x"}"#.into()),
            400,
        ),
        (
            "wrong nested type",
            Some("application/json"),
            Some(r#"{"limits":{"cpu_usage":"high"}}"#.into()),
            400,
        ),
        (
            "not an object",
            Some("application/json"),
            Some(r#""keep""#.into()),
            400,
        ),
    ];
    for (what, content_type, body, code) in &bad_puts {
        let (status, answer) =
            send_raw(&srv, Method::PUT, path, *content_type, body.as_deref()).await;
        assert_error(status, &answer, *code);
        if *what == "rename onto existing" {
            assert!(
                details(&answer).contains("process already exists"),
                "{answer}"
            );
        }
        let now = text(&srv, "/api/v3/process/keep/config").await;
        assert_eq!(now, config_before, "PUT {what} changed the config");
    }

    // Bad commands.
    let command = "/api/v3/process/keep/command";
    for (content_type, body) in [
        (Some("application/json"), Some(r#"{"command":"explode"}"#)),
        (Some("application/json"), Some("{}")),
        (Some("application/json"), Some("{")),
        (Some("application/json"), Some("")),
        (Some("text/plain"), Some(r#"{"command":"start"}"#)),
        (None, None),
    ] {
        let (status, answer) = send_raw(&srv, Method::PUT, command, content_type, body).await;
        assert_error(status, &answer, 400);
    }

    // Bad creates over the same id, bad metadata, wrong methods.
    let mut clash = idle("keep");
    clash["reference"] = json!("intruder");
    let (status, answer) = srv.call(Method::POST, "/api/v3/process", Some(clash)).await;
    assert_error(status, &answer, 400);
    let (status, answer) =
        send_json(&srv, Method::PUT, "/api/v3/process/keep/metadata/note", "{").await;
    assert_error(status, &answer, 400);
    let (status, answer) = srv.call(Method::POST, path, Some(json!({}))).await;
    assert_error(status, &answer, 405);
    let (status, answer) = srv
        .call(Method::PATCH, path, Some(json!({"reference": "x"})))
        .await;
    assert_error(status, &answer, 405);

    // Everything is as it was.
    assert_eq!(
        text(&srv, "/api/v3/process/keep/config").await,
        config_before
    );
    let (_, process_after) = srv.get("/api/v3/process/keep?filter=config,metadata").await;
    assert_eq!(process_after, process_before);
    assert_eq!(process_after["metadata"], json!({"note": {"v": 1}}));
    let (_, list) = srv.get("/api/v3/process").await;
    assert_eq!(ids(&list), ["keep", "other"]);
    let state = srv.state("keep").await;
    assert_eq!(state["order"], "stop", "{state}");
    assert_eq!(state["exec"], "finished", "{state}");
    let (_, other) = srv.get("/api/v3/process/other/config").await;
    assert_eq!(other["id"], "other");
}

#[tokio::test]
async fn missing_ffmpeg_is_reported_not_fatal() {
    let srv = TestServer::start_with(&[("STREAMCORE_FFMPEG_BINARY", "/nonexistent/ffmpeg")]).await;

    for path in ["/api/v3/skills", "/api/v3/skills/reload"] {
        let (status, body) = srv.get(path).await;
        assert_error(status, &body, 503);
    }

    let mut p = idle("noff");
    p["autostart"] = json!(true);
    srv.create(p).await;
    let state = srv
        .wait_state("noff", Duration::from_secs(10), |s| s["exec"] == "failed")
        .await;
    assert_eq!(state["order"], "start", "{state}");
    let logline = state["last_logline"].as_str().unwrap();
    assert!(logline.contains("/nonexistent/ffmpeg"), "{state}");

    srv.create(idle("idle")).await;
    let (status, body) = srv.command("idle", "start").await;
    expect(status, &body, 400, "Command failed");
    assert!(details(&body).contains("/nonexistent/ffmpeg"), "{body}");
    assert_eq!(srv.state("idle").await["order"], "stop");

    let res = srv.request(Method::GET, "/ping").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.text().await.unwrap(), "pong");
    let (status, list) = srv.get("/api/v3/process").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ids(&list), ["idle", "noff"]);
}

#[tokio::test]
async fn list_filters() {
    let srv = TestServer::start().await;
    for (id, reference) in [("a1", "r1"), ("a2", "r2"), ("b1", "x")] {
        let mut p = idle(id);
        p["reference"] = json!(reference);
        srv.create(p).await;
    }
    let (status, _) = srv
        .call(
            Method::PUT,
            "/api/v3/process/a1/metadata/k",
            Some(json!("v")),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let srv = &srv;
    let list = |query: &'static str| async move {
        let (status, body) = srv.get(&format!("/api/v3/process{query}")).await;
        assert_eq!(status, StatusCode::OK, "{query}: {body}");
        body
    };

    assert_eq!(ids(&list("").await), ["a1", "a2", "b1"]);
    assert_eq!(ids(&list("?id=a1,b1").await), ["a1", "b1"]);
    assert_eq!(ids(&list("?id=a1,nope").await), ["a1"]);
    assert_eq!(ids(&list("?reference=x").await), ["b1"]);
    assert_eq!(
        ids(&list("?reference=x&id=a1,a2").await),
        ["b1"],
        "reference overrides id"
    );
    assert_eq!(ids(&list("?reference=nope").await), Vec::<String>::new());
    assert_eq!(ids(&list("?idpattern=a*").await), ["a1", "a2"]);
    assert_eq!(ids(&list("?refpattern=r?").await), ["a1", "a2"]);
    assert_eq!(ids(&list("?idpattern=%7Ba1,b1%7D").await), ["a1", "b1"]);
    assert_eq!(
        ids(&list("?idpattern=a*&refpattern=*2").await),
        ["a2"],
        "intersection"
    );
    assert_eq!(list("?idpattern=%5B").await, json!([]), "invalid glob");
    assert_eq!(list("?refpattern=%5B").await, json!([]), "invalid glob");
    assert_eq!(
        ids(&list("?domain=&owner=&unknown=1").await),
        ["a1", "a2", "b1"]
    );

    let base: BTreeSet<&str> = ["id", "type", "reference", "created_at", "updated_at"].into();
    let keys = |p: &Value| -> BTreeSet<String> { p.as_object().unwrap().keys().cloned().collect() };
    let with = |extra: &[&str]| -> BTreeSet<String> {
        base.iter().chain(extra).map(|s| s.to_string()).collect()
    };

    for p in list("?filter=state").await.as_array().unwrap() {
        assert_eq!(keys(p), with(&["state"]), "{p}");
        assert_eq!(p["state"]["order"], "stop");
    }
    for p in list("?filter=config,metadata").await.as_array().unwrap() {
        let expected = if p["id"] == "a1" {
            with(&["config", "metadata"])
        } else {
            with(&["config"])
        };
        assert_eq!(keys(p), expected, "{p}");
        assert_eq!(p["config"]["id"], p["id"]);
    }
    for p in list("?filter=all").await.as_array().unwrap() {
        assert_eq!(
            keys(p),
            with(&[]),
            "unknown filter names select nothing: {p}"
        );
    }
    for p in list("").await.as_array().unwrap() {
        let expected = if p["id"] == "a1" {
            with(&["config", "state", "report", "metadata"])
        } else {
            with(&["config", "state", "report"])
        };
        assert_eq!(keys(p), expected, "{p}");
    }

    let (status, one) = srv.get("/api/v3/process/a1?filter=report").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(keys(&one), with(&["report"]), "{one}");
}

/// §3.5 + §5.6: the body's `id` replaces the current one; an empty id is "an empty ID is not
/// allowed" (400), never a rename to a generated id.
#[tokio::test]
async fn put_with_an_empty_id_is_400_and_renames_nothing() {
    let srv = TestServer::start().await;
    srv.create(idle("keep")).await;
    let before = text(&srv, "/api/v3/process/keep/config").await;
    let (status, body) = srv
        .call(Method::PUT, "/api/v3/process/keep", Some(json!({"id": ""})))
        .await;
    let (_, list) = srv.get("/api/v3/process").await;
    assert_eq!(ids(&list), ["keep"], "PUT answered {status} {body}");
    assert_error(status, &body, 400);
    assert_eq!(text(&srv, "/api/v3/process/keep/config").await, before);
}

/// §3.3 step 5: an explicit empty `id` on create is 400 "an empty ID is not allowed" (only an
/// absent or null id gets a generated one).
#[tokio::test]
async fn create_with_an_explicit_empty_id_is_400() {
    let srv = TestServer::start().await;
    let (status, body) = srv
        .call(Method::POST, "/api/v3/process", Some(idle("")))
        .await;
    expect(status, &body, 400, "Invalid process config");
    assert!(details(&body).contains("empty ID"), "{body}");
}

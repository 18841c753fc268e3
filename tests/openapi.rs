//! The OpenAPI document against the running server (auth on). Every operation the document
//! declares is called — with no token, a bad token and a valid one; on made-up and real ids; with
//! no body, valid bodies, broken bodies and a body over the size limit — and every answer must be
//! a status the document declares for that operation, with a declared content type and a body its
//! schema accepts. Every operation must also have answered 2xx at least once (so its success
//! schema was checked), except those whose success needs a real WebRTC negotiation. The routes
//! of `src/api/mod.rs` and the paths of the document must be the same set.
//!
//! Run with `cargo test --test openapi`.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use common::{ServerLogOnPanic, TestServer, PASS, USER};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use reqwest::Method;
use serde_json::{json, Value};

/// Every route `src/api/mod.rs` serves, as (method, path). HEAD, which axum answers for every
/// GET, is left out, and so is the Swagger UI, the viewer of the document itself.
const ROUTES: &[(&str, &str)] = &[
    ("GET", "/ping"),
    ("GET", "/metrics"),
    ("GET", "/player"),
    ("GET", "/player/"),
    ("GET", "/player/{id}"),
    ("GET", "/player.js"),
    ("GET", "/publish/{id}"),
    ("GET", "/publish.js"),
    ("GET", "/webrtc.js"),
    ("GET", "/api"),
    ("POST", "/api/login"),
    ("GET", "/api/login/refresh"),
    ("GET", "/api/v3/process"),
    ("POST", "/api/v3/process"),
    ("GET", "/api/v3/process/{id}"),
    ("PUT", "/api/v3/process/{id}"),
    ("DELETE", "/api/v3/process/{id}"),
    ("PUT", "/api/v3/process/{id}/command"),
    ("GET", "/api/v3/process/{id}/config"),
    ("GET", "/api/v3/process/{id}/state"),
    ("GET", "/api/v3/process/{id}/report"),
    ("GET", "/api/v3/process/{id}/probe"),
    ("GET", "/api/v3/process/{id}/metadata"),
    ("GET", "/api/v3/process/{id}/metadata/{key}"),
    ("PUT", "/api/v3/process/{id}/metadata/{key}"),
    ("GET", "/api/v3/metadata"),
    ("GET", "/api/v3/metadata/{key}"),
    ("PUT", "/api/v3/metadata/{key}"),
    ("GET", "/api/v3/skills"),
    ("GET", "/api/v3/skills/reload"),
    ("GET", "/api/v3/process/{id}/webrtc"),
    ("POST", "/api/v3/process/{id}/webrtc/token"),
    ("GET", "/api/v3/process/{id}/whip"),
    ("POST", "/api/v3/process/{id}/whip/token"),
    ("GET", "/api/v3/webrtc/sessions"),
    ("DELETE", "/api/v3/webrtc/sessions/{resource}"),
    ("GET", "/whep"),
    ("POST", "/whep/{id}"),
    ("GET", "/whep/{id}"),
    ("OPTIONS", "/whep/{id}"),
    ("PATCH", "/whep/{id}/{resource}"),
    ("DELETE", "/whep/{id}/{resource}"),
    ("GET", "/whep/{id}/{resource}"),
    ("OPTIONS", "/whep/{id}/{resource}"),
    ("POST", "/api/v3/whep/{id}"),
    ("GET", "/api/v3/whep/{id}"),
    ("OPTIONS", "/api/v3/whep/{id}"),
    ("PATCH", "/api/v3/whep/{id}/{resource}"),
    ("DELETE", "/api/v3/whep/{id}/{resource}"),
    ("GET", "/api/v3/whep/{id}/{resource}"),
    ("OPTIONS", "/api/v3/whep/{id}/{resource}"),
    ("POST", "/whip/{id}"),
    ("GET", "/whip/{id}"),
    ("OPTIONS", "/whip/{id}"),
    ("PATCH", "/whip/{id}/{resource}"),
    ("DELETE", "/whip/{id}/{resource}"),
    ("GET", "/whip/{id}/{resource}"),
    ("OPTIONS", "/whip/{id}/{resource}"),
    ("POST", "/api/v3/whip/{id}"),
    ("GET", "/api/v3/whip/{id}"),
    ("OPTIONS", "/api/v3/whip/{id}"),
    ("PATCH", "/api/v3/whip/{id}/{resource}"),
    ("DELETE", "/api/v3/whip/{id}/{resource}"),
    ("GET", "/api/v3/whip/{id}/{resource}"),
    ("OPTIONS", "/api/v3/whip/{id}/{resource}"),
];

/// Operations whose success needs a live WebRTC session (a real SDP negotiation), which this
/// test does not make; tests/whep_signalling.rs and tests/whip.rs cover those answers.
const NEEDS_SESSION: &[(&str, &str)] = &[
    ("POST", "/whep/{id}"),
    ("POST", "/api/v3/whep/{id}"),
    ("PATCH", "/whep/{id}/{resource}"),
    ("PATCH", "/api/v3/whep/{id}/{resource}"),
    ("GET", "/whep/{id}/{resource}"),
    ("GET", "/api/v3/whep/{id}/{resource}"),
    ("POST", "/whip/{id}"),
    ("POST", "/api/v3/whip/{id}"),
    ("PATCH", "/whip/{id}/{resource}"),
    ("PATCH", "/api/v3/whip/{id}/{resource}"),
    ("GET", "/whip/{id}/{resource}"),
    ("GET", "/api/v3/whip/{id}/{resource}"),
    ("DELETE", "/api/v3/webrtc/sessions/{resource}"),
];

/// The request body limit the server runs with here (small, so the oversized body is cheap).
const MAX_BODY: usize = 64 * 1024;

const MISSING: &str = "oa-missing";

/// A running process: testsrc into a null output.
fn source_process() -> Value {
    let mut config = common::testsrc_process("oa-src");
    config["reference"] = json!("oa");
    config
}

/// A process with a WHIP input and a WHEP output that is never started (no FFmpeg needed).
fn relay_process() -> Value {
    json!({
        "id": "oa-relay",
        "input": [{"id": "in", "address": "{whip}", "options": []}],
        "output": [{"id": "null", "address": "-", "options": ["-f", "null"]}],
        "autostart": false,
        "webrtc": {"enabled": true}
    })
}

/// Values tried for each path parameter: made-up ones first, then real ones.
fn path_values(name: &str) -> Vec<String> {
    let values: &[&str] = match name {
        "id" => &[MISSING, "oa-src", "oa-relay"],
        "key" => &["oa-missing-key", "oa-key"],
        "resource" => &["oa-missing-resource"],
        other => panic!("no test values for path parameter {other}"),
    };
    values.iter().map(|v| v.to_string()).collect()
}

/// Bodies the server must accept for an operation, keyed by operationId (the path values in
/// `ids`). Each must also validate against the declared request schema.
fn valid_bodies(operation_id: &str, ids: &BTreeMap<String, String>) -> Vec<String> {
    let id = ids.get("id").map(String::as_str).unwrap_or(MISSING);
    let bodies = match operation_id {
        "auth_login" => vec![json!({"username": USER, "password": PASS})],
        "process_create" => {
            let mut config = common::testsrc_process("oa-created");
            config["autostart"] = json!(false);
            vec![config]
        }
        "process_update" => {
            // The full definition of the fixture again, with a new reference.
            let mut config = if id == "oa-relay" {
                relay_process()
            } else {
                source_process()
            };
            config["id"] = json!(id);
            config["reference"] = json!("oa-updated");
            vec![config]
        }
        "process_command" => vec![json!({"command": "stop"}), json!({"command": "start"})],
        "metadata_process_put" | "metadata_system_put" => vec![
            json!({"a": 1}),
            json!([1, "two"]),
            json!("text"),
            json!(42),
            json!(0.1),
            json!(true),
            json!(null),
        ],
        "webrtc_issue_token" | "whip_issue_publish_token" => {
            vec![json!({}), json!({"ttl_seconds": 60})]
        }
        _ => return Vec::new(),
    };
    bodies.iter().map(Value::to_string).collect()
}

/// JSON bodies the request schema refuses, made from `base` (a body the server accepts): the
/// whole value of another type, each property of another type or just past a numeric bound,
/// each required property left out. `null` is not tried: as in datarhei Core (Go), a `null`
/// field reads as its zero value.
fn violations(document: &mut Document, schema: &Value, base: Option<&str>) -> Vec<String> {
    let candidates = [
        json!("x"),
        json!(7),
        json!(1.5),
        json!(true),
        json!([7]),
        json!({"x": 1}),
    ];
    let mut out: Vec<Value> = candidates.to_vec();
    let base: Option<Value> = base.and_then(|b| serde_json::from_str(b).ok());
    let resolved = document.deref(schema).clone();
    if let Some(Value::Object(base)) = &base {
        for (name, property) in resolved["properties"].as_object().into_iter().flatten() {
            let property = document.deref(property).clone();
            let mut values: Vec<Value> = candidates.to_vec();
            if property.get("properties").is_some() {
                // serde's derived Deserialize reads a struct from an array too (`"limits": [7]`
                // is `cpu: 7`); that leniency of the process definition is known and left.
                values.retain(|v| !v.is_array());
            }
            if let Some(min) = property["minimum"].as_i64() {
                values.push(json!(min - 1));
            }
            if let Some(max) = property["maximum"].as_i64() {
                values.push(json!(max + 1));
            }
            for value in values {
                let mut body = base.clone();
                body.insert(name.clone(), value);
                out.push(Value::Object(body));
            }
        }
        for name in resolved["required"].as_array().into_iter().flatten() {
            let mut body = base.clone();
            body.remove(name.as_str().unwrap_or_default());
            out.push(Value::Object(body));
        }
    }
    out.into_iter()
        .filter(|body| document.validate(schema, body).is_err())
        .map(|body| body.to_string())
        .collect()
}

/// Bodies of the declared media type the server must refuse.
fn broken_bodies(media_type: &str) -> Vec<(String, Vec<u8>)> {
    match media_type {
        "application/json" => vec![
            (media_type.into(), b"{\"unterminated".to_vec()),
            ("text/plain".into(), b"{}".to_vec()),
        ],
        "application/sdp" => vec![
            (media_type.into(), b"not an offer".to_vec()),
            ("text/plain".into(), b"v=0\r\n".to_vec()),
        ],
        "application/trickle-ice-sdpfrag" => vec![
            (media_type.into(), b"a=ice-ufrag".to_vec()),
            ("text/plain".into(), b"a=end-of-candidates\r\n".to_vec()),
        ],
        other => panic!("no broken bodies for {other}"),
    }
}

/// One request of the run.
struct Call {
    method: Method,
    path: String,
    token: Option<String>,
    body: Option<(String, Vec<u8>)>,
    /// What this request is, for failure messages.
    what: String,
}

/// The document, with compiled response and request schemas.
struct Document {
    doc: Value,
    validators: HashMap<String, jsonschema::Validator>,
}

impl Document {
    /// Validates `instance` against `schema`, resolving `#/components/...` in the document.
    fn validate(&mut self, schema: &Value, instance: &Value) -> Result<(), String> {
        let key = schema.to_string();
        if !self.validators.contains_key(&key) {
            let mut root = match schema {
                Value::Object(map) => map.clone(),
                other => panic!("schema is not an object: {other}"),
            };
            root.insert("components".into(), self.doc["components"].clone());
            let validator = jsonschema::draft202012::options()
                .build(&Value::Object(root))
                .map_err(|e| format!("schema {schema} does not compile: {e}"))?;
            self.validators.insert(key.clone(), validator);
        }
        let errors: Vec<String> = self.validators[&key]
            .iter_errors(instance)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    /// A `$ref`-free view of a response, request body or parameter object.
    fn deref<'a>(&'a self, value: &'a Value) -> &'a Value {
        match value.get("$ref").and_then(Value::as_str) {
            Some(pointer) => self
                .doc
                .pointer(pointer.trim_start_matches('#'))
                .unwrap_or_else(|| panic!("dangling $ref {pointer}")),
            None => value,
        }
    }
}

/// The media type of a Content-Type value, lowercased, without parameters.
fn media_type(value: &str) -> String {
    value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

fn expand(template: &str, ids: &BTreeMap<String, String>) -> String {
    ids.iter()
        .fold(template.to_string(), |path, (name, value)| {
            path.replace(&format!("{{{name}}}"), value)
        })
}

/// Every assignment of test values to the parameters of a path template.
fn assignments(template: &str) -> Vec<BTreeMap<String, String>> {
    let names: Vec<String> = template
        .split('{')
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name.to_string()))
        .collect();
    let mut out = vec![BTreeMap::new()];
    for name in names {
        out = out
            .into_iter()
            .flat_map(|partial| {
                let name = name.clone();
                path_values(&name).into_iter().map(move |value| {
                    let mut next = partial.clone();
                    next.insert(name.clone(), value);
                    next
                })
            })
            .collect();
    }
    out
}

/// Order of the run: reads first, then writes, then deletes, the fixture processes' own
/// deletion last (everything else needs them).
fn phase(method: &str, path: &str) -> u8 {
    match method {
        "GET" | "HEAD" | "OPTIONS" => 0,
        "DELETE" if path == "/api/v3/process/{id}" => 3,
        "DELETE" => 2,
        _ => 1,
    }
}

fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            if matches!(
                method.as_str(),
                "get" | "put" | "post" | "delete" | "options" | "head" | "patch" | "trace"
            ) {
                out.push((method.to_uppercase(), path.clone(), operation.clone()));
            }
        }
    }
    out.sort_by_key(|(method, path, _)| (phase(method, path), path.clone(), method.clone()));
    out
}

/// Checks one answer against the operation; returns the failures.
async fn check_answer(
    document: &mut Document,
    operation: &Value,
    call: &Call,
    response: reqwest::Response,
) -> (u16, Vec<String>) {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(media_type);
    let body = response.bytes().await.unwrap_or_default();
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
    let fail = |why: String| format!("{}: {status} {why}; body: {text}", call.what);
    let responses = &operation["responses"];
    let Some(declared) = responses
        .get(status.to_string())
        .or_else(|| responses.get("default"))
    else {
        let known: Vec<&String> = responses
            .as_object()
            .map(|m| m.keys().collect())
            .unwrap_or_default();
        return (
            status,
            vec![fail(format!("is not declared (declared: {known:?})"))],
        );
    };
    let declared = document.deref(declared).clone();
    let mut failures = Vec::new();
    // A HEAD answer has the GET's headers and never a body.
    let head = call.method == Method::HEAD;
    match declared.get("content").and_then(Value::as_object) {
        None if head => {}
        None => {
            if !body.is_empty() {
                failures.push(fail("has a body, but the document declares none".into()));
            }
        }
        Some(content) => {
            let Some(content_type) = content_type else {
                return (status, vec![fail("has no Content-Type".into())]);
            };
            let Some(media) = content.get(&content_type) else {
                let known: Vec<&String> = content.keys().collect();
                return (
                    status,
                    vec![fail(format!(
                        "has Content-Type {content_type}, declared: {known:?}"
                    ))],
                );
            };
            if content_type == "application/json" && !head {
                match serde_json::from_slice::<Value>(&body) {
                    Err(e) => failures.push(fail(format!("is not JSON: {e}"))),
                    Ok(instance) => {
                        if let Some(schema) = media.get("schema") {
                            if let Err(e) = document.validate(schema, &instance) {
                                failures.push(fail(format!("does not match its schema: {e}")));
                            }
                        }
                    }
                }
            }
        }
    }
    // The router's own 404 (no route) and 405 (no method) mean the path is not served.
    if status == 405 || (status == 404 && text.contains("\"message\":\"Not Found\"")) {
        failures.push(fail(
            "comes from the router: the operation is not routed".into(),
        ));
    }
    (status, failures)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_answers_as_documented() {
    let max_body = MAX_BODY.to_string();
    let mut server =
        TestServer::start_with_auth(&[("STREAMCORE_HTTP_MAX_BODY_BYTES", max_body.as_str())]).await;
    // The document is public, as in datarhei Core.
    let doc_response = server
        .http
        .get(server.url("/api/swagger/doc.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(doc_response.status(), 200);
    let doc: Value = doc_response.json().await.unwrap();
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

    // A connection per request: the server may close one whose body it did not read (401 before
    // the body, 413), and a pooled connection closed that way fails the next request on it.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .unwrap();
    let mut document = Document {
        doc: doc.clone(),
        validators: HashMap::new(),
    };
    let mut failures = Vec::new();
    let mut requests = 0;
    let mut succeeded: BTreeSet<(String, String)> = BTreeSet::new();
    let operations = operations(&doc);
    for (method, template, operation) in &operations {
        let operation_id = operation["operationId"].as_str().unwrap_or("").to_string();
        let secured = operation
            .get("security")
            .and_then(Value::as_array)
            .is_some_and(|s| !s.is_empty());
        let valid_token = if operation_id == "auth_refresh" {
            refresh.clone()
        } else {
            access.clone()
        };
        let request_body = operation
            .get("requestBody")
            .map(|b| document.deref(b).clone());
        let assignments = assignments(template);
        let count = assignments.len();
        for (n, ids) in assignments.into_iter().enumerate() {
            // The last assignment has only real ids (where the path has any).
            let is_last = n + 1 == count;
            let path = expand(template, &ids);
            // (content type, bytes, must be accepted); None sends no body.
            let mut bodies: Vec<Option<(String, Vec<u8>, bool)>> = Vec::new();
            match &request_body {
                None => bodies.push(None),
                Some(request_body) => {
                    if request_body["required"] != json!(true) {
                        bodies.push(None);
                    }
                    let content = request_body["content"].as_object().expect("content");
                    for (media, declared) in content {
                        for body in valid_bodies(&operation_id, &ids) {
                            let instance: Value = serde_json::from_str(&body).unwrap();
                            if let Err(e) = document.validate(&declared["schema"], &instance) {
                                failures.push(format!(
                                    "{method} {template}: the body {body} that the server \
                                     accepts is refused by the request schema: {e}"
                                ));
                            }
                            bodies.push(Some((media.clone(), body.into_bytes(), true)));
                        }
                        if is_last && media == "application/json" {
                            let mut base = valid_bodies(&operation_id, &ids).into_iter().next();
                            if operation_id == "process_create" {
                                // A fresh id, so that a refusal is about the violation alone.
                                base = base.map(|b| b.replace("oa-created", "oa-violation"));
                            }
                            for violation in
                                violations(&mut document, &declared["schema"], base.as_deref())
                            {
                                bodies.push(Some((media.clone(), violation.into_bytes(), false)));
                            }
                        }
                        for (ct, bytes) in broken_bodies(media) {
                            bodies.push(Some((ct, bytes, false)));
                        }
                        if n == 0 {
                            bodies.push(Some((media.clone(), vec![b' '; MAX_BODY + 1], false)));
                        }
                    }
                }
            }
            let tokens = [
                ("no token", None),
                ("bad token", Some("not-a-jwt".to_string())),
                ("valid token", Some(valid_token.clone())),
            ];
            for (token_name, token) in tokens {
                for body in &bodies {
                    let what = format!(
                        "{method} {path} ({token_name}, {})",
                        match body {
                            None => "no body".to_string(),
                            Some((ct, bytes, _)) => format!(
                                "{ct} body {:?}",
                                String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
                            ),
                        }
                    );
                    let call = Call {
                        method: Method::from_bytes(method.as_bytes()).unwrap(),
                        path: path.clone(),
                        token: token.clone(),
                        body: body.as_ref().map(|(ct, b, _)| (ct.clone(), b.clone())),
                        what,
                    };
                    let mut request = http.request(call.method.clone(), server.url(&call.path));
                    if let Some(token) = &call.token {
                        request = request.header(AUTHORIZATION, format!("Bearer {token}"));
                    }
                    if let Some((ct, bytes)) = &call.body {
                        request = request.header(CONTENT_TYPE, ct).body(bytes.clone());
                    }
                    requests += 1;
                    let response = match request.send().await {
                        Ok(response) => response,
                        Err(e) => {
                            assert!(server.alive(), "{}: the server died", call.what);
                            failures.push(format!("{}: no answer: {e}", call.what));
                            continue;
                        }
                    };
                    let (status, found) =
                        check_answer(&mut document, operation, &call, response).await;
                    failures.extend(found);
                    let accepted = (200..300).contains(&status);
                    if accepted && body.as_ref().is_some_and(|(_, _, valid)| !valid) {
                        failures.push(format!(
                            "{}: {status}: a body the document does not allow was accepted",
                            call.what
                        ));
                    }
                    if accepted {
                        succeeded.insert((method.clone(), template.clone()));
                        if secured && token_name != "valid token" {
                            failures.push(format!("{}: {status} without a valid token", call.what));
                        }
                    }
                }
            }
        }
    }
    // Parameters the server cannot read: a path segment that is not UTF-8 once decoded, a
    // repeated query key. The body, where one is required, is one the server accepts.
    for (method, template, operation) in &operations {
        let operation_id = operation["operationId"].as_str().unwrap_or("");
        let ids = assignments(template).pop().unwrap_or_default();
        let mut paths = Vec::new();
        if !ids.is_empty() {
            let bad: BTreeMap<String, String> =
                ids.keys().map(|k| (k.clone(), "%FF".to_string())).collect();
            paths.push(expand(template, &bad));
        }
        let query = operation["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["in"] == "query")
            .and_then(|p| p["name"].as_str());
        if let Some(name) = query {
            paths.push(format!("{}?{name}=a&{name}=b", expand(template, &ids)));
        }
        let body = valid_bodies(operation_id, &ids).into_iter().next();
        let media = operation["requestBody"]["content"]
            .as_object()
            .and_then(|c| c.keys().next().cloned());
        for path in paths {
            let call = Call {
                method: Method::from_bytes(method.as_bytes()).unwrap(),
                path: path.clone(),
                token: Some(access.clone()),
                body: body
                    .clone()
                    .zip(media.clone())
                    .map(|(b, m)| (m, b.into_bytes())),
                what: format!("{method} {path} (valid token, unreadable parameter)"),
            };
            let mut request = http
                .request(call.method.clone(), server.url(&call.path))
                .bearer_auth(&access);
            if let Some((ct, bytes)) = &call.body {
                request = request.header(CONTENT_TYPE, ct).body(bytes.clone());
            }
            requests += 1;
            let response = request.send().await.expect("an answer");
            let (_, found) = check_answer(&mut document, operation, &call, response).await;
            failures.extend(found);
        }
    }
    for (method, template, _) in &operations {
        let key = (method.clone(), template.clone());
        if !succeeded.contains(&key)
            && !NEEDS_SESSION.contains(&(method.as_str(), template.as_str()))
        {
            failures.push(format!(
                "{method} {template}: never answered 2xx, so its success was not checked"
            ));
        }
    }
    eprintln!(
        "{} operations, {requests} requests, {} operations answered 2xx",
        operations.len(),
        succeeded.len()
    );
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Every `$ref` in `value`.
fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r),
                    _ => refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
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

//! What the test sends: the fixture processes, path parameter values and request bodies.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::common::{self, PASS, USER};
use super::document::Document;

/// The request body limit the server runs with here (small, so the oversized body is cheap).
pub const MAX_BODY: usize = 64 * 1024;

pub const MISSING: &str = "oa-missing";

/// A running process: testsrc into a null output.
pub fn source_process() -> Value {
    let mut config = common::testsrc_process("oa-src");
    config["reference"] = json!("oa");
    config
}

/// A process with a WHIP input and a WHEP output that is never started (no FFmpeg needed).
pub fn relay_process() -> Value {
    json!({
        "id": "oa-relay",
        "input": [{"id": "in", "address": "{whip}", "options": []}],
        "output": [{"id": "null", "address": "-", "options": ["-f", "null"]}],
        "autostart": false,
        "webrtc": {"enabled": true}
    })
}

/// Values tried for each path parameter: made-up ones first, then real ones.
pub fn path_values(name: &str) -> Vec<String> {
    let values: &[&str] = match name {
        "id" => &[MISSING, "oa-src", "oa-relay"],
        "key" => &["oa-missing-key", "oa-key"],
        "resource" => &["oa-missing-resource"],
        "name" => &["oa-nofs", "disk", "mem"],
        "path" => &["oa-missing.bin", "oa-dir/oa-file.bin"],
        other => panic!("no test values for path parameter {other}"),
    };
    values.iter().map(|v| v.to_string()).collect()
}

/// Values tried for each query parameter, one request each (with a valid token, on real ids).
pub fn query_values(name: &str) -> &'static [&'static str] {
    match name {
        "filter" => &["state", "metadata", "config,report", "nonsense"],
        "reference" => &["oa", "oa-none"],
        "id" => &["oa-src,oa-relay", "oa-missing"],
        "idpattern" => &["oa-*", "["],
        "refpattern" => &["o?", "["],
        "token" => &["not-a-jwt"],
        "glob" => &["/**", "/oa-dir/*.bin", "["],
        "sort" => &["name", "size", "lastmod", "nonsense"],
        "order" => &["asc", "desc", "nonsense"],
        "collectors" => &["hls,webrtc", "none"],
        "format" => &["console", "raw", "xml"],
        other => panic!("no test values for query parameter {other}"),
    }
}

/// Bodies the server must accept for an operation, keyed by operationId (the path values in
/// `ids`). Each must also validate against the declared request schema.
pub fn valid_bodies(operation_id: &str, ids: &BTreeMap<String, String>) -> Vec<String> {
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
        "fs_put_file" | "memfs_put" | "memfs_post" => vec![json!("file content")],
        // Stores nothing new: the fixture server keeps its settings for the other operations.
        "config_put" => vec![json!({"version": 3})],
        "metrics_query" => vec![
            json!({"metrics": [{"name": "uptime_uptime"}]}),
            json!({"timerange_sec": 60, "interval_sec": 2,
                "metrics": [{"name": "session_active", "labels": {"collector": "hls"}}]}),
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
pub fn violations(document: &mut Document, schema: &Value, base: Option<&str>) -> Vec<String> {
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
pub fn broken_bodies(media_type: &str) -> Vec<(String, Vec<u8>)> {
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
        // Any bytes are a file.
        "application/octet-stream" => Vec::new(),
        other => panic!("no broken bodies for {other}"),
    }
}

pub fn expand(template: &str, ids: &BTreeMap<String, String>) -> String {
    ids.iter()
        .fold(template.to_string(), |path, (name, value)| {
            path.replace(&format!("{{{name}}}"), value)
        })
}

/// Every assignment of test values to the parameters of a path template.
pub fn assignments(template: &str) -> Vec<BTreeMap<String, String>> {
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

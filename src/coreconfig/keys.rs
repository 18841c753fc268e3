//! Which streamcore key a datarhei Core key is, and how their values differ.

use serde_json::Value;

use crate::config::{set_value, Config};

/// How a value is written in each document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// The same value.
    Same,
    /// Core writes `:8080` for every interface; streamcore needs `0.0.0.0:8080`.
    Address,
    /// Core's `silent` is tracing's `off`.
    LogLevel,
}

/// Core keys that are streamcore keys under another name. Every other streamcore key appears in
/// the datarhei document under its own path.
pub const TABLE: &[(&str, &str, Form)] = &[
    ("address", "http.address", Form::Address),
    ("api.auth.enable", "auth.enable", Form::Same),
    ("api.auth.username", "auth.username", Form::Same),
    ("api.auth.password", "auth.password", Form::Same),
    ("api.auth.jwt.secret", "auth.jwt_secret", Form::Same),
    ("db.dir", "storage.data_dir", Form::Same),
    ("storage.disk.dir", "storage.public_dir", Form::Same),
    ("ffmpeg.log.max_lines", "ffmpeg.log_max_lines", Form::Same),
    (
        "ffmpeg.log.max_history",
        "ffmpeg.log_max_history",
        Form::Same,
    ),
    ("log.level", "log.level", Form::LogLevel),
];

/// Settings the API may show but not change: they decide what FFmpeg and GStreamer may run,
/// read and write, or where the server's own files are (docs/security.md). Only the
/// configuration file and the environment set them.
pub const READ_ONLY: &[&str] = &[
    "storage.data_dir",
    "storage.database",
    "ffmpeg.binary",
    "ffmpeg.user",
    "ffmpeg.sandbox",
    "ffmpeg.read_paths",
    "ffmpeg.access.input.allow",
    "ffmpeg.access.input.block",
    "ffmpeg.access.output.allow",
    "ffmpeg.access.output.block",
    "webrtc.pipelines_dir",
];

/// The Core name of a streamcore key.
pub fn core_name(key: &str) -> String {
    TABLE
        .iter()
        .find(|(_, sc, _)| *sc == key)
        .map_or_else(|| key.to_string(), |(core, _, _)| core.to_string())
}

/// Every streamcore key with a value of its own (objects are not keys; lists are).
pub fn streamcore_keys() -> Vec<String> {
    let mut keys = Vec::new();
    let tree = serde_json::to_value(Config::default()).unwrap_or_default();
    leaves(&tree, "", &mut keys);
    keys.push("auth.enable".into());
    keys
}

/// The dotted keys of `value`'s non-object values (and empty objects) below `prefix`.
pub fn leaves(value: &Value, prefix: &str, out: &mut Vec<String>) {
    match value.as_object() {
        Some(object) if !object.is_empty() => {
            for (k, v) in object {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(v, &key, out);
            }
        }
        _ => out.push(prefix.to_string()),
    }
}

/// The value at a dotted key.
pub fn get<'a>(tree: &'a Value, key: &str) -> Option<&'a Value> {
    key.split('.').try_fold(tree, |node, part| node.get(part))
}

/// Lays the settings of a datarhei document over a streamcore configuration tree. Read-only
/// settings are skipped, and so is `null` (datarhei's "leave it").
pub fn overlay(tree: &mut Value, doc: &Value) {
    for key in streamcore_keys() {
        if READ_ONLY.contains(&key.as_str()) {
            continue;
        }
        let (core, form) = TABLE
            .iter()
            .find(|(_, sc, _)| *sc == key)
            .map_or((key.as_str(), Form::Same), |(core, _, form)| (*core, *form));
        if let Some(value) = get(doc, core).filter(|v| !v.is_null()) {
            set_value(tree, &key, to_streamcore(value, form));
        }
    }
}

fn to_streamcore(value: &Value, form: Form) -> Value {
    match (form, value.as_str()) {
        (Form::Address, Some(a)) if a.starts_with(':') => Value::String(format!("0.0.0.0{a}")),
        (Form::LogLevel, Some("silent")) => Value::String("off".into()),
        _ => value.clone(),
    }
}

/// A streamcore value in datarhei's form.
pub fn to_core(value: &Value, form: Form) -> Value {
    match (form, value.as_str()) {
        (Form::LogLevel, Some("off")) => Value::String("silent".into()),
        _ => value.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_keys_reach_streamcore_keys() {
        let mut tree = serde_json::json!({});
        overlay(
            &mut tree,
            &serde_json::json!({"address": ":9000", "api": {"auth": {"enable": true, "username": "u"}},
                "ffmpeg": {"binary": "/bin/sh", "log": {"max_lines": 7}}, "log": {"level": "silent"},
                "sessions": {"max_sessions": 3}, "webrtc": {"jitter_latency_ms": 50}}),
        );
        assert_eq!(tree["http"]["address"], "0.0.0.0:9000");
        assert_eq!(tree["auth"]["enable"], true);
        assert_eq!(tree["auth"]["username"], "u");
        assert_eq!(tree["ffmpeg"]["log_max_lines"], 7);
        assert!(tree["ffmpeg"].get("binary").is_none(), "read-only");
        assert_eq!(tree["log"]["level"], "off");
        assert_eq!(tree["sessions"]["max_sessions"], 3);
        assert_eq!(tree["webrtc"]["jitter_latency_ms"], 50);
    }

    #[test]
    fn env_names_become_core_names() {
        assert_eq!(core_name("http.address"), "address");
        assert_eq!(core_name("webrtc.encoder"), "webrtc.encoder");
    }
}

//! The datarhei v3 document: rendering it from the configuration in force, merging a PUT over
//! the stored one, and the checks whose failures are a 409 `{"<key>": ["message"]}`.

use std::collections::BTreeMap;
use std::path::{Component, Path};

use serde_json::{json, Value};

use super::keys::{self, get, Form, READ_ONLY, TABLE};
use crate::config::{set_value, Config};

/// Validation errors by Core key.
pub type Errors = BTreeMap<String, Vec<String>>;

/// Core's v3 defaults for the keys streamcore carries without using (`config/data.go`).
fn core_defaults() -> Value {
    json!({
        "version": 3,
        "update_check": false,
        "log": {"topics": []},
        "db": {},
        "host": {"name": [], "auto": true},
        "api": {
            "read_only": false,
            "access": {"http": {"allow": [], "block": []}, "https": {"allow": [], "block": []}},
            "auth": {"enable": false, "disable_localhost": false, "username": "", "password": "",
                "jwt": {"secret": ""}, "auth0": {"enable": false, "tenants": []}}
        },
        "tls": {"address": ":8181", "enable": false, "auto": false, "email": "cert@datarhei.com",
            "cert_file": "", "key_file": ""},
        "storage": {
            "disk": {"max_size_mbytes": 0, "cache": {"enable": false, "max_size_mbytes": 0,
                "ttl_seconds": 300, "max_file_size_mbytes": 1,
                "types": {"allow": [], "block": [".m3u8", ".mpd"]}}},
            "memory": {"auth": {"enable": true, "username": "admin", "password": ""},
                "max_size_mbytes": 0, "purge": false},
            "s3": [],
            "cors": {"origins": ["*"]},
            "mimetypes_file": ""
        },
        "rtmp": {"enable": false, "enable_tls": false, "address": ":1935", "address_tls": ":1936",
            "app": "/", "token": ""},
        "srt": {"enable": false, "address": ":6000", "passphrase": "", "token": "",
            "log": {"enable": false, "topics": []}},
        "ffmpeg": {"access": {"input": {"allow": [], "block": []}, "output": {"allow": [], "block": []}},
            "log": {}},
        "playout": {"enable": false, "min_port": 0, "max_port": 0},
        "debug": {"profiling": false, "force_gc": 0, "memory_limit_mbytes": 0},
        "service": {"enable": false, "token": "", "url": ""},
        "router": {"blocked_prefixes": ["/api"], "routes": {}, "ui_path": ""}
    })
}

/// Who this server is, for the document's `id`, `name` and `created_at`.
pub struct Identity<'a> {
    /// Instance id.
    pub id: &'a str,
    /// Instance name.
    pub name: &'a str,
    /// When the stored document was made.
    pub created_at: &'a str,
}

/// The document for `config`: Core defaults, then the stored document (Core-only keys the lead
/// has not wired yet live there), then every streamcore setting under its Core or own name.
pub fn render(config: &Config, stored: &Value, who: &Identity) -> Value {
    let mut doc = core_defaults();
    merge(&mut doc, stored);
    let tree = serde_json::to_value(config).unwrap_or_default();
    for key in keys::streamcore_keys() {
        let (core, form) = TABLE
            .iter()
            .find(|(_, sc, _)| *sc == key)
            .map_or((key.as_str(), Form::Same), |(core, _, form)| (*core, *form));
        if let Some(value) = get(&tree, &key) {
            set_value(&mut doc, core, keys::to_core(value, form));
        }
    }
    set_value(
        &mut doc,
        "api.auth.enable",
        Value::Bool(config.auth.enabled()),
    );
    set_value(&mut doc, "id", json!(who.id));
    set_value(&mut doc, "name", json!(who.name));
    set_value(&mut doc, "version", json!(3));
    set_value(&mut doc, "created_at", json!(who.created_at));
    doc
}

/// Lays `over` onto `base`: objects key by key, everything else replaced.
pub fn merge(base: &mut Value, over: &Value) {
    match (base.as_object_mut(), over.as_object()) {
        (Some(base), Some(over)) => {
            for (k, v) in over {
                match base.get_mut(k) {
                    Some(slot) if slot.is_object() && v.is_object() => merge(slot, v),
                    _ => {
                        base.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        _ => *base = over.clone(),
    }
}

/// Checks a PUT body against the document in force before anything is loaded: values of the
/// wrong JSON type and changes of read-only settings.
pub fn check_body(body: &Value, current: &Value) -> Errors {
    let mut errors = Errors::new();
    let mut leaves = Vec::new();
    keys::leaves(body, "", &mut leaves);
    for key in leaves {
        let (Some(new), Some(old)) = (get(body, &key), get(current, &key)) else {
            continue;
        };
        if new.is_null() || key == "created_at" {
            continue;
        }
        if !same_type(new, old) {
            errors
                .entry(key.clone())
                .or_default()
                .push(format!("expects a value like {old}"));
        } else if is_read_only(&key) && new != old {
            errors.entry(key).or_default().push(
                "can only be set in the configuration file or the environment (docs/security.md)"
                    .into(),
            );
        }
    }
    errors
}

fn is_read_only(core_key: &str) -> bool {
    let sc = TABLE
        .iter()
        .find(|(core, _, _)| *core == core_key)
        .map_or(core_key, |(_, sc, _)| *sc);
    READ_ONLY.contains(&sc) || matches!(core_key, "id" | "version")
}

fn same_type(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(a), Value::Number(b)) => {
            // A setting that is a count stays one.
            b.as_u64().is_none() || a.as_u64().is_some()
        }
        _ => std::mem::discriminant(a) == std::mem::discriminant(b),
    }
}

/// Checks the configuration a merged document gives.
pub fn check_config(loaded: anyhow::Result<Config>, data_dir: &Path) -> Errors {
    let mut errors = Errors::new();
    let mut add = |key: &str, message: String| errors.entry(key.into()).or_default().push(message);
    let config = match loaded {
        Ok(config) => config,
        Err(e) => {
            let message = format!("{e:#}");
            add(&key_in(&message), message);
            return errors;
        }
    };
    if config.auth.enable == Some(true) {
        if config.auth.username.is_empty() {
            add(
                "api.auth.username",
                "must be set when auth is enabled".into(),
            );
        }
        if config.auth.password.is_empty() {
            add(
                "api.auth.password",
                "must be set when auth is enabled".into(),
            );
        }
    }
    if !inside(&config.storage.public_dir, data_dir) {
        add(
            "storage.disk.dir",
            "must be a directory inside the data directory".into(),
        );
    }
    if config.metrics.interval_sec == 0 {
        add("metrics.interval_sec", "must be positive".into());
    }
    if config.metrics.range_sec > 86_400 {
        add("metrics.range_sec", "must be at most 86400".into());
    }
    if config.log.max_lines > 100_000 {
        add("log.max_lines", "must be at most 100000".into());
    }
    for net in &config.sessions.ip_ignorelist {
        if net.parse::<ipnet::IpNet>().is_err() {
            add(
                "sessions.ip_ignorelist",
                format!("{net:?} is not a network (address/prefix)"),
            );
        }
    }
    errors
}

/// The Core key a validation message is about (messages start with the streamcore key).
fn key_in(message: &str) -> String {
    let mut keys = keys::streamcore_keys();
    keys.sort_by_key(|k| std::cmp::Reverse(k.len()));
    keys.iter()
        .find(|k| message.contains(k.as_str()))
        .map_or_else(|| "config".into(), |k| keys::core_name(k))
}

/// A relative path that stays below its base, or an absolute one inside `data_dir`.
fn inside(path: &Path, data_dir: &Path) -> bool {
    let below = |p: &Path| {
        p.components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    };
    if path.is_absolute() {
        path.strip_prefix(data_dir).is_ok_and(below)
    } else {
        below(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_document_has_core_and_own_keys() {
        let config = Config::default();
        let doc = render(
            &config,
            &json!({"tls": {"enable": true, "email": "a@b.c"}, "rtmp": {"enable": true}}),
            &Identity {
                id: "i",
                name: "n",
                created_at: "t",
            },
        );
        assert_eq!(doc["address"], "0.0.0.0:8080");
        assert_eq!(doc["api"]["auth"]["enable"], false);
        // A Core-only section is carried as stored; one streamcore has shows its real value.
        assert_eq!(doc["tls"]["email"], "a@b.c");
        assert_eq!(doc["tls"]["enable"], false);
        assert_eq!(doc["rtmp"]["enable"], false);
        assert_eq!(doc["rtmp"]["address"], ":1935");
        assert_eq!(doc["ffmpeg"]["log"]["max_lines"], 50);
        assert_eq!(doc["sessions"]["session_timeout_sec"], 30);
        assert!(doc["webrtc"]["max_viewers_total"].is_u64());
        assert_eq!(doc["version"], 3);
    }

    #[test]
    fn type_and_read_only_errors_name_the_key() {
        let current = render(
            &Config::default(),
            &json!({}),
            &Identity {
                id: "i",
                name: "n",
                created_at: "t",
            },
        );
        let errors = check_body(
            &json!({"ffmpeg": {"binary": "/bin/sh", "max_processes": "x"}, "address": ":1"}),
            &current,
        );
        assert!(errors.contains_key("ffmpeg.binary"));
        assert!(errors.contains_key("ffmpeg.max_processes"));
        assert!(!errors.contains_key("address"));
    }

    #[test]
    fn disk_dir_stays_in_the_data_dir() {
        let data = Path::new("/d");
        assert!(inside(Path::new("public"), data));
        assert!(inside(Path::new("/d/x"), data));
        assert!(!inside(Path::new("../x"), data));
        assert!(!inside(Path::new("/etc"), data));
    }
}

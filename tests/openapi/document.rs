//! The OpenAPI document as the test reads it: its operations, `$ref`s and compiled schemas.

use std::collections::HashMap;

use serde_json::Value;

/// The document, with the schemas compiled so far.
pub struct Document {
    pub doc: Value,
    validators: HashMap<String, jsonschema::Validator>,
}

impl Document {
    pub fn new(doc: Value) -> Document {
        Document {
            doc,
            validators: HashMap::new(),
        }
    }

    /// Validates `instance` against `schema`, resolving `#/components/...` in the document.
    pub fn validate(&mut self, schema: &Value, instance: &Value) -> Result<(), String> {
        let key = schema.to_string();
        if !self.validators.contains_key(&key) {
            let mut root = match schema {
                Value::Object(map) => map.clone(),
                other => panic!("schema is not an object: {other}"),
            };
            // The schema at the root, the components beside it: its refs resolve in place.
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

    /// A `$ref`-free view of a response, request body, parameter or schema object.
    pub fn deref<'a>(&'a self, value: &'a Value) -> &'a Value {
        match value.get("$ref").and_then(Value::as_str) {
            Some(pointer) => self
                .doc
                .pointer(pointer.trim_start_matches('#'))
                .unwrap_or_else(|| panic!("dangling $ref {pointer}")),
            None => value,
        }
    }
}

/// Order of the run: reads first, then writes, then deletes, the fixture processes' own
/// deletion last (everything else needs them).
fn phase(method: &str, path: &str) -> u8 {
    match method {
        "GET" | "HEAD" | "OPTIONS" => 0,
        "DELETE" if path == "/api/v3/process/{id}" => 3,
        // After `/memfs`'s own DELETE, which needs the memory files this one would remove.
        "DELETE" if path == "/api/v3/fs/{name}/{path}" => 3,
        "DELETE" => 2,
        _ => 1,
    }
}

/// Every operation as (METHOD, path template, operation object), in the order of the run.
pub fn operations(doc: &Value) -> Vec<(String, String, Value)> {
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

/// Every `$ref` in `value`.
pub fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
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

/// The media type of a Content-Type value, lowercased, without parameters.
pub fn media_type(value: &str) -> String {
    value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

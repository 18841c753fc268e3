//! Sending one request and checking its answer against the operation that declares it.

use std::collections::BTreeSet;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use reqwest::Method;
use serde_json::Value;

use super::document::{media_type, Document};

/// One request.
pub struct Call {
    pub method: Method,
    pub path: String,
    pub token: Option<String>,
    /// Whether `token` is a valid one.
    pub authorized: bool,
    /// Content type and bytes.
    pub body: Option<(String, Vec<u8>)>,
    /// True for a body the document does not allow: it must not be accepted.
    pub refused: bool,
    /// What this request is, for failure messages.
    pub what: String,
}

/// The state of a run: what was sent, what failed, which operations answered 2xx.
pub struct Run {
    pub document: Document,
    pub failures: Vec<String>,
    pub requests: usize,
    /// (METHOD, path template) of the operations that answered 2xx at least once.
    pub succeeded: BTreeSet<(String, String)>,
    http: reqwest::Client,
    base: String,
}

impl Run {
    pub fn new(base: &str, doc: Value) -> Run {
        Run {
            document: Document::new(doc),
            failures: Vec::new(),
            requests: 0,
            succeeded: BTreeSet::new(),
            // A connection per request: the server may close one whose body it did not read
            // (401 before the body, 413), and a pooled connection closed that way fails the next
            // request sent on it.
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .timeout(std::time::Duration::from_secs(60))
                .build()
                .unwrap(),
            base: base.to_string(),
        }
    }

    /// Sends `call` for the operation at `template` and checks the answer.
    pub async fn send(&mut self, template: &str, operation: &Value, call: Call) {
        let mut request = self
            .http
            .request(call.method.clone(), format!("{}{}", self.base, call.path));
        if let Some(token) = &call.token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        if let Some((content_type, bytes)) = &call.body {
            request = request
                .header(CONTENT_TYPE, content_type)
                .body(bytes.clone());
        }
        self.requests += 1;
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => {
                self.failures.push(format!("{}: no answer: {e}", call.what));
                return;
            }
        };
        let (status, failures) = check_answer(&mut self.document, operation, &call, response).await;
        self.failures.extend(failures);
        if !(200..300).contains(&status) {
            return;
        }
        if call.refused {
            self.failures.push(format!(
                "{}: {status}: a body the document does not allow was accepted",
                call.what
            ));
        }
        // The bearer token this run sends; `/memfs`'s Basic is off here (tests/fs_api.rs has it).
        let secured = operation["security"]
            .as_array()
            .is_some_and(|s| s.iter().any(|r| r.get("bearer").is_some()));
        if secured && !call.authorized {
            self.failures
                .push(format!("{}: {status} without a valid token", call.what));
        }
        self.succeeded
            .insert((call.method.to_string(), template.to_string()));
    }
}

/// Checks one answer against the operation: a declared status, a declared content type, a body
/// its schema accepts (or none where none is declared), and not the router's own 404 or 405.
/// Returns the status and the failures.
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
        let why = format!("is not declared (declared: {known:?})");
        return (status, vec![fail(why)]);
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
                let why = format!("has Content-Type {content_type}, declared: {known:?}");
                return (status, vec![fail(why)]);
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

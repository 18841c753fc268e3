//! The server's own recent log events, kept in memory for `GET /api/v3/log`: a `tracing` layer
//! that writes each event it sees (after the level filter) into a bounded ring.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

/// One event.
#[derive(Debug, Clone)]
pub struct Event {
    /// When it happened.
    pub ts: chrono::DateTime<chrono::Utc>,
    /// `DEBUG`, `INFO`, …
    pub level: &'static str,
    /// The module that logged it.
    pub component: String,
    /// The message.
    pub message: String,
    /// `file:line`.
    pub caller: String,
    /// The other fields, as text.
    pub fields: Vec<(String, String)>,
}

/// The ring.
pub struct Ring {
    events: Mutex<VecDeque<Event>>,
    capacity: std::sync::atomic::AtomicUsize,
}

fn ring() -> &'static Arc<Ring> {
    static RING: OnceLock<Arc<Ring>> = OnceLock::new();
    RING.get_or_init(|| {
        Arc::new(Ring {
            events: Mutex::new(VecDeque::new()),
            capacity: 1000.into(),
        })
    })
}

/// The layer `main` installs next to the console output.
pub fn layer<S: tracing::Subscriber>() -> impl Layer<S> {
    RingLayer(ring().clone())
}

/// Keeps at most `lines` events from now on (`log.max_lines`).
pub fn set_capacity(lines: usize) {
    let ring = ring();
    ring.capacity
        .store(lines, std::sync::atomic::Ordering::Relaxed);
    let mut events = ring.events.lock().unwrap_or_else(|e| e.into_inner());
    while events.len() > lines {
        events.pop_front();
    }
}

type LevelHook = Box<dyn Fn(&str) + Send + Sync>;

fn level_hook() -> &'static OnceLock<LevelHook> {
    static HOOK: OnceLock<LevelHook> = OnceLock::new();
    &HOOK
}

/// How `main` lets a reload change the log filter (`log.level`) of the subscriber it installed.
pub fn on_level_change(hook: impl Fn(&str) + Send + Sync + 'static) {
    let _ = level_hook().set(Box::new(hook));
}

/// Applies `log.level` (a reload may have changed it).
pub fn set_level(level: &str) {
    if let Some(hook) = level_hook().get() {
        hook(level);
    }
}

/// The events kept, oldest first.
pub fn events() -> Vec<Event> {
    let events = ring().events.lock().unwrap_or_else(|e| e.into_inner());
    events.iter().cloned().collect()
}

struct RingLayer(Arc<Ring>);

impl<S: tracing::Subscriber> Layer<S> for RingLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let capacity = self.0.capacity.load(std::sync::atomic::Ordering::Relaxed);
        if capacity == 0 {
            return;
        }
        let meta = event.metadata();
        let mut visitor = Fields::default();
        event.record(&mut visitor);
        let entry = Event {
            ts: chrono::Utc::now(),
            level: meta.level().as_str(),
            component: meta.target().to_string(),
            message: visitor.message,
            caller: format!(
                "{}:{}",
                meta.file().unwrap_or("?"),
                meta.line().unwrap_or(0)
            ),
            fields: visitor.fields,
        };
        let mut events = self.0.events.lock().unwrap_or_else(|e| e.into_inner());
        while events.len() >= capacity {
            events.pop_front();
        }
        events.push_back(entry);
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    fields: Vec<(String, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.fields
                .push((field.name().to_string(), value.to_string()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = text;
        } else {
            self.fields.push((field.name().to_string(), text));
        }
    }
}

impl Event {
    /// Core's console form: `ts=… level=INFO component="…" msg="…" key=value`.
    pub fn console(&self) -> String {
        let mut line = format!(
            "ts={} level={} component={:?} msg={:?}",
            self.ts.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            self.level,
            self.component,
            self.message
        );
        for (k, v) in &self.fields {
            let _ = write!(line, " {k}={v:?}");
        }
        line
    }

    /// Core's raw form: the fields plus `ts`, `level`, `component`, `caller`, `message`.
    pub fn raw(&self) -> Value {
        let mut object = Map::new();
        for (k, v) in &self.fields {
            object.insert(k.clone(), Value::String(v.clone()));
        }
        object.insert(
            "ts".into(),
            Value::String(self.ts.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        );
        object.insert("level".into(), Value::String(self.level.to_string()));
        object.insert("component".into(), Value::String(self.component.clone()));
        object.insert("caller".into(), Value::String(self.caller.clone()));
        object.insert("message".into(), Value::String(self.message.clone()));
        Value::Object(object)
    }
}

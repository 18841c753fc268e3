//! Prometheus metrics: HTTP requests as they happen, process figures read at scrape time.
//!
//! WebRTC: viewers per stream, the bytes sent to them and whether a WHIP publisher is connected
//! are read at scrape time (the bytes from webrtcbin's stats, so [`Metrics::render`] blocks; the
//! handler runs it off the runtime); WHEP and WHIP requests, ICE connect times and cap rejections
//! are counted as they happen.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry as PromRegistry;

use crate::process::runner::Exec;
use crate::process::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProcessLabels {
    id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabels {
    stream: String,
}

/// A session of the RTMP or SRT server: `protocol` is `rtmp`/`srt`, `role` `publish`/`read`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IngestLabels {
    protocol: String,
    role: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IngestBytesLabels {
    protocol: String,
    direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    protocol: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CapLabels {
    cap: String,
}

/// Buckets of the ICE connect time, in seconds: loopback connects in tens of milliseconds,
/// relayed or lossy paths in seconds, and the reaper gives up at `connect_timeout_seconds`.
const ICE_CONNECT_BUCKETS: [f64; 10] = [0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0];

/// The server's metric families.
pub struct Metrics {
    registry: PromRegistry,
    http_requests: Family<HttpLabels, Counter>,
    processes: Family<StateLabels, Gauge>,
    cpu: Family<ProcessLabels, Gauge<f64, AtomicU64>>,
    memory: Family<ProcessLabels, Gauge>,
    webrtc_viewers: Family<StreamLabels, Gauge>,
    webrtc_bytes_sent: Family<StreamLabels, Gauge>,
    whep_requests: Family<HttpLabels, Counter>,
    whip_requests: Family<HttpLabels, Counter>,
    publishers: Family<StreamLabels, Gauge>,
    ice_connect: Histogram,
    viewer_rejections: Family<CapLabels, Counter>,
    ingest_sessions: Family<IngestLabels, Gauge>,
    ingest_bytes: Family<IngestBytesLabels, Counter>,
    ingest_refused: Family<RefusedLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = PromRegistry::with_prefix("streamcore");
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by method, route and status",
            http_requests.clone(),
        );
        let processes = Family::<StateLabels, Gauge>::default();
        registry.register(
            "processes",
            "Processes by execution state",
            processes.clone(),
        );
        let cpu = Family::<ProcessLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "process_cpu_usage_percent",
            "ffmpeg CPU use in percent of the machine",
            cpu.clone(),
        );
        let memory = Family::<ProcessLabels, Gauge>::default();
        registry.register(
            "process_memory_bytes",
            "ffmpeg resident memory",
            memory.clone(),
        );
        let webrtc_viewers = Family::<StreamLabels, Gauge>::default();
        registry.register(
            "webrtc_viewers",
            "WHEP viewers attached, per stream",
            webrtc_viewers.clone(),
        );
        let webrtc_bytes_sent = Family::<StreamLabels, Gauge>::default();
        registry.register(
            "webrtc_viewer_bytes_sent",
            "RTP bytes sent to the viewers attached now, per stream (webrtcbin stats at scrape time)",
            webrtc_bytes_sent.clone(),
        );
        let whep_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "whep_requests",
            "WHEP requests by method, route and status",
            whep_requests.clone(),
        );
        let whip_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "whip_requests",
            "WHIP requests by method, route and status",
            whip_requests.clone(),
        );
        let publishers = Family::<StreamLabels, Gauge>::default();
        registry.register(
            "webrtc_publisher_connected",
            "1 while a WHIP publisher is connected to the process's {whip} input, else 0",
            publishers.clone(),
        );
        let ice_connect = Histogram::new(ICE_CONNECT_BUCKETS);
        registry.register(
            "webrtc_ice_connect_seconds",
            "Time from a viewer's WHEP POST to its peer connection being connected",
            ice_connect.clone(),
        );
        let viewer_rejections = Family::<CapLabels, Counter>::default();
        registry.register(
            "webrtc_viewer_rejections",
            "WHEP POSTs refused with 503 because a viewer cap was reached (cap: stream or total)",
            viewer_rejections.clone(),
        );
        let ingest_sessions = Family::<IngestLabels, Gauge>::default();
        registry.register(
            "ingest_sessions",
            "Connections of the RTMP and SRT servers now, by protocol and role (publish, read)",
            ingest_sessions.clone(),
        );
        let ingest_bytes = Family::<IngestBytesLabels, Counter>::default();
        registry.register(
            "ingest_bytes",
            "Payload bytes the RTMP and SRT servers received from publishers and sent to readers",
            ingest_bytes.clone(),
        );
        let ingest_refused = Family::<RefusedLabels, Counter>::default();
        registry.register(
            "ingest_refused",
            "RTMP and SRT connections refused, by reason",
            ingest_refused.clone(),
        );
        Metrics {
            registry,
            ingest_sessions,
            ingest_bytes,
            ingest_refused,
            http_requests,
            processes,
            cpu,
            memory,
            webrtc_viewers,
            webrtc_bytes_sent,
            whep_requests,
            whip_requests,
            publishers,
            ice_connect,
            viewer_rejections,
        }
    }
}

impl Metrics {
    /// Counts one HTTP request; `route` is the matched route pattern, never the raw path, so that
    /// ids in paths cannot blow up the label set.
    pub fn http_request(&self, method: &str, route: &str, status: u16) {
        self.http_requests
            .get_or_create(&HttpLabels {
                method: method.to_string(),
                route: route.to_string(),
                status,
            })
            .inc();
    }

    /// Counts one WHEP request (route is the matched pattern, as for [`Metrics::http_request`]).
    pub fn whep_request(&self, method: &str, route: &str, status: u16) {
        self.whep_requests
            .get_or_create(&HttpLabels {
                method: method.to_string(),
                route: route.to_string(),
                status,
            })
            .inc();
    }

    /// Counts one WHIP request (route is the matched pattern).
    pub fn whip_request(&self, method: &str, route: &str, status: u16) {
        self.whip_requests
            .get_or_create(&HttpLabels {
                method: method.to_string(),
                route: route.to_string(),
                status,
            })
            .inc();
    }

    /// Records how long a viewer took from its POST to `connected`.
    pub fn ice_connected(&self, elapsed: Duration) {
        self.ice_connect.observe(elapsed.as_secs_f64());
    }

    /// Counts a viewer refused by a cap (`stream` or `total`).
    pub fn viewer_rejected(&self, cap: &str) {
        self.viewer_rejections
            .get_or_create(&CapLabels { cap: cap.into() })
            .inc();
    }

    /// The gauge of `protocol`'s sessions in `role` (the caller adds and removes itself).
    pub fn ingest_sessions(&self, protocol: &str, role: &str) -> Gauge {
        self.ingest_sessions
            .get_or_create(&IngestLabels {
                protocol: protocol.into(),
                role: role.into(),
            })
            .clone()
    }

    /// The byte counter of `protocol` in `direction` (`received`, `sent`), kept by a session so
    /// that counting a packet is one atomic add.
    pub fn ingest_bytes(&self, protocol: &str, direction: &str) -> Counter {
        self.ingest_bytes
            .get_or_create(&IngestBytesLabels {
                protocol: protocol.into(),
                direction: direction.into(),
            })
            .clone()
    }

    /// Counts a refused RTMP or SRT connection.
    pub fn ingest_refused(&self, protocol: &str, reason: &str) {
        self.ingest_refused
            .get_or_create(&RefusedLabels {
                protocol: protocol.into(),
                reason: reason.into(),
            })
            .inc();
    }

    /// Renders the text exposition format with current process figures. Blocks on webrtcbin for
    /// the viewers' stats: call it off the async runtime.
    pub fn render(&self, processes: &Registry) -> String {
        self.processes.clear();
        self.cpu.clear();
        self.memory.clear();
        self.webrtc_viewers.clear();
        self.webrtc_bytes_sent.clear();
        self.publishers.clear();
        for exec in [
            Exec::Finished,
            Exec::Starting,
            Exec::Running,
            Exec::Finishing,
            Exec::Failed,
            Exec::Killed,
        ] {
            self.processes
                .get_or_create(&StateLabels {
                    state: exec_name(exec),
                })
                .set(0);
        }
        for entry in processes.list() {
            let state = entry.runner().state();
            self.processes
                .get_or_create(&StateLabels {
                    state: exec_name(state.exec),
                })
                .inc();
            let labels = ProcessLabels {
                id: entry.record.config.id.clone(),
            };
            self.cpu.get_or_create(&labels).set(state.cpu_usage);
            self.memory
                .get_or_create(&labels)
                .set(state.memory_bytes as i64);
            if let Some(stream) = entry.stream() {
                self.render_stream(&entry.record.config.id, stream);
            }
            if let Some(ingest) = entry.ingest() {
                let connected = ingest
                    .info()
                    .publisher
                    .is_some_and(|p| p.state == "connected");
                self.publishers
                    .get_or_create(&StreamLabels {
                        stream: entry.record.config.id.clone(),
                    })
                    .set(i64::from(connected));
            }
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

impl Metrics {
    fn render_stream(&self, id: &str, stream: &crate::media::Stream) {
        let labels = StreamLabels { stream: id.into() };
        let sessions = stream.sessions();
        self.webrtc_viewers
            .get_or_create(&labels)
            .set(sessions.len() as i64);
        let bytes: u64 = sessions.iter().map(|s| s.stats_blocking().bytes_sent).sum();
        self.webrtc_bytes_sent
            .get_or_create(&labels)
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }
}

fn exec_name(exec: Exec) -> String {
    serde_json::to_value(exec)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

//! Prometheus metrics: HTTP requests as they happen, process figures read at scrape time.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
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

/// The server's metric families.
pub struct Metrics {
    registry: PromRegistry,
    http_requests: Family<HttpLabels, Counter>,
    processes: Family<StateLabels, Gauge>,
    cpu: Family<ProcessLabels, Gauge<f64, AtomicU64>>,
    memory: Family<ProcessLabels, Gauge>,
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
        Metrics {
            registry,
            http_requests,
            processes,
            cpu,
            memory,
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

    /// Renders the text exposition format with current process figures.
    pub fn render(&self, processes: &Registry) -> String {
        self.processes.clear();
        self.cpu.clear();
        self.memory.clear();
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
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

fn exec_name(exec: Exec) -> String {
    serde_json::to_value(exec)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

//! Sessions: who is reading what, by collector (`hls`, `webrtc`, and whatever else feeds one:
//! `rtmp`, `srt`, the memfs mount). `GET /api/v3/session[/active]` and the `session_*` metrics
//! read them.
//!
//! A feeder names a session (`register`), reports its bytes (`egress`/`ingress`, or absolute
//! counters with `counters`) and ends it (`unregister`), or lets it time out: HTTP sessions end
//! after `sessions.session_timeout_sec` without a request, as in Core. Bandwidths are measured
//! over the last [`WINDOW`] by the one ticker task every collector shares.

mod collector;
pub mod ingest;
pub mod webrtc;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use collector::{Active, Collector, Summary};

use crate::config::SessionsConfig;

/// How far back bandwidths look.
pub const WINDOW: Duration = Duration::from_secs(10);

/// Every collector.
pub struct Sessions {
    collectors: Mutex<BTreeMap<String, Arc<Collector>>>,
    ignore: Vec<ipnet::IpNet>,
    timeout: Duration,
    enabled: bool,
    hls_limits: collector::Limits,
}

impl Sessions {
    /// The registry for one run of the server, with its ticker (which ends with the last
    /// reference to the registry).
    pub fn start(config: &SessionsConfig) -> Arc<Sessions> {
        let sessions = Arc::new(Sessions {
            collectors: Mutex::new(BTreeMap::new()),
            ignore: config
                .ip_ignorelist
                .iter()
                .filter_map(|n| n.parse().ok())
                .collect(),
            timeout: Duration::from_secs(config.session_timeout_sec.max(1)),
            enabled: config.enable,
            hls_limits: collector::Limits {
                max_sessions: config.max_sessions,
                max_tx_bitrate: config.max_bitrate_mbit as f64 * 1024.0 * 1024.0,
            },
        });
        for name in ["hls", "webrtc"] {
            sessions.collector(name);
        }
        let weak = Arc::downgrade(&sessions);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(sessions) = weak.upgrade() else {
                    return;
                };
                for collector in sessions.all() {
                    collector.tick(sessions.timeout);
                }
            }
        });
        sessions
    }

    /// Whether sessions are collected at all (`sessions.enable`).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The collector called `name`, created on first use (the HLS limits apply to `hls`).
    pub fn collector(&self, name: &str) -> Arc<Collector> {
        let mut collectors = self.collectors.lock().unwrap_or_else(|e| e.into_inner());
        collectors
            .entry(name.to_string())
            .or_insert_with(|| {
                let limits = if name == "hls" {
                    self.hls_limits
                } else {
                    collector::Limits::default()
                };
                Arc::new(Collector::new(name, limits))
            })
            .clone()
    }

    /// Every collector, by name.
    pub fn all(&self) -> Vec<Arc<Collector>> {
        let collectors = self.collectors.lock().unwrap_or_else(|e| e.into_inner());
        collectors.values().cloned().collect()
    }

    /// Whether an HTTP client's sessions are collected (not in `sessions.ip_ignorelist`).
    pub fn collectable(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.enabled && !self.ignore.iter().any(|net| net.contains(&ip))
    }
}

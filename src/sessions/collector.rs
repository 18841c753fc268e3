//! One collector's sessions, their bandwidths and its totals.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;
use utoipa::ToSchema;

use super::WINDOW;

/// Limits on new sessions.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    /// Most sessions at once; 0 is unlimited.
    pub max_sessions: u64,
    /// New sessions are refused at this egress, in bit/s; 0 is unlimited.
    pub max_tx_bitrate: f64,
}

struct Session {
    reference: String,
    local: String,
    remote: String,
    extra: String,
    created_at: chrono::DateTime<chrono::Utc>,
    last_seen: Instant,
    /// Ended by its feeder, never by the timeout.
    managed: bool,
    rx: u64,
    tx: u64,
    /// (when, rx, tx) over the last [`WINDOW`].
    samples: VecDeque<(Instant, u64, u64)>,
    rx_rate: f64,
    tx_rate: f64,
}

#[derive(Default)]
struct Totals {
    sessions: u64,
    rx: u64,
    tx: u64,
}

#[derive(Default)]
struct State {
    sessions: HashMap<String, Session>,
    totals: Totals,
    by_remote: BTreeMap<String, Totals>,
    by_local: BTreeMap<String, Totals>,
    by_reference: BTreeMap<String, Totals>,
}

/// A named set of sessions.
pub struct Collector {
    name: String,
    limits: Limits,
    state: Mutex<State>,
}

/// One session as `GET /api/v3/session/active` shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Active {
    /// Session id.
    pub id: String,
    /// What it reads (a process id or playlist name).
    pub reference: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Where on this server (a playlist path, a process).
    pub local: String,
    /// The client.
    pub remote: String,
    /// Anything else known (user agent).
    pub extra: String,
    /// Bytes received from the client.
    pub bytes_rx: u64,
    /// Bytes sent to the client.
    pub bytes_tx: u64,
    /// Over the last seconds, kbit/s.
    pub bandwidth_rx_kbit: f64,
    /// Over the last seconds, kbit/s.
    pub bandwidth_tx_kbit: f64,
}

/// Totals of a group of sessions (`traffic_*_mb` in MiB, as Core).
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct Stats {
    /// Sessions ever.
    pub sessions: u64,
    /// MiB received.
    pub traffic_rx_mb: u64,
    /// MiB sent.
    pub traffic_tx_mb: u64,
}

/// The current sessions with their bandwidths and limits.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ActiveSummary {
    /// The sessions.
    pub list: Vec<Active>,
    /// How many.
    pub sessions: u64,
    /// Mbit/s.
    pub bandwidth_rx_mbit: f64,
    /// Mbit/s.
    pub bandwidth_tx_mbit: f64,
    /// 0 is unlimited.
    pub max_sessions: u64,
    /// Mbit/s; 0 is unlimited.
    pub max_bandwidth_rx_mbit: f64,
    /// Mbit/s; 0 is unlimited.
    pub max_bandwidth_tx_mbit: f64,
}

/// Totals since the start, by client, location and reference.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct History {
    /// By client address.
    pub remote: BTreeMap<String, Stats>,
    /// By location.
    pub local: BTreeMap<String, Stats>,
    /// By reference.
    pub reference: BTreeMap<String, Stats>,
    /// Sessions ever.
    pub sessions: u64,
    /// MiB received.
    pub traffic_rx_mb: u64,
    /// MiB sent.
    pub traffic_tx_mb: u64,
}

/// One collector in `GET /api/v3/session`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Summary {
    /// Now.
    pub active: ActiveSummary,
    /// Since the start.
    pub summary: History,
}

const MIB: u64 = 1024 * 1024;

fn stats(t: &Totals) -> Stats {
    Stats {
        sessions: t.sessions,
        traffic_rx_mb: t.rx / MIB,
        traffic_tx_mb: t.tx / MIB,
    }
}

impl Collector {
    pub(super) fn new(name: &str, limits: Limits) -> Collector {
        Collector {
            name: name.to_string(),
            limits,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The collector's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether `id` is a current session.
    pub fn known(&self, id: &str) -> bool {
        self.lock().sessions.contains_key(id)
    }

    /// Why a new session would be refused now (Core's messages), or `None`.
    pub fn refusal(&self) -> Option<&'static str> {
        let state = self.lock();
        let limits = self.limits;
        if limits.max_sessions > 0 && state.sessions.len() as u64 >= limits.max_sessions {
            return Some("Number of sessions exceeded");
        }
        let tx: f64 = state.sessions.values().map(|s| s.tx_rate).sum();
        if limits.max_tx_bitrate > 0.0 && tx >= limits.max_tx_bitrate {
            return Some("Bitrate limit exceeded");
        }
        None
    }

    /// Starts a session (no-op when it exists). `managed` sessions end only by
    /// [`Collector::unregister`]; the others also after the timeout without activity.
    pub fn register(&self, id: &str, reference: &str, local: &str, remote: &str, managed: bool) {
        let mut guard = self.lock();
        let state = &mut *guard;
        if state.sessions.contains_key(id) {
            return;
        }
        let now = Instant::now();
        state.totals.sessions += 1;
        for (map, key) in [
            (&mut state.by_remote, remote),
            (&mut state.by_local, local),
            (&mut state.by_reference, reference),
        ] {
            map.entry(key.to_string()).or_default().sessions += 1;
        }
        state.sessions.insert(
            id.to_string(),
            Session {
                reference: reference.to_string(),
                local: local.to_string(),
                remote: remote.to_string(),
                extra: String::new(),
                created_at: chrono::Utc::now(),
                last_seen: now,
                managed,
                rx: 0,
                tx: 0,
                samples: VecDeque::from([(now, 0, 0)]),
                rx_rate: 0.0,
                tx_rate: 0.0,
            },
        );
    }

    /// Sets a session's extra text (a user agent).
    pub fn extra(&self, id: &str, extra: &str) {
        if let Some(s) = self.lock().sessions.get_mut(id) {
            s.extra = extra.to_string();
        }
    }

    /// Bytes sent to the session's client.
    pub fn egress(&self, id: &str, bytes: u64) {
        self.add(id, 0, bytes);
    }

    /// Bytes received from the session's client.
    #[allow(
        dead_code,
        reason = "for publishing collectors (rtmp, srt) fed by their servers"
    )]
    pub fn ingress(&self, id: &str, bytes: u64) {
        self.add(id, bytes, 0);
    }

    fn add(&self, id: &str, rx: u64, tx: u64) {
        let mut guard = self.lock();
        let state = &mut *guard;
        let Some(session) = state.sessions.get_mut(id) else {
            return;
        };
        session.rx += rx;
        session.tx += tx;
        session.last_seen = Instant::now();
        let keys = [
            session.remote.clone(),
            session.local.clone(),
            session.reference.clone(),
        ];
        state.totals.rx += rx;
        state.totals.tx += tx;
        for (map, key) in [
            (&mut state.by_remote, &keys[0]),
            (&mut state.by_local, &keys[1]),
            (&mut state.by_reference, &keys[2]),
        ] {
            let t = map.entry(key.clone()).or_default();
            t.rx += rx;
            t.tx += tx;
        }
    }

    /// Sets a session's byte counters from a feeder that counts them itself (WebRTC stats).
    pub fn counters(&self, id: &str, rx: u64, tx: u64) {
        let (drx, dtx) = {
            let state = self.lock();
            let Some(s) = state.sessions.get(id) else {
                return;
            };
            (rx.saturating_sub(s.rx), tx.saturating_sub(s.tx))
        };
        self.add(id, drx, dtx);
    }

    /// Keeps a session alive without bytes.
    pub fn touch(&self, id: &str) {
        if let Some(s) = self.lock().sessions.get_mut(id) {
            s.last_seen = Instant::now();
        }
    }

    /// Ends a session.
    pub fn unregister(&self, id: &str) {
        self.lock().sessions.remove(id);
    }

    /// The most recently active session of `remote` whose location is in `dir` (a segment's
    /// playlist session).
    pub fn session_of(&self, remote: &str, dir: &str) -> Option<String> {
        let state = self.lock();
        state
            .sessions
            .iter()
            .filter(|(_, s)| {
                s.remote == remote && s.local.rsplit_once('/').map_or("", |(d, _)| d) == dir
            })
            .max_by_key(|(_, s)| s.last_seen)
            .map(|(id, _)| id.clone())
    }

    /// Ids of the current sessions.
    pub fn ids(&self) -> Vec<String> {
        self.lock().sessions.keys().cloned().collect()
    }

    /// Updates bandwidths and ends HTTP sessions idle for `timeout`.
    pub(super) fn tick(&self, timeout: Duration) {
        let now = Instant::now();
        let mut state = self.lock();
        state
            .sessions
            .retain(|_, s| s.managed || now.duration_since(s.last_seen) < timeout);
        for s in state.sessions.values_mut() {
            s.samples.push_back((now, s.rx, s.tx));
            while s
                .samples
                .front()
                .is_some_and(|(t, _, _)| now.duration_since(*t) > WINDOW)
            {
                s.samples.pop_front();
            }
            if let Some(&(t, rx, tx)) = s.samples.front() {
                let dt = now.duration_since(t).as_secs_f64();
                if dt > 0.0 {
                    s.rx_rate = (s.rx - rx) as f64 * 8.0 / dt;
                    s.tx_rate = (s.tx - tx) as f64 * 8.0 / dt;
                }
            }
        }
    }

    /// The current sessions, oldest first.
    pub fn active(&self) -> Vec<Active> {
        let state = self.lock();
        let mut list: Vec<Active> = state
            .sessions
            .iter()
            .map(|(id, s)| Active {
                id: id.clone(),
                reference: s.reference.clone(),
                created_at: s.created_at.timestamp(),
                local: s.local.clone(),
                remote: s.remote.clone(),
                extra: s.extra.clone(),
                bytes_rx: s.rx,
                bytes_tx: s.tx,
                bandwidth_rx_kbit: s.rx_rate / 1024.0,
                bandwidth_tx_kbit: s.tx_rate / 1024.0,
            })
            .collect();
        list.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        list
    }

    /// Current sessions, bandwidths (bit/s) and limits, for the metrics: (sessions, rx, tx).
    pub fn current(&self) -> (u64, f64, f64) {
        let state = self.lock();
        let rx = state.sessions.values().map(|s| s.rx_rate).sum();
        let tx = state.sessions.values().map(|s| s.tx_rate).sum();
        (state.sessions.len() as u64, rx, tx)
    }

    /// The limits (sessions, tx bit/s).
    pub fn limits(&self) -> (u64, f64) {
        (self.limits.max_sessions, self.limits.max_tx_bitrate)
    }

    /// Sessions ever and bytes (rx, tx) since the start.
    pub fn totals(&self) -> (u64, u64, u64) {
        let state = self.lock();
        (state.totals.sessions, state.totals.rx, state.totals.tx)
    }

    /// `GET /api/v3/session`'s entry.
    pub fn summary(&self) -> Summary {
        let list = self.active();
        let (sessions, rx, tx) = self.current();
        let state = self.lock();
        let mbit = |bits: f64| bits / 1024.0 / 1024.0;
        Summary {
            active: ActiveSummary {
                list,
                sessions,
                bandwidth_rx_mbit: mbit(rx),
                bandwidth_tx_mbit: mbit(tx),
                max_sessions: self.limits.max_sessions,
                max_bandwidth_rx_mbit: 0.0,
                max_bandwidth_tx_mbit: mbit(self.limits.max_tx_bitrate),
            },
            summary: History {
                remote: state
                    .by_remote
                    .iter()
                    .map(|(k, t)| (k.clone(), stats(t)))
                    .collect(),
                local: state
                    .by_local
                    .iter()
                    .map(|(k, t)| (k.clone(), stats(t)))
                    .collect(),
                reference: state
                    .by_reference
                    .iter()
                    .map(|(k, t)| (k.clone(), stats(t)))
                    .collect(),
                sessions: state.totals.sessions,
                traffic_rx_mb: state.totals.rx / MIB,
                traffic_tx_mb: state.totals.tx / MIB,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_refuse_new_sessions_and_timeouts_end_idle_ones() {
        let c = Collector::new(
            "hls",
            Limits {
                max_sessions: 1,
                max_tx_bitrate: 0.0,
            },
        );
        assert_eq!(c.refusal(), None);
        c.register("a", "ch", "/ch.m3u8", "1.2.3.4", false);
        c.egress("a", 1000);
        assert_eq!(c.refusal(), Some("Number of sessions exceeded"));
        c.tick(Duration::from_secs(30));
        assert_eq!(c.active()[0].bytes_tx, 1000);
        c.tick(Duration::ZERO);
        assert!(c.active().is_empty());
        assert_eq!(c.totals(), (1, 0, 1000));
    }
}

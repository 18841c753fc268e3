//! The connections of the RTMP and SRT servers, for the session API and the metrics.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use crate::metrics::Metrics;

/// One connection as the session API shows it.
#[derive(Debug, Clone)]
pub struct Session {
    /// Unique for the server's lifetime.
    pub id: u64,
    /// `rtmp` or `srt` (Core's collector names).
    pub protocol: &'static str,
    /// `publish` or `read`.
    pub role: &'static str,
    /// The stream name (RTMP path, SRT resource).
    pub name: String,
    /// The peer's address.
    pub remote: SocketAddr,
    /// When the connection was accepted.
    pub created: chrono::DateTime<chrono::Utc>,
    /// Payload bytes received from the peer.
    pub bytes_rx: u64,
    /// Payload bytes sent to the peer.
    pub bytes_tx: u64,
}

struct Entry {
    protocol: &'static str,
    role: &'static str,
    name: String,
    remote: SocketAddr,
    created: chrono::DateTime<chrono::Utc>,
    rx: AtomicU64,
    tx: AtomicU64,
}

/// The table of open sessions.
pub struct Sessions {
    next: AtomicU64,
    table: Mutex<HashMap<u64, Arc<Entry>>>,
    metrics: Arc<Metrics>,
}

impl Sessions {
    pub fn new(metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Sessions {
            next: AtomicU64::new(1),
            table: Mutex::new(HashMap::new()),
            metrics,
        })
    }

    /// An id for a connection not (yet) registered.
    pub fn next_id(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    pub fn refused(&self, protocol: &str, reason: &str) {
        self.metrics.ingest_refused(protocol, reason);
    }

    /// Registers connection `id` until the guard drops.
    pub fn open(
        self: &Arc<Self>,
        id: u64,
        protocol: &'static str,
        role: &'static str,
        name: &str,
        remote: SocketAddr,
    ) -> SessionGuard {
        let entry = Arc::new(Entry {
            protocol,
            role,
            name: name.to_string(),
            remote,
            created: chrono::Utc::now(),
            rx: AtomicU64::new(0),
            tx: AtomicU64::new(0),
        });
        self.table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, entry.clone());
        let gauge = self.metrics.ingest_sessions(protocol, role);
        gauge.inc();
        SessionGuard {
            sessions: self.clone(),
            id,
            entry,
            gauge,
            rx: self.metrics.ingest_bytes(protocol, "received"),
            tx: self.metrics.ingest_bytes(protocol, "sent"),
        }
    }

    /// The open sessions, oldest first.
    pub fn list(&self) -> Vec<Session> {
        let table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let mut list: Vec<Session> = table
            .iter()
            .map(|(id, e)| Session {
                id: *id,
                protocol: e.protocol,
                role: e.role,
                name: e.name.clone(),
                remote: e.remote,
                created: e.created,
                bytes_rx: e.rx.load(Ordering::Relaxed),
                bytes_tx: e.tx.load(Ordering::Relaxed),
            })
            .collect();
        list.sort_by_key(|s| s.id);
        list
    }

    /// Bytes received and sent by session `id`.
    pub fn bytes(&self, id: u64) -> (u64, u64) {
        let table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        table.get(&id).map_or((0, 0), |e| {
            (e.rx.load(Ordering::Relaxed), e.tx.load(Ordering::Relaxed))
        })
    }
}

/// An open session; counts its bytes and leaves the table when dropped.
pub struct SessionGuard {
    sessions: Arc<Sessions>,
    id: u64,
    entry: Arc<Entry>,
    gauge: Gauge,
    rx: Counter,
    tx: Counter,
}

impl SessionGuard {
    pub fn received(&self, bytes: usize) {
        self.entry.rx.fetch_add(bytes as u64, Ordering::Relaxed);
        self.rx.inc_by(bytes as u64);
    }

    pub fn sent(&self, bytes: usize) {
        self.entry.tx.fetch_add(bytes as u64, Ordering::Relaxed);
        self.tx.inc_by(bytes as u64);
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.gauge.dec();
        self.sessions
            .table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

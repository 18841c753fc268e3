//! The connection cap, and who makes room when it is reached.
//!
//! At most `max` connections are served at once. A connection is *idle* while no request (or
//! response body) of it is in flight: a socket still sending its first request head (a
//! slowloris), or a keep-alive connection between requests. When a new connection finds the
//! table full, the connection idle the longest is closed to make room, so a flood of half-open
//! sockets cannot lock real clients out; only when every connection is busy is the newcomer
//! closed at once.
//!
//! Each connection also carries an idle deadline (first head within the header-read timeout,
//! then the idle timeout between requests) that its task waits on.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::time::Instant;

/// The table of open connections.
pub struct Connections {
    max: usize,
    first_request: Duration,
    idle: Duration,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    /// Connections counted against the cap (evicted ones no longer count).
    open: usize,
    next: u64,
    /// Idle connections by the order they went idle; the first is evicted first.
    idle: BTreeMap<u64, u64>,
    conns: HashMap<u64, ConnState>,
}

struct ConnState {
    busy: usize,
    idle_key: Option<u64>,
    slot: Arc<Slot>,
}

struct Slot {
    evicted: Notify,
    /// When the connection is closed for idling; `None` while busy.
    deadline: watch::Sender<Option<Instant>>,
}

/// Why a connection task should end early.
#[derive(Debug, PartialEq, Eq)]
pub enum Close {
    /// Closed to make room for a new connection.
    Evicted,
    /// Nothing in flight for too long.
    Idle,
}

impl Connections {
    /// A table for `max` connections; a new connection must send its first request head within
    /// `first_request`, and one with nothing in flight is closed after `idle`.
    pub fn new(max: usize, first_request: Duration, idle: Duration) -> Arc<Connections> {
        Arc::new(Connections {
            max,
            first_request,
            idle,
            table: Mutex::default(),
        })
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        // Only counters and maps change under the lock; a panic cannot leave them torn.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a new connection, evicting the longest-idle one when the table is full; `None`
    /// when every connection is busy.
    pub fn admit(self: &Arc<Self>) -> Option<Connection> {
        let mut table = self.table();
        if table.open >= self.max {
            let (_, victim) = table.idle.pop_first()?;
            if let Some(state) = table.conns.remove(&victim) {
                // notify_one keeps the wake-up if the task is not waiting at this instant.
                state.slot.evicted.notify_one();
            }
            table.open -= 1;
        }
        table.open += 1;
        table.next += 1;
        let id = table.next;
        let (deadline, _) = watch::channel(Some(Instant::now() + self.first_request));
        let slot = Arc::new(Slot {
            evicted: Notify::new(),
            deadline,
        });
        table.idle.insert(id, id);
        table.conns.insert(
            id,
            ConnState {
                busy: 0,
                idle_key: Some(id),
                slot: slot.clone(),
            },
        );
        Some(Connection {
            table: self.clone(),
            id,
            slot,
        })
    }

    /// Connections counted against the cap now.
    pub fn open(&self) -> usize {
        self.table().open
    }

    fn begin(&self, id: u64) {
        let mut table = self.table();
        let Table { idle, conns, .. } = &mut *table;
        if let Some(state) = conns.get_mut(&id) {
            if let Some(key) = state.idle_key.take() {
                idle.remove(&key);
                state.slot.deadline.send_replace(None);
            }
            state.busy += 1;
        }
    }

    fn end(&self, id: u64) {
        let mut table = self.table();
        table.next += 1;
        let key = table.next;
        let Table { idle, conns, .. } = &mut *table;
        if let Some(state) = conns.get_mut(&id) {
            state.busy -= 1;
            if state.busy == 0 {
                state.idle_key = Some(key);
                idle.insert(key, id);
                state
                    .slot
                    .deadline
                    .send_replace(Some(Instant::now() + self.idle));
            }
        }
    }

    fn release(&self, id: u64) {
        let mut table = self.table();
        if let Some(state) = table.conns.remove(&id) {
            if let Some(key) = state.idle_key {
                table.idle.remove(&key);
            }
            table.open -= 1;
        }
    }
}

/// One admitted connection; dropping it frees its place.
pub struct Connection {
    table: Arc<Connections>,
    id: u64,
    slot: Arc<Slot>,
}

impl Connection {
    /// Marks a request in flight until the returned guard is dropped (with its response body).
    pub fn busy(&self) -> Busy {
        self.table.begin(self.id);
        Busy {
            table: self.table.clone(),
            id: self.id,
        }
    }

    /// True while a request (or its response body) is in flight.
    pub fn is_busy(&self) -> bool {
        self.table
            .table()
            .conns
            .get(&self.id)
            .is_some_and(|state| state.busy > 0)
    }

    /// Resolves when the connection should be closed: evicted, or idle past its deadline.
    pub async fn closed(&self) -> Close {
        let mut deadline = self.slot.deadline.subscribe();
        loop {
            let current = *deadline.borrow_and_update();
            tokio::select! {
                _ = self.slot.evicted.notified() => return Close::Evicted,
                _ = sleep_until(current) => return Close::Idle,
                // The sender lives in the slot we hold, so this never errs.
                _ = deadline.changed() => {}
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.table.release(self.id);
    }
}

/// A request in flight on a connection.
pub struct Busy {
    table: Arc<Connections>,
    id: u64,
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.table.end(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: Duration = Duration::from_secs(3600);

    #[tokio::test]
    async fn full_table_evicts_the_longest_idle_and_refuses_when_all_are_busy() {
        let table = Connections::new(2, LONG, LONG);
        let first = table.admit().unwrap();
        let second = table.admit().unwrap();
        // The first goes busy then idle again: now the second has been idle longest.
        drop(first.busy());
        let third = table.admit().expect("an idle connection makes room");
        assert_eq!(second.closed().await, Close::Evicted);
        assert_eq!(table.open(), 2);
        drop(second);
        assert_eq!(
            table.open(),
            2,
            "an evicted connection is not counted twice"
        );

        let _busy = (first.busy(), third.busy());
        assert!(table.admit().is_none(), "every connection is busy");
        drop(first);
        assert_eq!(table.open(), 1);
        assert!(table.admit().is_some());
    }

    #[tokio::test]
    async fn deadlines_first_head_then_idle_and_never_while_busy() {
        let (first, idle) = (Duration::from_millis(200), Duration::from_millis(400));
        let table = Connections::new(4, first, idle);
        let conn = table.admit().unwrap();
        let started = Instant::now();
        assert_eq!(conn.closed().await, Close::Idle);
        let waited = started.elapsed();
        assert!(waited >= first && waited < first * 3, "{waited:?}");

        let busy = conn.busy();
        let waited = tokio::time::timeout(idle * 2, conn.closed()).await;
        assert!(waited.is_err(), "a busy connection never idles out");
        drop(busy);
        let idle_from = Instant::now();
        assert_eq!(conn.closed().await, Close::Idle);
        let waited = idle_from.elapsed();
        assert!(waited >= idle && waited < idle * 2, "{waited:?}");
    }
}

//! The embedded SQLite store: process definitions, their order, and metadata.
//!
//! Every mutation is one transaction in a WAL database with `synchronous=FULL`, so a change the
//! API acknowledged survives a SIGKILL of the server (and a power cut) at any moment.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;

use crate::model::process::{Order, ProcessConfig};

/// A stored process definition.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessRecord {
    /// The unresolved definition (placeholders kept).
    pub config: ProcessConfig,
    /// The persisted intent.
    pub order: Order,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
}

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A process with that id exists already.
    #[error("process already exists")]
    Duplicate,
    /// No process with that id.
    #[error("unknown process")]
    NotFound,
    /// The database failed.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored row could not be decoded.
    #[error("corrupt stored value: {0}")]
    Decode(#[from] serde_json::Error),
}

type Result<T> = std::result::Result<T, StoreError>;

/// The store; cheap to share behind an `Arc`.
pub struct Store {
    conn: Mutex<Connection>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS process (
    id TEXT PRIMARY KEY NOT NULL,
    config TEXT NOT NULL,
    run_order TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS process_metadata (
    process_id TEXT NOT NULL REFERENCES process(id) ON DELETE CASCADE ON UPDATE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (process_id, key)
);
CREATE TABLE IF NOT EXISTS metadata (
    key TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);
";

impl Store {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Store> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written (transactions roll
        // back), so a poisoned lock is still safe to use.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every stored process.
    pub fn processes(&self) -> Result<Vec<ProcessRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT config, run_order, created_at, updated_at FROM process ORDER BY created_at, id",
        )?;
        let rows = stmt.query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, i64>(2)?,
                row.get::<_, i64>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (config, order, created_at, updated_at) = row?;
            out.push(ProcessRecord {
                config: serde_json::from_str(&config)?,
                order: Order::parse(&order),
                created_at,
                updated_at,
            });
        }
        Ok(out)
    }

    /// Adds a new process; fails with [`StoreError::Duplicate`] when the id is taken.
    pub fn insert_process(&self, record: &ProcessRecord) -> Result<()> {
        let conn = self.conn();
        let config = serde_json::to_string(&record.config)?;
        let inserted = conn.execute(
            "INSERT OR IGNORE INTO process (id, config, run_order, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![record.config.id, config, record.order.as_str(), record.created_at, record.updated_at],
        )?;
        if inserted == 0 {
            return Err(StoreError::Duplicate);
        }
        Ok(())
    }

    /// Replaces the process `old_id` by `record`, which may carry a new id; metadata moves along.
    pub fn replace_process(&self, old_id: &str, record: &ProcessRecord) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let new_id = &record.config.id;
        if new_id != old_id {
            let taken: Option<i64> = tx
                .query_row("SELECT 1 FROM process WHERE id = ?1", [new_id], |r| {
                    r.get(0)
                })
                .optional()?;
            if taken.is_some() {
                return Err(StoreError::Duplicate);
            }
        }
        let config = serde_json::to_string(&record.config)?;
        // ON UPDATE CASCADE carries the metadata rows over to a renamed id.
        let changed = tx.execute(
            "UPDATE process SET id = ?1, config = ?2, run_order = ?3, created_at = ?4, updated_at = ?5 WHERE id = ?6",
            params![new_id, config, record.order.as_str(), record.created_at, record.updated_at, old_id],
        )?;
        if changed == 0 {
            return Err(StoreError::NotFound);
        }
        tx.commit()?;
        Ok(())
    }

    /// Deletes a process and its metadata.
    pub fn delete_process(&self, id: &str) -> Result<()> {
        let changed = self
            .conn()
            .execute("DELETE FROM process WHERE id = ?1", [id])?;
        if changed == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Persists the order of a process.
    pub fn set_order(&self, id: &str, order: Order) -> Result<()> {
        let changed = self.conn().execute(
            "UPDATE process SET run_order = ?1 WHERE id = ?2",
            params![order.as_str(), id],
        )?;
        if changed == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// All metadata of a process.
    pub fn process_metadata(&self, id: &str) -> Result<BTreeMap<String, Value>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT key, value FROM process_metadata WHERE process_id = ?1")?;
        let map = collect_map(stmt.query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?);
        map
    }

    /// Sets (or with `None` removes) one metadata key of a process.
    pub fn set_process_metadata(&self, id: &str, key: &str, value: Option<&Value>) -> Result<()> {
        let conn = self.conn();
        let exists: Option<i64> = conn
            .query_row("SELECT 1 FROM process WHERE id = ?1", [id], |r| r.get(0))
            .optional()?;
        if exists.is_none() {
            return Err(StoreError::NotFound);
        }
        match value {
            Some(v) => conn.execute(
                "INSERT INTO process_metadata (process_id, key, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT (process_id, key) DO UPDATE SET value = excluded.value",
                params![id, key, serde_json::to_string(v)?],
            )?,
            None => conn.execute(
                "DELETE FROM process_metadata WHERE process_id = ?1 AND key = ?2",
                params![id, key],
            )?,
        };
        Ok(())
    }

    /// All system metadata.
    pub fn metadata(&self) -> Result<BTreeMap<String, Value>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT key, value FROM metadata")?;
        let map = collect_map(stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?);
        map
    }

    /// Sets (or with `None` removes) one system metadata key.
    pub fn set_metadata(&self, key: &str, value: Option<&Value>) -> Result<()> {
        let conn = self.conn();
        match value {
            Some(v) => conn.execute(
                "INSERT INTO metadata (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![key, serde_json::to_string(v)?],
            )?,
            None => conn.execute("DELETE FROM metadata WHERE key = ?1", [key])?,
        };
        Ok(())
    }
}

fn collect_map(
    rows: impl Iterator<Item = rusqlite::Result<(String, String)>>,
) -> Result<BTreeMap<String, Value>> {
    let mut map = BTreeMap::new();
    for row in rows {
        let (key, value) = row?;
        map.insert(key, serde_json::from_str(&value)?);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(id: &str) -> ProcessRecord {
        ProcessRecord {
            config: ProcessConfig {
                id: id.into(),
                ..Default::default()
            },
            order: Order::Stop,
            created_at: 1,
            updated_at: 2,
        }
    }

    #[test]
    fn crud_and_rename_keep_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        store.insert_process(&record("a")).unwrap();
        assert!(matches!(
            store.insert_process(&record("a")),
            Err(StoreError::Duplicate)
        ));
        store
            .set_process_metadata("a", "k", Some(&json!({"x": 1})))
            .unwrap();
        store.insert_process(&record("b")).unwrap();
        assert!(matches!(
            store.replace_process("a", &record("b")),
            Err(StoreError::Duplicate)
        ));
        store.replace_process("a", &record("c")).unwrap();
        assert_eq!(store.process_metadata("c").unwrap()["k"], json!({"x": 1}));
        assert!(store.process_metadata("a").unwrap().is_empty());
        store.set_order("c", Order::Start).unwrap();
        store.delete_process("c").unwrap();
        assert!(store.process_metadata("c").unwrap().is_empty());
        assert!(matches!(
            store.delete_process("c"),
            Err(StoreError::NotFound)
        ));
        let ids: Vec<_> = store
            .processes()
            .unwrap()
            .into_iter()
            .map(|r| r.config.id)
            .collect();
        assert_eq!(ids, vec!["b"]);
    }

    #[test]
    fn system_metadata_null_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        store.set_metadata("k", Some(&json!([1, 2]))).unwrap();
        assert_eq!(store.metadata().unwrap()["k"], json!([1, 2]));
        store.set_metadata("k", None).unwrap();
        assert!(store.metadata().unwrap().is_empty());
        assert!(matches!(
            store.set_process_metadata("nope", "k", Some(&json!(1))),
            Err(StoreError::NotFound)
        ));
    }
}

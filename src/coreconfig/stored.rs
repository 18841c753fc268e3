//! The document `PUT /api/v3/config` stored, in `<data_dir>/core-config.json`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The file's name inside the data directory (a reserved file: no process may name it).
pub const FILE: &str = "core-config.json";

/// The stored document.
#[derive(Debug, Clone)]
pub struct Stored {
    /// When the document was stored (the first start when nothing is).
    pub created_at: DateTime<Utc>,
    /// The datarhei document as merged by the last PUT.
    pub config: Value,
    path: PathBuf,
}

/// What the file holds.
#[derive(Serialize, Deserialize)]
struct File {
    created_at: String,
    config: Value,
}

fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE)
}

/// The stored document, `None` when there is none.
pub fn read(data_dir: &Path) -> anyhow::Result<Option<Value>> {
    Ok(read_file(&path(data_dir))?.map(|s| s.config))
}

fn read_file(path: &Path) -> anyhow::Result<Option<Stored>> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let file = serde_json::from_slice::<File>(&bytes)
                .with_context(|| format!("{} is not a stored configuration", path.display()))?;
            Ok(Some(Stored {
                created_at: DateTime::parse_from_rfc3339(&file.created_at)
                    .map_or_else(|_| Utc::now(), |t| t.with_timezone(&Utc)),
                config: file.config,
                path: path.to_path_buf(),
            }))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

impl Stored {
    /// The stored document, or an empty one created `now`.
    pub fn read_or_new(data_dir: &Path, now: DateTime<Utc>) -> anyhow::Result<Stored> {
        let path = path(data_dir);
        let mut stored = read_file(&path)?.unwrap_or(Stored {
            created_at: now,
            config: Value::Object(Default::default()),
            path: PathBuf::new(),
        });
        stored.path = path;
        Ok(stored)
    }

    /// Replaces the document and writes it (owner-only: it holds the admin password).
    pub fn replace(&mut self, config: Value, now: DateTime<Utc>) -> anyhow::Result<()> {
        let next = Stored {
            created_at: now,
            config,
            path: self.path.clone(),
        };
        let text = File {
            created_at: now.to_rfc3339(),
            config: next.config.clone(),
        };
        crate::config::write_private(&self.path, &serde_json::to_vec_pretty(&text)?)?;
        *self = next;
        Ok(())
    }
}

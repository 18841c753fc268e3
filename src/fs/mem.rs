//! The in-memory file system behind `/memfs` and `{memfs}`: a map of names to immutable byte
//! buffers (readers share a buffer with a writer replacing it), with datarhei's size limit and
//! optional purge of the oldest files.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::SystemTime;

use axum::body::Bytes;

use super::{glob::Pattern, FileInfo, WriteError};

#[derive(Debug)]
struct File {
    data: Bytes,
    modified: SystemTime,
}

#[derive(Debug, Default)]
struct Files {
    map: BTreeMap<String, File>,
    used: u64,
}

/// Bytes stored under names that match some patterns (a process's outputs), counted as they
/// are written: FFmpeg reports no size for outputs such as a tee or HLS, but memfs sees them.
#[derive(Debug)]
pub struct Tracker {
    patterns: Vec<Pattern>,
    bytes: AtomicU64,
}

impl Tracker {
    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

/// The in-memory file system.
#[derive(Debug)]
pub struct MemFs {
    files: RwLock<Files>,
    trackers: Mutex<Vec<Weak<Tracker>>>,
    /// Capacity in bytes; 0 is unlimited.
    max_bytes: u64,
    purge: bool,
}

impl MemFs {
    /// A file system of at most `max_bytes` (0: unlimited) that, with `purge`, deletes its
    /// oldest files to make room instead of refusing a write.
    pub fn new(max_bytes: u64, purge: bool) -> MemFs {
        MemFs {
            files: RwLock::new(Files::default()),
            trackers: Mutex::new(Vec::new()),
            max_bytes,
            purge,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Files> {
        self.files.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Files> {
        self.files.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether this file system was made with these settings (a reload keeps it then).
    pub fn same_limits(&self, max_bytes: u64, purge: bool) -> bool {
        self.max_bytes == max_bytes && self.purge == purge
    }

    /// Capacity in bytes; 0 is unlimited.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Bytes in use and number of files (the `filesystem_*` metrics of `/api/v3/metrics`).
    pub fn usage(&self) -> (u64, usize) {
        let files = self.read();
        (files.used, files.map.len())
    }

    /// A file's content and modification time.
    pub fn get(&self, name: &str) -> Option<(Bytes, SystemTime)> {
        self.read()
            .map
            .get(name)
            .map(|f| (f.data.clone(), f.modified))
    }

    /// Stores a file; `true` when it is new. Over capacity, the oldest other files are purged
    /// (with `purge`) or the write is refused.
    pub fn put(&self, name: &str, data: Bytes) -> Result<bool, WriteError> {
        let size = data.len() as u64;
        if self.max_bytes > 0 && size > self.max_bytes {
            return Err(WriteError::TooBig(self.max_bytes));
        }
        let mut files = self.write();
        let replaced = files.map.get(name).map_or(0, |f| f.data.len() as u64);
        if self.max_bytes > 0 && files.used - replaced + size > self.max_bytes {
            if !self.purge {
                return Err(WriteError::Full);
            }
            let need = files.used - replaced + size - self.max_bytes;
            purge_oldest(&mut files, need, name);
        }
        let old = files.map.insert(
            name.to_string(),
            File {
                data,
                modified: SystemTime::now(),
            },
        );
        files.used = files.used - replaced + size;
        drop(files);
        self.count(name, size);
        Ok(old.is_none())
    }

    /// Counts the bytes written to names matching `patterns` from now on, for as long as the
    /// tracker lives.
    pub fn track(&self, patterns: Vec<Pattern>) -> Arc<Tracker> {
        let tracker = Arc::new(Tracker {
            patterns,
            bytes: AtomicU64::new(0),
        });
        let mut trackers = self.trackers.lock().unwrap_or_else(|e| e.into_inner());
        trackers.retain(|t| t.strong_count() > 0);
        trackers.push(Arc::downgrade(&tracker));
        tracker
    }

    fn count(&self, name: &str, size: u64) {
        let trackers = self.trackers.lock().unwrap_or_else(|e| e.into_inner());
        for tracker in trackers.iter().filter_map(Weak::upgrade) {
            if tracker.patterns.iter().any(|p| p.matches(name)) {
                tracker.bytes.fetch_add(size, Ordering::Relaxed);
            }
        }
    }

    /// Deletes a file; its size, or `None` when there was none.
    pub fn remove(&self, name: &str) -> Option<u64> {
        let mut files = self.write();
        let file = files.map.remove(name)?;
        let size = file.data.len() as u64;
        files.used -= size;
        Some(size)
    }

    /// The files matching `pattern` (all when `None`), by name.
    pub fn list(&self, pattern: Option<&Pattern>) -> Vec<FileInfo> {
        self.read()
            .map
            .iter()
            .filter(|(name, _)| pattern.is_none_or(|p| p.matches(name)))
            .map(|(name, f)| FileInfo {
                name: name.clone(),
                size: f.data.len() as u64,
                modified: f.modified,
            })
            .collect()
    }
}

/// Deletes the oldest files but `keep` until at least `need` bytes are free.
fn purge_oldest(files: &mut Files, need: u64, keep: &str) {
    let mut by_age: Vec<(SystemTime, String, u64)> = files
        .map
        .iter()
        .filter(|(name, _)| name.as_str() != keep)
        .map(|(name, f)| (f.modified, name.clone(), f.data.len() as u64))
        .collect();
    by_age.sort();
    let mut freed = 0;
    for (_, name, size) in by_age {
        if freed >= need {
            break;
        }
        files.map.remove(&name);
        files.used -= size;
        freed += size;
        tracing::debug!(%name, "memfs: purged to make room");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(n: usize) -> Bytes {
        Bytes::from(vec![7u8; n])
    }

    #[test]
    fn create_replace_remove() {
        let fs = MemFs::new(0, false);
        assert!(fs.put("/a", bytes(3)).unwrap());
        assert!(!fs.put("/a", bytes(5)).unwrap());
        assert_eq!(fs.usage(), (5, 1));
        assert_eq!(fs.get("/a").unwrap().0.len(), 5);
        assert_eq!(fs.remove("/a"), Some(5));
        assert_eq!(fs.remove("/a"), None);
        assert_eq!(fs.usage(), (0, 0));
    }

    #[test]
    fn full_refuses_without_purge() {
        let fs = MemFs::new(10, false);
        fs.put("/a", bytes(6)).unwrap();
        assert!(matches!(fs.put("/b", bytes(6)), Err(WriteError::Full)));
        assert!(matches!(
            fs.put("/c", bytes(11)),
            Err(WriteError::TooBig(10))
        ));
        // Replacing a file counts only the difference.
        fs.put("/a", bytes(10)).unwrap();
        assert_eq!(fs.usage(), (10, 1));
    }

    #[test]
    fn trackers_count_what_their_patterns_match() {
        let fs = MemFs::new(0, false);
        let tracker = fs.track(vec![Pattern::new("/ch_*.ts").unwrap()]);
        fs.put("/ch_0001.ts", bytes(100)).unwrap();
        fs.put("/other.ts", bytes(50)).unwrap();
        fs.put("/ch_0001.ts", bytes(10)).unwrap();
        assert_eq!(tracker.bytes(), 110);
        drop(tracker);
        fs.put("/ch_0002.ts", bytes(1)).unwrap();
        assert!(fs.trackers.lock().unwrap()[0].upgrade().is_none());
    }

    #[test]
    fn purge_deletes_the_oldest() {
        let fs = MemFs::new(10, true);
        fs.put("/1", bytes(4)).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
        fs.put("/2", bytes(4)).unwrap();
        fs.put("/3", bytes(4)).unwrap();
        let names: Vec<_> = fs.list(None).into_iter().map(|f| f.name).collect();
        assert_eq!(names, ["/2", "/3"]);
        assert_eq!(fs.usage(), (8, 2));
    }
}

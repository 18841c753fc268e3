//! datarhei's cleanup rules: per process output, `<fs>:<glob>` patterns whose matches are kept
//! to `max_files` and `max_file_age_seconds` every second, and deleted entirely when the process
//! is deleted or replaced (`purge_on_delete`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::glob::Pattern;
use super::{Filesystems, Kind};

/// How often the rules are applied.
const INTERVAL: Duration = Duration::from_secs(1);

/// One resolved rule.
#[derive(Debug, Clone)]
pub struct Rule {
    kind: Kind,
    pattern: Pattern,
    max_files: u64,
    max_age: Option<Duration>,
    purge_on_delete: bool,
}

impl Rule {
    /// A rule from a resolved `<fs>:<glob>` pattern (`disk:`/`mem:`, or the legacy
    /// `diskfs:`/`memfs:`); `max_files` and `max_age_seconds` of 0 are off.
    pub fn parse(
        pattern: &str,
        max_files: u64,
        max_age_seconds: u64,
        purge_on_delete: bool,
    ) -> Result<Rule, String> {
        let (name, glob) = pattern
            .split_once(':')
            .ok_or("the pattern has no file system prefix")?;
        let kind = Kind::from_name(name).ok_or_else(|| format!("unknown file system '{name}'"))?;
        Ok(Rule {
            kind,
            pattern: Pattern::new(glob)?,
            max_files,
            max_age: (max_age_seconds > 0).then(|| Duration::from_secs(max_age_seconds)),
            purge_on_delete,
        })
    }
}

/// The rules of every process, and the file systems they apply to.
#[derive(Debug)]
pub struct Cleanup {
    filesystems: Filesystems,
    rules: Mutex<HashMap<String, Vec<Rule>>>,
}

impl Cleanup {
    /// No rules yet.
    pub fn new(filesystems: Filesystems) -> Cleanup {
        Cleanup {
            filesystems,
            rules: Mutex::new(HashMap::new()),
        }
    }

    fn rules(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Rule>>> {
        self.rules.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Installs the rules of process `id` (replacing any it had, without purging).
    pub fn set(&self, id: &str, rules: Vec<Rule>) {
        if rules.is_empty() {
            self.rules().remove(id);
        } else {
            self.rules().insert(id.to_string(), rules);
        }
    }

    /// Removes the rules of process `id` and deletes every match of those with
    /// `purge_on_delete`. Blocking (disk).
    pub fn unset(&self, id: &str) -> usize {
        let Some(rules) = self.rules().remove(id) else {
            return 0;
        };
        let mut deleted = 0;
        for rule in rules.iter().filter(|r| r.purge_on_delete) {
            let mut files = self.filesystems.list(rule.kind, Some(&rule.pattern));
            // Deepest first, as Core does, so files go before what contains them.
            files.sort_by_key(|f| std::cmp::Reverse(f.name.len()));
            for file in files {
                if self.filesystems.remove(rule.kind, &file.name).is_some() {
                    deleted += 1;
                }
            }
        }
        if deleted > 0 {
            tracing::debug!(%id, deleted, "cleanup: purged the files of a deleted process");
        }
        deleted
    }

    /// Applies every rule once. Blocking (disk).
    pub fn apply(&self) {
        let rules: Vec<Rule> = self.rules().values().flatten().cloned().collect();
        let now = SystemTime::now();
        for rule in rules {
            if rule.max_files == 0 && rule.max_age.is_none() {
                continue;
            }
            let mut files = self.filesystems.list(rule.kind, Some(&rule.pattern));
            files.sort_by_key(|f| f.modified);
            let excess = files.len().saturating_sub(rule.max_files as usize);
            let mut kept = files.into_iter();
            if rule.max_files > 0 {
                for file in kept.by_ref().take(excess) {
                    self.filesystems.remove(rule.kind, &file.name);
                }
            }
            if let Some(max_age) = rule.max_age {
                for file in kept {
                    let age = now.duration_since(file.modified).unwrap_or_default();
                    if age > max_age {
                        self.filesystems.remove(rule.kind, &file.name);
                    }
                }
            }
        }
    }

    /// Applies the rules every second until the runtime ends.
    pub fn spawn(self: Arc<Self>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(INTERVAL);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let this = self.clone();
                let _ = tokio::task::spawn_blocking(move || this.apply()).await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Bytes;

    fn rule(pattern: &str, max_files: u64, purge: bool) -> Vec<Rule> {
        vec![Rule::parse(pattern, max_files, 0, purge).unwrap()]
    }

    fn fixture() -> (tempfile::TempDir, Filesystems) {
        let dir = tempfile::tempdir().unwrap();
        let fss = Filesystems {
            disk: Arc::new(super::super::disk::DiskFs::new(dir.path()).unwrap()),
            mem: Arc::new(super::super::mem::MemFs::new(0, false)),
        };
        (dir, fss)
    }

    #[test]
    fn keeps_the_newest_max_files() {
        let (_dir, fss) = fixture();
        for i in 0..5 {
            fss.mem
                .put(&format!("/p1_out_{i}.ts"), Bytes::from_static(b"x"))
                .unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
        fss.mem.put("/other.ts", Bytes::from_static(b"x")).unwrap();
        let cleanup = Cleanup::new(fss.clone());
        cleanup.set("p1", rule("memfs:/p1_out_*.ts", 2, false));
        cleanup.apply();
        let names: Vec<_> = fss.mem.list(None).into_iter().map(|f| f.name).collect();
        assert_eq!(names, ["/other.ts", "/p1_out_3.ts", "/p1_out_4.ts"]);
        // Without purge_on_delete, deleting the process keeps its files.
        assert_eq!(cleanup.unset("p1"), 0);
        assert_eq!(fss.mem.usage().1, 3);
    }

    #[test]
    fn purge_on_delete_removes_every_match() {
        let (dir, fss) = fixture();
        std::fs::create_dir_all(dir.path().join("p1")).unwrap();
        std::fs::write(dir.path().join("p1/a.ts"), b"x").unwrap();
        std::fs::write(dir.path().join("keep.ts"), b"x").unwrap();
        let cleanup = Cleanup::new(fss.clone());
        cleanup.set("p1", rule("disk:/p1/**", 0, true));
        assert_eq!(cleanup.unset("p1"), 1);
        assert!(!dir.path().join("p1/a.ts").exists());
        assert!(dir.path().join("keep.ts").exists());
    }

    #[test]
    fn patterns_need_a_known_file_system() {
        assert!(Rule::parse("s3x:/a*", 1, 0, true).is_err());
        assert!(Rule::parse("/a*", 1, 0, true).is_err());
        assert!(Rule::parse("mem:/a[", 1, 0, true).is_err());
        assert!(Rule::parse("mem:/a*", 1, 0, true).is_ok());
    }
}

//! The metrics `POST /api/v3/metrics` answers (datarhei Core's monitor): system, file system,
//! session and process figures sampled every `metrics.interval_sec`, kept for
//! `metrics.range_sec`.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::process::Registry;
use crate::sessions::Sessions;

/// A metric's labels.
pub type Labels = BTreeMap<String, String>;

/// A metric's name and labels.
pub type Key = (String, Labels);

/// One series: its labels and `(unix seconds, value)` pairs.
pub type Series = (Labels, Vec<(i64, f64)>);

/// The metrics known, with their descriptions and label names (`GET /api/v3/metrics`).
pub const DESCRIPTIONS: &[(&str, &str, &[&str])] = &[
    ("uptime_uptime", "Seconds since the server started", &[]),
    ("cpu_ncpu", "Number of logical CPUs", &[]),
    ("cpu_idle", "Percentage of idle CPU", &[]),
    ("cpu_user", "Percentage of CPU used by user programs", &[]),
    ("cpu_system", "Percentage of CPU used by the kernel", &[]),
    (
        "cpu_other",
        "Percentage of CPU used otherwise (I/O wait, interrupts, steal)",
        &[],
    ),
    ("mem_total", "Total memory in bytes", &[]),
    ("mem_free", "Available memory in bytes", &[]),
    (
        "disk_total",
        "Size of the data directory's file system in bytes",
        &["path"],
    ),
    (
        "disk_usage",
        "Bytes used on the data directory's file system",
        &["path"],
    ),
    (
        "filesystem_limit",
        "Size limit of a file system in bytes",
        &["name"],
    ),
    (
        "filesystem_usage",
        "Bytes used by a file system's files",
        &["name"],
    ),
    (
        "filesystem_files",
        "Number of files in a file system",
        &["name"],
    ),
    ("session_active", "Current sessions", &["collector"]),
    ("session_total", "Sessions since the start", &["collector"]),
    (
        "session_limit",
        "Most sessions at once (0: unlimited)",
        &["collector"],
    ),
    (
        "session_rxbitrate",
        "Current ingress in bit/s",
        &["collector"],
    ),
    (
        "session_txbitrate",
        "Current egress in bit/s",
        &["collector"],
    ),
    (
        "session_maxtxbitrate",
        "Egress limit in bit/s (0: unlimited)",
        &["collector"],
    ),
    (
        "session_rxbytes",
        "Bytes received since the start",
        &["collector"],
    ),
    (
        "session_txbytes",
        "Bytes sent since the start",
        &["collector"],
    ),
    ("ffmpeg_process", "Processes by state", &["state"]),
];

/// One sample: unix seconds and values.
struct Sample {
    ts: i64,
    values: Vec<(Arc<Key>, f64)>,
}

/// The samples kept, and one shared copy of each key they name: every sample repeats the same
/// ~60 keys (a name and a label map each, ~0.6 KiB), so 150 samples holding their own copies
/// came to ~4.5 MiB of heap; shared, a sample is 16 bytes per value.
#[derive(Default)]
struct Samples {
    kept: VecDeque<Sample>,
    keys: std::collections::HashSet<Arc<Key>>,
}

impl Samples {
    fn push(&mut self, ts: i64, values: Vec<(Key, f64)>, keep: usize) {
        // A fresh vector of its own size: `collect` would reuse the allocation of `values`,
        // whose elements are 3.5 times larger, and keep all of it for the sample's life.
        let mut shared = Vec::with_capacity(values.len());
        shared.extend(
            values
                .into_iter()
                .map(|(key, v)| match self.keys.get(&key) {
                    Some(shared) => (shared.clone(), v),
                    None => {
                        let shared = Arc::new(key);
                        self.keys.insert(shared.clone());
                        (shared, v)
                    }
                }),
        );
        self.kept.push_back(Sample { ts, values: shared });
        let full = self.kept.len() > keep;
        while self.kept.len() > keep {
            self.kept.pop_front();
        }
        if full {
            // Keys no sample names any more (a collector or state that went away).
            self.keys.retain(|key| Arc::strong_count(key) > 1);
        }
    }
}

/// The history and what it samples.
pub struct History {
    interval: Duration,
    range: Duration,
    samples: Mutex<Samples>,
}

/// What the sampler reads.
pub struct Sources {
    /// The processes.
    pub registry: Arc<Registry>,
    /// The session collectors.
    pub sessions: Arc<Sessions>,
    /// The data directory (disk figures).
    pub data_dir: PathBuf,
    /// The public directory (the `diskfs` file system).
    pub public_dir: PathBuf,
    /// When the server started.
    pub started: Instant,
    /// The in-memory file system (the `memfs` file system).
    pub memfs: Arc<crate::fs::mem::MemFs>,
}

impl History {
    /// Samples now and then every `interval` until the history is dropped.
    pub fn start(interval_sec: u64, range_sec: u64, sources: Sources) -> Arc<History> {
        let history = Arc::new(History {
            interval: Duration::from_secs(interval_sec.max(1)),
            range: Duration::from_secs(range_sec),
            samples: Mutex::default(),
        });
        let weak = Arc::downgrade(&history);
        let sources = Arc::new(sources);
        tokio::spawn(async move {
            let mut cpu = CpuTimes::read();
            let Some(interval) = weak.upgrade().map(|h| h.interval) else {
                return;
            };
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(history) = weak.upgrade() else {
                    return;
                };
                let sources = sources.clone();
                let previous = cpu;
                // /proc, statvfs and a walk of the public directory: off the runtime.
                let Ok((values, now)) =
                    tokio::task::spawn_blocking(move || sample(&sources, previous)).await
                else {
                    continue;
                };
                cpu = now;
                history.push(chrono::Utc::now().timestamp(), values);
            }
        });
        history
    }

    fn push(&self, ts: i64, values: Vec<(Key, f64)>) {
        let keep = (self.range.as_secs() / self.interval.as_secs()).max(1) as usize;
        self.samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(ts, values, keep);
    }

    /// Seconds between samples.
    pub fn interval_sec(&self) -> u64 {
        self.interval.as_secs()
    }

    /// The values of `name` whose labels include `labels`, per label set: the samples of the
    /// last `range` seconds (the newest only when 0), oldest first.
    pub fn query(&self, name: &str, labels: &BTreeMap<String, String>, range: u64) -> Vec<Series> {
        let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        let samples = &samples.kept;
        let Some(newest) = samples.back() else {
            return Vec::new();
        };
        let since = if range == 0 {
            newest.ts
        } else {
            newest.ts - range as i64
        };
        let mut series: BTreeMap<BTreeMap<String, String>, Vec<(i64, f64)>> = BTreeMap::new();
        for sample in samples.iter().filter(|s| s.ts >= since) {
            for (key, v) in &sample.values {
                let (n, l) = key.as_ref();
                if n == name && labels.iter().all(|(k, want)| l.get(k) == Some(want)) {
                    series.entry(l.clone()).or_default().push((sample.ts, *v));
                }
            }
        }
        series.into_iter().collect()
    }
}

fn key(name: &str, labels: &[(&str, &str)]) -> Key {
    (
        name.to_string(),
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn sample(sources: &Sources, previous: CpuTimes) -> (Vec<(Key, f64)>, CpuTimes) {
    let mut out = Vec::new();
    out.push((
        key("uptime_uptime", &[]),
        sources.started.elapsed().as_secs() as f64,
    ));
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    out.push((key("cpu_ncpu", &[]), cpus as f64));
    let now = CpuTimes::read();
    let (idle, user, system, other) = now.percent_since(&previous);
    out.push((key("cpu_idle", &[]), idle));
    out.push((key("cpu_user", &[]), user));
    out.push((key("cpu_system", &[]), system));
    out.push((key("cpu_other", &[]), other));
    let (total, available) = memory();
    out.push((key("mem_total", &[]), total as f64));
    out.push((key("mem_free", &[]), available as f64));
    let path = sources.data_dir.display().to_string();
    let (size, used) = disk(&sources.data_dir);
    out.push((key("disk_total", &[("path", &path)]), size as f64));
    out.push((key("disk_usage", &[("path", &path)]), used as f64));
    for (name, limit, usage, files) in filesystems(sources, size) {
        out.push((key("filesystem_limit", &[("name", name)]), limit as f64));
        out.push((key("filesystem_usage", &[("name", name)]), usage as f64));
        out.push((key("filesystem_files", &[("name", name)]), files as f64));
    }
    for collector in sources.sessions.all() {
        let c = [("collector", collector.name())];
        let (active, rx, tx) = collector.current();
        let (max_sessions, max_tx) = collector.limits();
        let (total, rx_bytes, tx_bytes) = collector.totals();
        out.push((key("session_active", &c), active as f64));
        out.push((key("session_total", &c), total as f64));
        out.push((key("session_limit", &c), max_sessions as f64));
        out.push((key("session_rxbitrate", &c), rx));
        out.push((key("session_txbitrate", &c), tx));
        out.push((key("session_maxtxbitrate", &c), max_tx));
        out.push((key("session_rxbytes", &c), rx_bytes as f64));
        out.push((key("session_txbytes", &c), tx_bytes as f64));
    }
    let mut states: BTreeMap<String, f64> = [
        "finished",
        "starting",
        "running",
        "finishing",
        "failed",
        "killed",
    ]
    .iter()
    .map(|s| (s.to_string(), 0.0))
    .collect();
    for entry in sources.registry.list() {
        let exec = entry.runner().state().exec;
        if let Some(name) = serde_json::to_value(exec)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
        {
            *states.entry(name).or_default() += 1.0;
        }
    }
    for (state, n) in states {
        out.push((key("ffmpeg_process", &[("state", &state)]), n));
    }
    (out, now)
}

/// (name, limit, usage, files) of each file system. `diskfs` is the public directory, limited
/// by its file system's size; `memfs` by its configured size (0: unlimited).
fn filesystems(sources: &Sources, disk_size: u64) -> Vec<(&'static str, u64, u64, u64)> {
    let (usage, files) = tree_size(&sources.public_dir);
    let (mem_used, mem_files) = sources.memfs.usage();
    vec![
        ("diskfs", disk_size, usage, files),
        (
            "memfs",
            sources.memfs.max_bytes(),
            mem_used,
            mem_files as u64,
        ),
    ]
}

fn tree_size(dir: &std::path::Path) -> (u64, u64) {
    let (mut bytes, mut files) = (0, 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(entry.path()),
                Ok(t) if t.is_file() => {
                    files += 1;
                    bytes += entry.metadata().map_or(0, |m| m.len());
                }
                _ => {}
            }
        }
    }
    (bytes, files)
}

fn disk(path: &std::path::Path) -> (u64, u64) {
    match nix::sys::statvfs::statvfs(path) {
        Ok(s) => {
            let block = s.fragment_size();
            let size = s.blocks() * block;
            (size, size.saturating_sub(s.blocks_free() * block))
        }
        Err(_) => (0, 0),
    }
}

/// MemTotal and MemAvailable in bytes.
fn memory() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map_or(0, |kb| kb * 1024)
    };
    (field("MemTotal:"), field("MemAvailable:"))
}

/// The first line of /proc/stat, in ticks.
#[derive(Debug, Clone, Copy, Default)]
struct CpuTimes {
    user: u64,
    system: u64,
    idle: u64,
    other: u64,
}

impl CpuTimes {
    fn read() -> CpuTimes {
        let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let fields: Vec<u64> = text
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .filter_map(|f| f.parse().ok())
            .collect();
        let at = |i: usize| fields.get(i).copied().unwrap_or(0);
        // user nice system idle iowait irq softirq steal
        CpuTimes {
            user: at(0) + at(1),
            system: at(2),
            idle: at(3),
            other: at(4) + at(5) + at(6) + at(7),
        }
    }

    /// (idle, user, system, other) in percent since `before`.
    fn percent_since(&self, before: &CpuTimes) -> (f64, f64, f64, f64) {
        let d = |a: u64, b: u64| a.saturating_sub(b) as f64;
        let (user, system, idle, other) = (
            d(self.user, before.user),
            d(self.system, before.system),
            d(self.idle, before.idle),
            d(self.other, before.other),
        );
        let total = user + system + idle + other;
        if total == 0.0 {
            return (100.0, 0.0, 0.0, 0.0);
        }
        let p = |x: f64| x * 100.0 / total;
        (p(idle), p(user), p(system), p(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_share_one_copy_of_each_key_and_forget_keys_no_sample_names() {
        let mut samples = Samples::default();
        let cpu = key("cpu_idle", &[]);
        let state = |s: &str| key("ffmpeg_process", &[("state", s)]);
        for ts in 0..10 {
            samples.push(ts, vec![(cpu.clone(), 1.0), (state("running"), 2.0)], 3);
        }
        assert_eq!(samples.kept.len(), 3);
        assert_eq!(samples.keys.len(), 2);
        assert!(samples.kept.iter().all(|s| s.values.capacity() == 2));
        let first = &samples.kept[0].values[0].0;
        assert!(samples
            .kept
            .iter()
            .all(|s| Arc::ptr_eq(&s.values[0].0, first)));
        // "running" goes away: once no kept sample names it, its key goes too.
        for ts in 10..14 {
            samples.push(ts, vec![(cpu.clone(), 1.0)], 3);
        }
        assert_eq!(samples.keys.len(), 1);
        assert!(samples.keys.contains(&cpu));
    }
}

//! CPU and memory of a child process, read from `/proc`.

use std::time::Instant;

/// Samples one process; CPU is the share of the whole machine, in percent, since the last sample.
pub struct Sampler {
    pid: i32,
    cpus: f64,
    ticks_per_second: f64,
    page_size: u64,
    last: Option<(u64, Instant)>,
}

/// One reading.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    /// Percent of all CPUs (100 = every core busy).
    pub cpu_percent: f64,
    /// Resident set size.
    pub rss_bytes: u64,
}

impl Sampler {
    /// A sampler for `pid`.
    pub fn new(pid: i32) -> Sampler {
        Sampler {
            pid,
            // available_parallelism honours cgroup quotas and affinity, matching datarhei's normalisation.
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()) as f64,
            ticks_per_second: procfs::ticks_per_second() as f64,
            page_size: procfs::page_size(),
            last: None,
        }
    }

    /// Reads the process; `None` once it is gone.
    pub fn sample(&mut self) -> Option<Sample> {
        let stat = procfs::process::Process::new(self.pid).ok()?.stat().ok()?;
        let ticks = stat.utime + stat.stime;
        let now = Instant::now();
        let cpu_percent = match self.last {
            Some((last_ticks, last_time)) => {
                let elapsed = now.duration_since(last_time).as_secs_f64();
                if elapsed > 0.0 {
                    let used = ticks.saturating_sub(last_ticks) as f64 / self.ticks_per_second;
                    100.0 * used / elapsed / self.cpus
                } else {
                    0.0
                }
            }
            None => 0.0,
        };
        self.last = Some((ticks, now));
        Some(Sample {
            cpu_percent,
            rss_bytes: stat.rss * self.page_size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_own_process() {
        let mut s = Sampler::new(std::process::id() as i32);
        let first = s.sample().unwrap();
        assert!(first.rss_bytes > 0);
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_add(i ^ (x >> 3));
        }
        std::hint::black_box(x);
        assert!(s.sample().unwrap().cpu_percent > 0.0);
        assert!(Sampler::new(i32::MAX).sample().is_none());
    }
}

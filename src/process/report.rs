//! The per-run log kept for `GET /api/v3/process/{id}/report`.

use std::collections::VecDeque;

use serde::Serialize;
use utoipa::ToSchema;

/// Prelude lines kept from the start of a run.
const PRELUDE_HEAD: usize = 100;
/// Prelude lines kept from the end once the head is full.
const PRELUDE_TAIL: usize = 50;

/// One run's log, as the API shows it.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct ReportEntry {
    /// Unix seconds when the run started.
    pub created_at: i64,
    /// Lines before the first progress line.
    pub prelude: Vec<String>,
    /// `[unix seconds as a string, line]` pairs, oldest first.
    #[schema(value_type = Vec<Vec<String>>)]
    pub log: Vec<[String; 2]>,
}

/// The current run plus earlier ones (datarhei `ProcessReport`).
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct ProcessReport {
    /// Unix seconds when the current run started.
    pub created_at: i64,
    /// Prelude of the current run.
    pub prelude: Vec<String>,
    /// Log of the current run.
    #[schema(value_type = Vec<Vec<String>>)]
    pub log: Vec<[String; 2]>,
    /// Earlier runs, oldest first.
    pub history: Vec<ReportEntry>,
}

/// Collects log lines for the current run and keeps a few earlier runs.
#[derive(Debug)]
pub struct Report {
    max_lines: usize,
    max_history: usize,
    created_at: i64,
    head: Vec<String>,
    tail: VecDeque<String>,
    truncated: usize,
    log: VecDeque<(i64, String)>,
    history: VecDeque<ReportEntry>,
}

impl Report {
    /// An empty report keeping `max_lines` log lines and `max_history` earlier runs.
    pub fn new(max_lines: usize, max_history: usize) -> Report {
        Report {
            max_lines,
            max_history,
            created_at: 0,
            head: Vec::new(),
            tail: VecDeque::new(),
            truncated: 0,
            log: VecDeque::new(),
            history: VecDeque::new(),
        }
    }

    /// Starts a new run at `now`; the previous run moves to the history if it logged anything.
    pub fn new_run(&mut self, now: i64) {
        if !self.head.is_empty() || !self.log.is_empty() {
            let entry = self.current();
            self.history.push_back(entry);
            while self.history.len() > self.max_history {
                self.history.pop_front();
            }
        }
        self.created_at = now;
        self.head.clear();
        self.tail.clear();
        self.truncated = 0;
        self.log.clear();
    }

    /// Records a log line; `in_prelude` lines also go to the prelude.
    pub fn push(&mut self, now: i64, line: &str, in_prelude: bool) {
        if in_prelude {
            if self.head.len() < PRELUDE_HEAD {
                self.head.push(line.to_string());
            } else {
                self.tail.push_back(line.to_string());
                if self.tail.len() > PRELUDE_TAIL {
                    self.tail.pop_front();
                    self.truncated += 1;
                }
            }
        }
        if self.max_lines == 0 {
            return;
        }
        self.log.push_back((now, line.to_string()));
        while self.log.len() > self.max_lines {
            self.log.pop_front();
        }
    }

    fn current(&self) -> ReportEntry {
        let mut prelude = self.head.clone();
        if self.truncated > 0 {
            prelude.push(format!("... truncated {} lines ...", self.truncated));
        }
        prelude.extend(self.tail.iter().cloned());
        ReportEntry {
            created_at: self.created_at,
            prelude,
            log: self
                .log
                .iter()
                .map(|(t, l)| [t.to_string(), l.clone()])
                .collect(),
        }
    }

    /// The report as the API shows it.
    pub fn snapshot(&self) -> ProcessReport {
        let current = self.current();
        ProcessReport {
            created_at: current.created_at,
            prelude: current.prelude,
            log: current.log,
            history: self.history.iter().cloned().collect(),
        }
    }

    /// Carries the history of another report over (used when a process is updated).
    pub fn adopt_history(&mut self, other: &Report) {
        let mut history = other.history.clone();
        if !other.head.is_empty() || !other.log.is_empty() {
            history.push_back(other.current());
        }
        while history.len() > self.max_history {
            history.pop_front();
        }
        self.history = history;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_ring_and_history_are_bounded() {
        let mut r = Report::new(3, 2);
        for run in 0..4 {
            r.new_run(run);
            for i in 0..5 {
                r.push(run, &format!("run{run} line{i}"), i < 2);
            }
        }
        let s = r.snapshot();
        assert_eq!(s.log.len(), 3);
        assert_eq!(s.log[2], ["3".to_string(), "run3 line4".to_string()]);
        assert_eq!(s.prelude, vec!["run3 line0", "run3 line1"]);
        assert_eq!(s.history.len(), 2);
        assert_eq!(s.history[0].created_at, 1);
    }

    #[test]
    fn long_prelude_is_truncated_in_the_middle() {
        let mut r = Report::new(50, 3);
        r.new_run(0);
        for i in 0..200 {
            r.push(0, &i.to_string(), true);
        }
        let p = r.snapshot().prelude;
        assert_eq!(p.len(), 151);
        assert_eq!(p[99], "99");
        assert_eq!(p[100], "... truncated 50 lines ...");
        assert_eq!(p[150], "199");
    }
}

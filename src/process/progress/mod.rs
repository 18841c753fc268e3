//! Turns the stderr of a stock FFmpeg run into the Core `Progress` and `Probe` schemas.
//!
//! - [`types`]: the API's `Progress` and `Probe` schemas.
//! - [`prelude`]: the grammar of the Input/Output/Stream mapping sections FFmpeg prints before
//!   it starts, and the probe parser, which needs nothing else.
//! - [`stats`]: the per-run parser: the prelude, then the stats lines, with the moving averages.
//!
//! Stock FFmpeg only prints totals on its stats line, so per-stream counters are derived
//! (see [`Parser::progress`]), and all rates are computed here from counter deltas because
//! Core clients expect a 30 s moving average rather than FFmpeg's own instantaneous values.
//! Stderr is untrusted: every number that does not parse counts as 0, and nothing panics.

// Before the modules, so that they see it. FFmpeg's lines are ASCII, and the patterns say so
// (`[0-9]`, `[[:space:]]`, `[[:word:]]`, not `\d`, `\s`, `\w`): with Unicode classes the
// compiled patterns held ~2 MiB of the server's heap (their one-pass DFAs alone 1.1 MiB).
macro_rules! re {
    ($pat:expr) => {{
        static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
        RE.get_or_init(|| regex::Regex::new($pat).expect("static regex"))
    }};
}

mod prelude;
mod stats;
mod types;

#[cfg(test)]
mod samples;

pub use prelude::parse_probe;
pub use stats::{ByteCounter, IoRef, LineKind, Parser};
pub use types::{Probe, ProbeIo, Progress};

/// Removes the `[info] ` tag that `-loglevel level+...` prepends, so the anchored patterns match.
fn strip_level(line: &str) -> &str {
    let line = line.trim_end_matches(['\r', '\n']);
    match re!(r"^\[(?:quiet|panic|fatal|error|warning|info|verbose|debug|trace)\] ").find(line) {
        Some(m) => &line[m.end()..],
        None => line,
    }
}

/// Parses a number capture; anything unparsable counts as 0 because stderr is untrusted.
fn num(m: Option<regex::Match>) -> f64 {
    finite(
        m.and_then(|m| m.as_str().parse::<f64>().ok())
            .unwrap_or(0.0),
    )
}

/// NaN/infinity would serialize as JSON `null`, which clients reject for numbers.
fn finite(v: f64) -> f64 {
    if v.is_finite() {
        v
    } else {
        0.0
    }
}

/// Keeps API numbers short; Core prints at most three decimals.
fn round3(v: f64) -> f64 {
    let r = (v * 1000.0).round() / 1000.0;
    if r.is_finite() {
        r
    } else {
        finite(v)
    }
}

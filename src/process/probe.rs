//! `GET /api/v3/process/{id}/probe`: run ffmpeg on the inputs only and describe their streams.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use super::progress::{parse_probe, Probe};
use super::sandbox::Sandbox;

/// How long a probe may take before it is killed (datarhei's value).
const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs `binary argv` (global options and inputs, no outputs) and parses the input prelude.
pub async fn run(sandbox: &Sandbox, binary: &Path, argv: &[String]) -> Probe {
    run_within(sandbox, binary, argv, PROBE_TIMEOUT).await
}

/// [`run`], killed after `timeout`.
pub async fn run_within(
    sandbox: &Sandbox,
    binary: &Path,
    argv: &[String],
    timeout: Duration,
) -> Probe {
    let child = sandbox
        .command(binary, argv)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let child = match child {
        Ok(child) => child,
        Err(err) => {
            return Probe {
                streams: Vec::new(),
                log: vec![format!("cannot start {}: {err}", binary.display())],
            }
        }
    };
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(output)) => parse_probe(&String::from_utf8_lossy(&output.stderr)),
        Ok(Err(err)) => Probe {
            streams: Vec::new(),
            log: vec![format!("probe failed: {err}")],
        },
        Err(_) => Probe {
            streams: Vec::new(),
            log: vec![format!("probe timed out after {} s", timeout.as_secs())],
        },
    }
}

//! The encoder selection ([`super::select_checked`]) run in a child process of this binary.
//!
//! Testing an encoder loads its GStreamer plugin and what that plugin links: on the software
//! path libav (libavcodec, libavfilter and through them x265, rav1e, flite, librsvg, …) and
//! x264. Once mapped, those pages stay resident in the server for its lifetime, about a quarter
//! of an idle server's RSS, even when no stream ever transcodes. In a child they go away with
//! the child; the server maps them only when a stream first transcodes.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{encoders, Descriptions, Registry, TranscodeCapabilities, TranscodeError};
use crate::model::transcode::TranscodeSettings;

/// The hidden command line word that makes `streamcore` run the selection and exit.
pub const SUBCOMMAND: &str = "select-encoder";

/// What the selection needs, sent to the child on stdin.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    /// `webrtc.encoder`.
    pub forced: Option<String>,
    /// `webrtc.pipelines_dir`.
    pub pipelines_dir: Option<PathBuf>,
    /// `webrtc.transcode`.
    pub settings: TranscodeSettings,
}

/// What the child found, sent back on stdout.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// The encoder choice.
    pub outcome: Outcome,
    /// Descriptions whose elements are not installed, with why ([`Descriptions::unavailable`]).
    pub unavailable: Vec<(String, String)>,
}

/// The encoder choice.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Outcome {
    /// An encoder passed its test.
    Selected(TranscodeCapabilities),
    /// The configuration asks for what cannot work; the server must not start.
    Fatal(String),
    /// No encoder works; streams are passed through only.
    Unavailable(String),
}

impl Request {
    /// Runs the selection in a child process, bounded by the encoder tests' own timeouts. Falls
    /// back to this process when the child cannot be started (the result is the same, only the
    /// libraries stay mapped).
    pub fn select(&self) -> Report {
        let tests = encoders::all_encoder_elements().len() + encoders::HARDWARE_DECODERS.len();
        let limit = super::PROBE_TIMEOUT * (tests as u32 + 1);
        match self.select_in_child(limit) {
            Ok(outcome) => outcome,
            Err(why) => {
                tracing::warn!(%why, "encoder test in a child process failed; testing in the server");
                self.select_here()
            }
        }
    }

    /// The selection in this process.
    pub fn select_here(&self) -> Report {
        let descriptions = match Descriptions::load(self.pipelines_dir.as_deref()) {
            Ok(d) => d,
            Err(e) => {
                return Report {
                    outcome: Outcome::Fatal(e.to_string()),
                    unavailable: Vec::new(),
                }
            }
        };
        let forced = self.forced.as_deref();
        let outcome = match super::select_checked(
            &Registry::from_gstreamer(),
            forced,
            &descriptions,
            &self.settings,
        ) {
            Ok(caps) => Outcome::Selected(caps),
            // A forced encoder that cannot work, or a description an operator wrote that does not
            // parse, must stop the server rather than silently pass streams through.
            Err(e)
                if encoders::forced_value(forced).is_some()
                    || matches!(
                        e,
                        TranscodeError::Description { .. } | TranscodeError::Settings(_)
                    ) =>
            {
                Outcome::Fatal(e.to_string())
            }
            Err(e) => Outcome::Unavailable(e.to_string()),
        };
        Report {
            outcome,
            unavailable: descriptions.unavailable(),
        }
    }

    fn select_in_child(&self, limit: Duration) -> Result<Report, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let request = serde_json::to_vec(self).map_err(|e| e.to_string())?;
        let mut child = Command::new(exe)
            .arg(SUBCOMMAND)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| e.to_string())?;
        let written = child
            .stdin
            .take()
            .map(|mut stdin| stdin.write_all(&request))
            .unwrap_or(Ok(()));
        let mut stdout = child.stdout.take().ok_or("no stdout")?;
        // The reader ends at EOF, when the child exits; the timeout covers a hung encoder test.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut out = Vec::new();
            let _ = tx.send(stdout.read_to_end(&mut out).map(|_| out));
        });
        let result = rx.recv_timeout(limit);
        if result.is_err() {
            let _ = child.kill();
        }
        let status = child.wait().map_err(|e| e.to_string())?;
        written.map_err(|e| format!("cannot send the request: {e}"))?;
        let out = match result {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => {
                // Testing again here would hang the same way.
                return Ok(Report {
                    outcome: Outcome::Unavailable(format!(
                        "the encoder test did not finish within {} s",
                        limit.as_secs()
                    )),
                    unavailable: Vec::new(),
                });
            }
        };
        serde_json::from_slice(&out).map_err(|e| format!("child exited with {status}: {e}"))
    }
}

/// The child's side: reads a [`Request`] on stdin, writes an [`Outcome`] on stdout.
pub fn child_main() -> ExitCode {
    let mut input = Vec::new();
    let request: Request = match std::io::stdin()
        .read_to_end(&mut input)
        .map_err(|e| e.to_string())
        .and_then(|_| serde_json::from_slice(&input).map_err(|e| e.to_string()))
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("streamcore {SUBCOMMAND}: bad request: {e}");
            return ExitCode::from(2);
        }
    };
    let report = request.select_here();
    match serde_json::to_writer(std::io::stdout().lock(), &report) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

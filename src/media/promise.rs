//! The one way the server waits for webrtcbin: every action signal that answers through a
//! `GstPromise` (set-remote/local-description, create-answer, get-stats) goes through [`call`],
//! which bounds the wait and interrupts the promise when the bound passes.
//!
//! The callers hold things while they wait (a negotiation permit, a viewer or publisher slot, a
//! blocking-pool thread), so an element that never answers must cost a bounded time and then give
//! all of them back: the caller gets [`PromiseError::Timeout`], which the HTTP layer answers with
//! 504, and its teardown frees the rest.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, OnceLock};
use std::time::Duration;

use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;

/// Longest wait for one webrtcbin promise. webrtcbin answers each in milliseconds (the POST's
/// "negotiation timing" debug line shows them), the slow part of a negotiation (ICE gathering) is
/// bounded apart by `webrtc.gather_timeout_ms`, so a promise still open after 5 s means the
/// element is stuck or shutting down; 5 s is far above a loaded machine's worst answer, and short
/// enough that a client (browsers give up on fetch after minutes, players after ~10 s) sees a 504
/// rather than a hang.
pub const PROMISE_TIMEOUT: Duration = Duration::from_secs(5);

/// TEST ONLY: the number of `create-answer` promises never to reply to (webrtcbin gets a promise
/// nobody waits on, the caller waits on one nobody answers), to make a stuck webrtcbin on demand.
/// Unset or 0 in production; read once, when the media engine starts.
pub const STALL_ENV: &str = "STREAMCORE_TEST_STALL_NEGOTIATION";
/// TEST ONLY: [`PROMISE_TIMEOUT`] in milliseconds, so a test of the bound need not wait 5 s.
pub const TIMEOUT_ENV: &str = "STREAMCORE_TEST_PROMISE_TIMEOUT_MS";

struct Knobs {
    timeout: Duration,
    stalls: AtomicUsize,
}

static KNOBS: OnceLock<Knobs> = OnceLock::new();

fn knobs() -> &'static Knobs {
    KNOBS.get_or_init(|| {
        let number = |name: &str| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let knobs = Knobs {
            timeout: number(TIMEOUT_ENV)
                .filter(|ms| *ms > 0)
                .map_or(PROMISE_TIMEOUT, Duration::from_millis),
            stalls: AtomicUsize::new(number(STALL_ENV).unwrap_or(0) as usize),
        };
        if knobs.timeout != PROMISE_TIMEOUT || knobs.stalls.load(Ordering::Relaxed) > 0 {
            tracing::warn!(timeout = ?knobs.timeout, stalls = knobs.stalls.load(Ordering::Relaxed),
                "test-only webrtcbin promise knobs are set");
        }
        knobs
    })
}

/// Reads the test knobs now, so that they are fixed from the start of the server.
pub fn init() {
    knobs();
}

/// The bound in force.
pub fn timeout() -> Duration {
    knobs().timeout
}

fn stall(signal: &str) -> bool {
    signal == "create-answer"
        && knobs()
            .stalls
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
}

/// Why a promise call failed.
#[derive(Debug, thiserror::Error)]
pub enum PromiseError {
    /// webrtcbin answered with an error.
    #[error("webrtcbin refused {what}: {why}")]
    Refused {
        /// The signal.
        what: &'static str,
        /// webrtcbin's message.
        why: String,
    },
    /// No answer within the bound; the promise was interrupted.
    #[error("webrtcbin did not answer {0} in time")]
    Timeout(&'static str),
}

/// Emits a webrtcbin action signal whose last argument is a promise and waits, at most
/// [`timeout`], for the reply (blocking: run it off the async runtime). `Ok(None)` when the promise
/// ended without a reply (webrtcbin interrupts its promises when it shuts down).
pub fn call(
    webrtcbin: &gst::Element,
    signal: &'static str,
    arg: &dyn ToValue,
) -> Result<Option<gst::Structure>, PromiseError> {
    let (tx, rx) = mpsc::channel();
    let promise = gst::Promise::with_change_func(move |reply| {
        let _ = tx.send(reply.ok().flatten().map(|s| s.to_owned()));
    });
    let handed = if stall(signal) {
        tracing::warn!(signal, "test knob: this promise is never answered");
        gst::Promise::new()
    } else {
        promise.clone()
    };
    webrtcbin.emit_by_name_with_values(signal, &[arg.to_value(), handed.to_value()]);
    match rx.recv_timeout(timeout()) {
        Ok(Some(reply)) if reply.has_field("error") => Err(PromiseError::Refused {
            what: signal,
            why: error_message(&reply),
        }),
        Ok(reply) => Ok(reply),
        Err(_) => {
            // webrtcbin may still reply later; interrupting makes that reply a no-op.
            promise.interrupt();
            tracing::warn!(signal, timeout = ?timeout(), "webrtcbin did not answer in time");
            Err(PromiseError::Timeout(signal))
        }
    }
}

/// The message of webrtcbin's error reply. The reply holds a GError, whose Debug form is only a
/// pointer (`((GError*) 0x7f…)`): clients get its message.
fn error_message(reply: &gst::StructureRef) -> String {
    reply
        .get::<glib::Error>("error")
        .map(|e| e.message().to_string())
        .unwrap_or_else(|_| "webrtcbin gave no reason".into())
}

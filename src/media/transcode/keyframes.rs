//! Instant start on transcoded video: a joining viewer asks the encoder for a key frame at once
//! instead of waiting up to a GOP for the next one; the request is an upstream
//! `GstForceKeyUnit` event that crosses the viewer's branch, the tee, the payloader and the
//! parser to the encoder.
//!
//! Every such request makes an IDR for all viewers of the stream, and browsers send PLIs too
//! (webrtcbin turns them into the same event), so the requests for one encoder pass through a
//! [`KeyUnitLimiter`]: at most one per interval; those in between are merged into a single
//! request sent when the interval is over, so that no joining viewer waits longer than that.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;

/// Name of the event structure (GstVideo's upstream force-key-unit event).
const FORCE_KEY_UNIT: &str = "GstForceKeyUnit";

/// An upstream force-key-unit event asking for a key frame as soon as possible, with SPS/PPS
/// (`all-headers`). Built by hand as gst-video does (`gst_video_event_new_upstream_force_key_unit`)
/// so that gstreamer-video is not needed; every GstVideoEncoder subclass (x264enc, openh264enc,
/// nvh264enc, vah264enc, ...) handles it.
pub fn force_key_unit_event() -> gst::Event {
    let structure = gst::Structure::builder(FORCE_KEY_UNIT)
        // GST_CLOCK_TIME_NONE: now, not at a running time.
        .field("running-time", u64::MAX)
        .field("all-headers", true)
        .field("count", 0u32)
        .build();
    gst::event::CustomUpstream::new(structure)
}

/// Whether an event is a force-key-unit request (ours, or webrtcbin's for a PLI/FIR).
pub fn is_force_key_unit(event: &gst::EventRef) -> bool {
    event.type_() == gst::EventType::CustomUpstream
        && event
            .structure()
            .is_some_and(|s| s.name() == FORCE_KEY_UNIT)
}

/// Rate limit for forced key units of one encoder.
#[derive(Debug)]
pub struct KeyUnitLimiter {
    interval: Duration,
    state: Mutex<LimiterState>,
}

#[derive(Debug, Default)]
struct LimiterState {
    last: Option<Instant>,
    /// A request was held back and is owed once the interval is over.
    pending: bool,
}

impl Default for KeyUnitLimiter {
    fn default() -> Self {
        KeyUnitLimiter::new(KeyUnitLimiter::DEFAULT_INTERVAL)
    }
}

impl KeyUnitLimiter {
    /// Half a second: a joining viewer waits at most that long for its first picture, and the
    /// stream carries at most two forced IDRs a second however many viewers join.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(500);

    /// A limiter allowing one forced key unit per `interval`.
    pub fn new(interval: Duration) -> Self {
        KeyUnitLimiter {
            interval,
            state: Mutex::new(LimiterState::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LimiterState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a key unit may be forced at `now`; when it may, that counts as the forced one.
    pub fn allow(&self, now: Instant) -> bool {
        let mut state = self.lock();
        let free = state
            .last
            .is_none_or(|last| now.saturating_duration_since(last) >= self.interval);
        if free {
            state.last = Some(now);
            state.pending = false;
        }
        free
    }

    /// Notes a held-back request, to be sent once the interval is over.
    fn defer(&self) {
        self.lock().pending = true;
    }

    /// Whether a held-back request is due at `now` (it is then no longer pending).
    fn take_due(&self, now: Instant) -> bool {
        let mut state = self.lock();
        let due = state.pending
            && state
                .last
                .is_none_or(|last| now.saturating_duration_since(last) >= self.interval);
        if due {
            state.pending = false;
        }
        due
    }

    /// Puts the limit on a pad every request for the encoder crosses, typically the sink pad of
    /// the stream's tee after a transcode chain: excess requests are dropped there and one merged
    /// request is sent upstream with the next buffer after the interval.
    pub fn install(self: &Arc<Self>, pad: &gst::Pad) {
        let limiter = self.clone();
        pad.add_probe(gst::PadProbeType::EVENT_UPSTREAM, move |_, info| {
            let Some(gst::PadProbeData::Event(event)) = &info.data else {
                return gst::PadProbeReturn::Ok;
            };
            if !is_force_key_unit(event) || limiter.allow(Instant::now()) {
                return gst::PadProbeReturn::Ok;
            }
            limiter.defer();
            // Handled, not Drop: the binding has already taken the event, and GStreamer 1.22
            // unrefs a dropped upstream event again (a NULL-unref CRITICAL per held-back request).
            gst::PadProbeReturn::Handled
        });
        let limiter = self.clone();
        pad.add_probe(
            gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
            move |pad, _| {
                if limiter.take_due(Instant::now()) {
                    // Crosses the upstream probe above, which now lets it through and records it.
                    let event = force_key_unit_event();
                    if pad.direction() == gst::PadDirection::Sink {
                        pad.push_event(event);
                    } else {
                        pad.send_event(event);
                    }
                }
                gst::PadProbeReturn::Ok
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_per_interval() {
        let limiter = KeyUnitLimiter::default();
        let t0 = Instant::now();
        assert!(limiter.allow(t0));
        assert!(!limiter.allow(t0 + Duration::from_millis(10)));
        assert!(!limiter.allow(t0 + Duration::from_millis(499)));
        assert!(limiter.allow(t0 + Duration::from_millis(500)));
        assert!(!limiter.allow(t0 + Duration::from_millis(600)));
        assert!(limiter.allow(t0 + Duration::from_secs(5)));
    }

    #[test]
    fn held_back_requests_fall_due_once() {
        let limiter = KeyUnitLimiter::new(Duration::from_millis(100));
        let t0 = Instant::now();
        assert!(!limiter.take_due(t0), "nothing pending");
        assert!(limiter.allow(t0));
        limiter.defer();
        limiter.defer();
        assert!(!limiter.take_due(t0 + Duration::from_millis(50)));
        assert!(limiter.take_due(t0 + Duration::from_millis(100)));
        assert!(
            !limiter.take_due(t0 + Duration::from_millis(150)),
            "merged into one"
        );
    }

    #[test]
    fn the_event_is_an_upstream_force_key_unit() {
        gst::init().unwrap();
        let event = force_key_unit_event();
        assert!(is_force_key_unit(&event));
        assert!(event.is_upstream());
        let s = event.structure().unwrap();
        assert!(s.get::<bool>("all-headers").unwrap());
        assert_eq!(s.get::<u64>("running-time").unwrap(), u64::MAX);
        assert!(!is_force_key_unit(&gst::event::Eos::new()));
    }
}

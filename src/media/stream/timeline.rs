//! One timeline for every FFmpeg run feeding a TS leg.
//!
//! Each FFmpeg run starts a new TS timeline (PTS and PCR start again near the mux delay) in a new
//! tsdemux. Its buffers are stamped onto one timeline: the first run's running time, continued by
//! each later run where the clock is (never before the end of what the last run sent), and
//! every demux segment is replaced by one plain segment `[0, ∞)`, so running time equals the
//! timestamps everywhere after the demux.
//!
//! The timestamps carry the continuation, not a segment or pad offset: RTP depayloaders
//! (`rtpbasedepayload`) drop upstream segments and keep the one they made from their first
//! packet. With a pad offset the running time went back by the first run's length behind the
//! first depayloader; the video decoder then clamped its frames to continue its timeline, the
//! audio decoder did not, and transcoded audio reached viewers hundreds of milliseconds from its
//! video (tests/sources.rs `lip_sync_on_the_transcode_path_after_a_restart`).

use std::sync::Mutex;

use gstreamer as gst;
use gstreamer::prelude::*;

#[derive(Default)]
pub(super) struct Timeline {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Clock running time minus media running time at the first run's first buffer.
    lead: Option<i64>,
    /// What the current run adds to its media running time, once its first buffer came.
    offset: Option<i64>,
    /// The latest time a buffer on the timeline ended at.
    end: Option<i64>,
}

/// A demux pad's time as running time in its own segment (negative before the segment start).
fn media_running_time(pad: &gst::Pad, ts: gst::ClockTime) -> i64 {
    let signed = pad.sticky_event::<gst::event::Segment>(0).and_then(|e| {
        e.segment()
            .downcast_ref::<gst::ClockTime>()
            .and_then(|s| s.to_running_time_full(ts))
    });
    match signed {
        Some(gst::Signed::Positive(t)) => t.nseconds() as i64,
        Some(gst::Signed::Negative(t)) => -(t.nseconds() as i64),
        None => ts.nseconds() as i64,
    }
}

fn clock_time(ns: i64) -> gst::ClockTime {
    gst::ClockTime::from_nseconds(ns.max(0) as u64)
}

impl Timeline {
    /// A new FFmpeg run: its offset is decided by its first buffer.
    pub(super) fn new_run(&self) {
        self.lock().offset = None;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stamps what leaves a tsdemux pad onto the timeline: buffers and gaps re-timed, segments
    /// replaced by the plain one. `element` gives the clock.
    pub(super) fn install(
        self: &std::sync::Arc<Self>,
        pad: &gst::Pad,
        element: gst::glib::WeakRef<gst::Pipeline>,
    ) {
        let timeline = self.clone();
        pad.add_probe(
            gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM,
            move |pad, info| {
                match &mut info.data {
                    Some(gst::PadProbeData::Buffer(buffer)) => {
                        let clock = || element.upgrade().and_then(|p| clock_running_time(&p));
                        timeline.restamp(pad, buffer.make_mut(), clock);
                    }
                    Some(gst::PadProbeData::Event(event)) => match timeline.event(pad, event) {
                        Some(Some(replaced)) => *event = replaced,
                        Some(None) => return gst::PadProbeReturn::Drop,
                        None => {}
                    },
                    _ => {}
                }
                gst::PadProbeReturn::Ok
            },
        );
    }

    /// The current run's offset, decided on its first buffer at `media` (running time in the
    /// demux's segment) from the clock's running time, which `clock` reads only then.
    fn offset(&self, media: i64, clock: impl FnOnce() -> Option<i64>) -> i64 {
        let mut state = self.lock();
        if let Some(offset) = state.offset {
            return offset;
        }
        let lag = clock().map(|now| now - media);
        if state.lead.is_none() {
            state.lead = lag;
        }
        let by_clock = match (lag, state.lead) {
            (Some(lag), Some(lead)) => lag - lead,
            _ => 0,
        };
        // Never before the end of what the last run sent: chains that count samples (audio
        // decoder, resampler, encoder) would carry an overlap as a lasting delay of that medium.
        let after_last = state.end.map_or(i64::MIN, |end| end - media);
        let offset = by_clock.max(after_last);
        state.offset = Some(offset);
        if offset != 0 {
            tracing::info!(
                offset_ms = offset / 1_000_000,
                "the restarted source continues on the stream's timeline"
            );
        }
        offset
    }

    fn restamp(
        &self,
        pad: &gst::Pad,
        buffer: &mut gst::BufferRef,
        clock: impl FnOnce() -> Option<i64>,
    ) {
        let Some(reference) = buffer.pts().or(buffer.dts()) else {
            return;
        };
        let offset = self.offset(media_running_time(pad, reference), clock);
        let shifted = |ts: gst::ClockTime| media_running_time(pad, ts) + offset;
        let pts = buffer.pts().map(shifted);
        buffer.set_pts(pts.map(clock_time));
        buffer.set_dts(buffer.dts().map(shifted).map(clock_time));
        let end = pts.unwrap_or_default() + buffer.duration().map_or(0, |d| d.nseconds() as i64);
        let mut state = self.lock();
        state.end = Some(state.end.map_or(end, |e| e.max(end)));
    }

    /// `None`: the event passes as it is; `Some(None)`: dropped; `Some(Some(e))`: replaced.
    fn event(&self, pad: &gst::Pad, event: &gst::Event) -> Option<Option<gst::Event>> {
        match event.view() {
            gst::EventView::Segment(s) if s.segment().format() == gst::Format::Time => {
                let plain = gst::FormattedSegment::<gst::ClockTime>::new();
                Some(Some(gst::event::Segment::new(&plain)))
            }
            gst::EventView::Gap(gap) => {
                let (ts, duration) = gap.get();
                // A gap before the run's first buffer has no place on the timeline yet.
                let Some(offset) = self.lock().offset else {
                    return Some(None);
                };
                let at = media_running_time(pad, ts) + offset;
                Some(Some(
                    gst::event::Gap::builder(clock_time(at))
                        .duration(duration)
                        .build(),
                ))
            }
            _ => None,
        }
    }
}

/// The clock's running time of `pipeline`.
fn clock_running_time(pipeline: &gst::Pipeline) -> Option<i64> {
    let now = pipeline.clock()?.time();
    let base = pipeline.base_time()?;
    Some(now.nseconds() as i64 - base.nseconds() as i64)
}

//! Brings a viewer joining mid-GOP up to the live edge: a thread of its own sends the stream's
//! cached GOP ([`super::gop`]), key frame first, faster than real time but paced, and goes on
//! through what the cache records meanwhile until nothing is left; then the viewer's gate
//! passes live packets again, from the first one not sent yet.
//!
//! Paced, because a GOP sent in one go reaches the viewer's socket as a single burst
//! (webrtcbin's DTLS encoder queues it and sends it at once): hundreds of packets overrun a
//! receive buffer of the kernel's default size as soon as the viewer is a little late to read
//! (seen: 22–126 packets lost per join by the tests' GStreamer viewer), and a browser does not
//! decode past a lost packet before the next IDR, up to a GOP later.
//!
//! The frames sent get timestamps that follow the time they are sent (a little behind the live
//! stream's), so a browser's receive clock sees a stream arriving on time, whose frames it
//! decodes and shows as they come, and meets the live frames without a jump. Timestamps
//! squeezed together (as for a burst) while the packets arrive over tens of milliseconds made
//! Chrome's timing stall 150 ms after the catch-up: a freeze in 8 of 20 runs of the browser test.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_rtp::RTPBuffer;

use super::gop::GopCache;

/// Most packets sent back to back.
const SLICE_PACKETS: usize = 16;
/// Least bytes per second of catch-up (16 Mbit/s): a 2 Mbit/s stream's 2 s GOP in a quarter
/// second.
const RATE: u64 = 2_000_000;
/// At least this many times the stream's own rate, so the catch-up gains on the live edge.
const FASTER: u64 = 4;
/// A cached GOP this long to send goes faster than [`RATE`], to end within it.
const LONGEST: Duration = Duration::from_secs(1);
/// The catch-up's frames are stamped this far behind the live stream, so that the first live
/// frame is never older than the last one caught up on, whatever the source's jitter.
const BEHIND: Duration = Duration::from_millis(20);
/// Bound on the whole catch-up; past it, the viewer goes live where it is.
const GIVE_UP: Duration = Duration::from_secs(5);

thread_local! {
    /// Set while this thread pushes a catch-up slice: the viewer's gate lets it through.
    static PUSHING: Cell<bool> = const { Cell::new(false) };
}

/// Whether the current thread is pushing a catch-up slice.
pub fn pushing() -> bool {
    PUSHING.with(Cell::get)
}

/// Where the live stream is: its latest frame's RTP timestamp and presentation time, mapped to
/// the moment it arrived (the latest arrival seen, so the catch-up stays behind it).
#[derive(Clone, Copy)]
struct Anchor {
    at: Instant,
    ts: u32,
    pts: Option<gst::ClockTime>,
}

impl Anchor {
    fn of(buffer: &gst::BufferRef) -> Option<Self> {
        let rtp = RTPBuffer::from_buffer_readable(buffer).ok()?;
        Some(Anchor {
            at: Instant::now(),
            ts: rtp.timestamp(),
            pts: buffer.pts(),
        })
    }

    /// Whether `self` arrived later, for its timestamp, than `other`.
    fn later_than(&self, other: &Anchor) -> bool {
        let waited = self.at.saturating_duration_since(other.at).as_secs_f64();
        let ticks = self.ts.wrapping_sub(other.ts) as i32;
        waited * 90_000.0 > f64::from(ticks)
    }

    /// The timestamp and presentation time of a frame sent now: the live stream's, less
    /// [`BEHIND`].
    fn now(&self) -> (u32, Option<gst::ClockTime>) {
        let since = self.at.elapsed().saturating_sub(BEHIND);
        let back = BEHIND.saturating_sub(self.at.elapsed());
        let ticks = |d: Duration| (d.as_secs_f64() * 90_000.0) as u32;
        let ts = self.ts.wrapping_add(ticks(since)).wrapping_sub(ticks(back));
        let pts = self.pts.map(|p| {
            (p + gst::ClockTime::from_nseconds(since.as_nanos() as u64))
                .saturating_sub(gst::ClockTime::from_nseconds(back.as_nanos() as u64))
        });
        (ts, pts)
    }
}

enum Phase {
    /// The sender is at work; live packets are dropped (the cache has them, it sends them).
    Sending { anchor: Anchor },
    /// Sent up to this packet; newer ones pass.
    Live { last: Option<u16> },
}

/// One viewer's catch-up.
pub struct CatchUp {
    phase: Mutex<Phase>,
    /// A live packet has passed since: the gate need not ask any more.
    done: AtomicBool,
}

impl CatchUp {
    /// Starts the catch-up of the viewer whose gate on `pad` just saw `first`, the first live
    /// packet it would send, if `gop` leads up to it. `pt` is the viewer's payload type.
    pub fn start(
        pad: &gst::Pad,
        gop: &Arc<GopCache>,
        first: &gst::BufferRef,
        pt: u8,
    ) -> Option<Arc<Self>> {
        let seq = RTPBuffer::from_buffer_readable(first).ok()?.seq();
        if !gop.leads_to(seq) {
            return None;
        }
        let anchor = Anchor::of(first)?;
        let catch_up = Arc::new(CatchUp {
            phase: Mutex::new(Phase::Sending { anchor }),
            done: AtomicBool::new(false),
        });
        let (sender, weak, gop) = (catch_up.clone(), pad.downgrade(), gop.clone());
        let spawned = std::thread::Builder::new()
            .name("catch-up".into())
            .spawn(move || sender.send(&weak, &gop, pt));
        if let Err(e) = spawned {
            // The viewer waits for the stream's next key frame instead.
            tracing::warn!(error = %e, "no thread for the catch-up");
            return None;
        }
        Some(catch_up)
    }

    /// Whether the gate passes this live buffer.
    pub fn admit_buffer(&self, buffer: &gst::BufferRef) -> bool {
        if self.done.load(Ordering::Relaxed) {
            return true;
        }
        let mut phase = self.lock();
        match &mut *phase {
            Phase::Sending { anchor } => {
                later(anchor, buffer);
                false
            }
            Phase::Live { last } => {
                let pass = newer(buffer, *last);
                if pass {
                    self.done.store(true, Ordering::Relaxed);
                }
                pass
            }
        }
    }

    /// Whether the gate passes this live list, less what the catch-up sent of it.
    pub fn admit_list(&self, list: &mut gst::BufferList) -> bool {
        if self.done.load(Ordering::Relaxed) {
            return true;
        }
        let mut phase = self.lock();
        match &mut *phase {
            Phase::Sending { anchor } => {
                if let Some(buffer) = list.get(list.len().saturating_sub(1)) {
                    later(anchor, buffer);
                }
                false
            }
            Phase::Live { last } => {
                let sent = list.iter().take_while(|b| !newer(b, *last)).count();
                if sent == list.len() {
                    return false;
                }
                if sent > 0 {
                    list.make_mut().remove(0..sent);
                }
                self.done.store(true, Ordering::Relaxed);
                true
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The sending thread. Reading the cache and going live happen under the phase lock: a live
    /// packet is recorded in the cache before the gate sees it, so each one is either read here
    /// or passed by the gate, never both or neither.
    fn send(&self, pad: &gst::glib::WeakRef<gst::Pad>, gop: &GopCache, pt: u8) {
        let started = Instant::now();
        let (mut last, mut sent) = (None::<u16>, 0usize);
        let (bytes, gop_rate) = gop.load();
        let rate = RATE
            .max(gop_rate * FASTER)
            .max((bytes as f64 / LONGEST.as_secs_f64()) as u64);
        // The frame being sent: its timestamp at the source and the one it goes out with.
        let mut frame: Option<(u32, u32)> = None;
        loop {
            let (packets, anchor) = {
                let mut phase = self.lock();
                let packets = gop.after(last, SLICE_PACKETS);
                let anchor = match &*phase {
                    Phase::Sending { anchor } => *anchor,
                    Phase::Live { .. } => return,
                };
                if packets.is_empty() || started.elapsed() > GIVE_UP {
                    if !packets.is_empty() {
                        tracing::warn!("catch-up gave up behind the live edge");
                    }
                    *phase = Phase::Live { last };
                    tracing::debug!(
                        bytes = sent,
                        took_ms = started.elapsed().as_millis() as u64,
                        "caught up"
                    );
                    return;
                }
                (packets, anchor)
            };
            let mut slice = gst::BufferList::new_sized(packets.len());
            let slice_mut = slice.get_mut().expect("new list");
            let (now_ts, now_pts) = anchor.now();
            for packet in packets {
                sent += packet.size();
                let mut packet = packet.copy();
                let buffer = packet.make_mut();
                buffer.set_pts(now_pts);
                buffer.set_dts(gst::ClockTime::NONE);
                if let Ok(mut rtp) = RTPBuffer::from_buffer_writable(buffer) {
                    last = Some(rtp.seq());
                    let source = rtp.timestamp();
                    let ts = match frame {
                        Some((s, ts)) if s == source => ts,
                        // Never the same nor an earlier timestamp for a later frame.
                        Some((_, prev)) if (now_ts.wrapping_sub(prev) as i32) <= 0 => {
                            prev.wrapping_add(1)
                        }
                        _ => now_ts,
                    };
                    frame = Some((source, ts));
                    rtp.set_timestamp(ts);
                    rtp.set_payload_type(pt);
                }
                slice_mut.add(packet);
            }
            let flow = pad.upgrade().map(|pad| push(&pad, slice));
            if !matches!(flow, Some(Ok(_))) {
                // The viewer left: nothing more goes down this pad.
                *self.lock() = Phase::Live { last: None };
                return;
            }
            // Sleep until the bytes sent so far are due at `rate`; never less than a little, and
            // never to make up for an oversleep (that would be a burst again).
            let due = Duration::from_secs_f64(sent as f64 / rate as f64);
            std::thread::sleep(
                due.saturating_sub(started.elapsed())
                    .max(Duration::from_millis(1)),
            );
        }
    }
}

/// Keeps the later-arriving of the anchor and `buffer`.
fn later(anchor: &mut Anchor, buffer: &gst::BufferRef) {
    if let Some(seen) = Anchor::of(buffer) {
        if seen.later_than(anchor) {
            *anchor = seen;
        }
    }
}

/// Whether `buffer` comes after the packet numbered `last` (any does after none).
fn newer(buffer: &gst::BufferRef, last: Option<u16>) -> bool {
    let Some(last) = last else { return true };
    RTPBuffer::from_buffer_readable(buffer)
        .is_ok_and(|rtp| (rtp.seq().wrapping_sub(last) as i16) > 0)
}

fn push(pad: &gst::Pad, list: gst::BufferList) -> Result<gst::FlowSuccess, gst::FlowError> {
    PUSHING.with(|p| p.set(true));
    let flow = pad.push_list(list);
    PUSHING.with(|p| p.set(false));
    flow
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A packet of `size` payload bytes starting with the NAL header `nal`.
    fn packet(seq: u16, ts: u32, nal: u8, size: usize) -> gst::Buffer {
        let mut payload = vec![0; size];
        payload[0] = nal;
        super::super::gop::tests::packet(seq, ts, &payload)
    }

    type Pushes = Arc<Mutex<Vec<(Instant, Vec<(u16, u32, u8)>)>>>;

    /// A src pad linked to a sink pad (returned too: a link does not keep its peer alive) that
    /// records, per push, the (seq, timestamp, payload type) of the packets it got and when.
    fn recorder() -> (gst::Pad, gst::Pad, Pushes) {
        let got: Pushes = Arc::default();
        let fields = |b: &gst::BufferRef| {
            let rtp = RTPBuffer::from_buffer_readable(b).unwrap();
            (rtp.seq(), rtp.timestamp(), rtp.payload_type())
        };
        let (on_buffer, on_list) = (got.clone(), got.clone());
        let sink = gst::Pad::builder(gst::PadDirection::Sink)
            .chain_function(move |_, _, buffer| {
                let seen = vec![fields(&buffer)];
                on_buffer.lock().unwrap().push((Instant::now(), seen));
                Ok(gst::FlowSuccess::Ok)
            })
            .chain_list_function(move |_, _, list| {
                let seen = list.iter().map(fields).collect();
                on_list.lock().unwrap().push((Instant::now(), seen));
                Ok(gst::FlowSuccess::Ok)
            })
            .build();
        let src = gst::Pad::builder(gst::PadDirection::Src).build();
        src.link(&sink).unwrap();
        sink.set_active(true).unwrap();
        src.set_active(true).unwrap();
        src.push_event(gst::event::StreamStart::new("catch-up"));
        src.push_event(gst::event::Segment::new(&gst::FormattedSegment::<
            gst::ClockTime,
        >::new()));
        (src, sink, got)
    }

    #[test]
    fn a_viewer_gets_the_gop_paced_then_live_without_a_gap_or_a_repeat() {
        gst::init().unwrap();
        // The stream: its packets pass a pad with the GOP cache on it.
        let (stream, _stream_sink, _) = recorder();
        let gop = GopCache::install(&stream, super::super::keyframe::h264_key, 4 << 20);
        // One frame of two packets every 3,000 ticks, 1,200 bytes each, an IDR first.
        let frame_packet = |n: u16| {
            let nal = if n == 0 { 0x65 } else { 0x41 };
            packet(1000 + n, 90_000 + u32::from(n / 2) * 3000, nal, 1200)
        };
        for n in 0..100 {
            assert!(stream.push(frame_packet(n)).is_ok());
        }
        let (viewer, _viewer_sink, got) = recorder();
        // The viewer joins at packet 100, which the cache records before the gate sees it: 100
        // packets (120 kB, 60 ms at RATE) lead up to it. Live packets go on arriving (one frame
        // every 33 ms); what the gate admits it sends.
        let started = Instant::now();
        let mut catch_up = None;
        let mut passed = Vec::new();
        for n in 100..130u16 {
            let live = frame_packet(n);
            assert!(stream.push(live.clone()).is_ok());
            let c = catch_up.get_or_insert_with(|| {
                CatchUp::start(&viewer, &gop, &live, 102).expect("the cache leads to it")
            });
            if c.admit_buffer(&live) {
                passed.push(1000 + n);
                let _ = viewer.push(live);
            }
            if n % 2 == 1 {
                std::thread::sleep(Duration::from_millis(33));
            }
        }
        assert!(!passed.is_empty(), "never went live");
        let pushes = got.lock().unwrap().clone();
        let packets: Vec<(u16, u32, u8)> = pushes.iter().flat_map(|(_, p)| p.clone()).collect();
        // Every packet once, in order: the cached ones, those recorded while catching up, live.
        let seqs: Vec<u16> = packets.iter().map(|p| p.0).collect();
        assert_eq!(seqs, (1000..1130).collect::<Vec<u16>>());
        // Paced: no slice over SLICE_PACKETS, and the first 100 packets took about 60 ms.
        assert!(pushes.iter().all(|(_, p)| p.len() <= SLICE_PACKETS));
        let hundredth = pushes
            .iter()
            .find(|(_, p)| p.iter().any(|x| x.0 == 1099))
            .unwrap()
            .0;
        let took = hundredth - started;
        assert!(took >= Duration::from_millis(50), "{took:?}");
        // Caught-up packets carry the viewer's payload type and timestamps that rise with
        // each frame and stay below the first live one's.
        let caught: Vec<&(u16, u32, u8)> = packets.iter().filter(|p| p.0 < passed[0]).collect();
        assert!(caught.iter().all(|p| p.2 == 102));
        for pair in caught.windows(2) {
            let step = pair[1].1.wrapping_sub(pair[0].1) as i32;
            let same_frame = (pair[0].0 - 1000) / 2 == (pair[1].0 - 1000) / 2;
            assert!(if same_frame { step == 0 } else { step > 0 }, "{pair:?}");
        }
        let first_live = packets.iter().find(|p| p.0 == passed[0]).unwrap().1;
        let last_caught = caught.last().unwrap().1;
        assert!((first_live.wrapping_sub(last_caught) as i32) > 0);
        // The catch-up's frames are stamped as they leave: 100 packets (50 frames) over about
        // 60 ms span about 60 ms of timestamps, not 50 x 3,000 ticks.
        let span = caught[99].1.wrapping_sub(caught[0].1);
        assert!(span < 50 * 3000 / 4, "{span}");
    }

    #[test]
    fn a_viewer_that_leaves_ends_the_catch_up() {
        gst::init().unwrap();
        let (stream, _stream_sink, _) = recorder();
        let gop = GopCache::install(&stream, super::super::keyframe::h264_key, 4 << 20);
        for n in 0..40u16 {
            let nal = if n == 0 { 0x65 } else { 0x41 };
            assert!(stream
                .push(packet(n, u32::from(n) * 3000, nal, 1200))
                .is_ok());
        }
        let viewer = gst::Pad::builder(gst::PadDirection::Src).build();
        viewer.set_active(true).unwrap(); // not linked: every push fails
        let first = packet(39, 39 * 3000, 0x41, 1200);
        let catch_up = CatchUp::start(&viewer, &gop, &first, 96).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !catch_up.admit_buffer(&packet(40, 40 * 3000, 0x41, 1200)) {
            assert!(Instant::now() < deadline, "the catch-up never ended");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

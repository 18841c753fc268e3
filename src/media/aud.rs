//! H.264 access unit delimiters stop before the payloader.
//!
//! MPEG-TS carries an AUD in front of every H.264 access unit (FFmpeg's TS muxer adds them, x264enc
//! writes them by default), and rtph264pay sends it as a packet of its own ahead of every frame
//! but the IDRs: nearly 30 two-byte packets a second at 30 fps, each encrypted and sent to every
//! viewer, about one in eight of a 2 Mbit/s stream's video packets. Decoders do not need them (RTP marks the end of an
//! access unit, RFC 6184) and browsers send none, so a probe in front of every rtph264pay that
//! feeds viewers cuts a leading AUD off the access unit, sharing the rest of its memory.

use std::sync::atomic::{AtomicBool, Ordering};

use gstreamer as gst;
use gstreamer::prelude::*;

/// NAL unit type of an access unit delimiter.
const AUD: u8 = 9;

/// Installs the probe on the sink pad of every `rtph264pay` inside `bin`.
pub fn strip_in(bin: &gst::Bin) {
    let payloaders = bin
        .iterate_recurse()
        .into_iter()
        .flatten()
        .filter(|e| e.factory().is_some_and(|f| f.name() == "rtph264pay"));
    for payloader in payloaders {
        if let Some(pad) = payloader.static_pad("sink") {
            strip_on(&pad);
        }
    }
}

/// Cuts a leading AUD off each H.264 buffer arriving at `pad`, byte-stream or length-prefixed
/// (`avc`) as the caps say.
fn strip_on(pad: &gst::Pad) {
    let length_prefixed = AtomicBool::new(false);
    pad.add_probe(
        gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM,
        move |_, info| {
            match &mut info.data {
                Some(gst::PadProbeData::Event(event)) => {
                    if let gst::EventView::Caps(caps) = event.view() {
                        let avc = caps
                            .caps()
                            .structure(0)
                            .and_then(|s| s.get::<&str>("stream-format").ok())
                            .is_some_and(|f| f == "avc");
                        length_prefixed.store(avc, Ordering::Relaxed);
                    }
                }
                Some(gst::PadProbeData::Buffer(buffer)) => {
                    let avc = length_prefixed.load(Ordering::Relaxed);
                    let cut = buffer
                        .map_readable()
                        .ok()
                        .and_then(|map| leading_aud(&map, avc));
                    if let Some(rest) = cut.and_then(|cut| after(buffer, cut)) {
                        *buffer = rest;
                    }
                }
                _ => {}
            }
            gst::PadProbeReturn::Ok
        },
    );
}

/// `buffer` from `cut` on, sharing its memory, with its flags, metadata and timestamps: a region
/// that does not start at 0 gets no timestamps from `copy_region`, and the payloader would then
/// stamp the frame with the time of the previous one.
fn after(buffer: &gst::Buffer, cut: usize) -> Option<gst::Buffer> {
    let flags =
        gst::BufferCopyFlags::FLAGS | gst::BufferCopyFlags::META | gst::BufferCopyFlags::MEMORY;
    let mut rest = buffer.copy_region(flags, cut..).ok()?;
    let out = rest.get_mut()?;
    out.set_pts(buffer.pts());
    out.set_dts(buffer.dts());
    out.set_duration(buffer.duration());
    out.set_offset(buffer.offset());
    out.set_offset_end(buffer.offset_end());
    Some(rest)
}

/// Where the access unit goes on after a leading AUD; `None` when it does not start with one, or
/// when the AUD is all there is (the buffer then passes as it is).
fn leading_aud(data: &[u8], length_prefixed: bool) -> Option<usize> {
    if length_prefixed {
        let size = u32::from_be_bytes(data.get(..4)?.try_into().ok()?) as usize;
        let end = 4 + size;
        return (data.get(4)? & 0x1f == AUD && end < data.len()).then_some(end);
    }
    let start = match data {
        [0, 0, 1, ..] => 3,
        [0, 0, 0, 1, ..] => 4,
        _ => return None,
    };
    if data.get(start)? & 0x1f != AUD {
        return None;
    }
    // The next start code (3 bytes, or 4 with the zero before it) begins the rest.
    let next = data[start + 1..]
        .windows(3)
        .position(|w| w == [0, 0, 1])
        .map(|p| p + start + 1)?;
    Some(if next > 0 && data[next - 1] == 0 {
        next - 1
    } else {
        next
    })
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use gstreamer as gst;
    use gstreamer::prelude::*;
    use gstreamer_rtp::RTPBuffer;

    use super::{leading_aud, strip_in, AUD};

    /// Encodes 15 frames with AUDs through rtph264pay; returns the RTP timestamps (from the
    /// first) of the packets it sends that are not an AUD, and how many AUD packets it sent.
    fn payload(strip: bool) -> (Vec<u32>, usize) {
        gst::init().unwrap();
        let pipeline = gst::parse::launch(
            "videotestsrc num-buffers=15 ! video/x-raw,width=160,height=120 \
             ! x264enc aud=true key-int-max=5 ! h264parse \
             ! rtph264pay name=pay aggregate-mode=zero-latency mtu=1200 ! fakesink",
        )
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
        if strip {
            strip_in(pipeline.upcast_ref());
        }
        let seen: Arc<Mutex<(Vec<u32>, usize)>> = Arc::default();
        let count = {
            let seen = seen.clone();
            move |buffer: &gst::BufferRef| {
                let rtp = RTPBuffer::from_buffer_readable(buffer).unwrap();
                let mut seen = seen.lock().unwrap();
                if rtp.payload().unwrap()[0] & 0x1f == AUD {
                    seen.1 += 1;
                } else {
                    seen.0.push(rtp.timestamp());
                }
            }
        };
        let pay = pipeline.by_name("pay").unwrap();
        pay.static_pad("src").unwrap().add_probe(
            gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
            move |_, info| {
                match &info.data {
                    Some(gst::PadProbeData::Buffer(b)) => count(b),
                    Some(gst::PadProbeData::BufferList(l)) => l.iter().for_each(&count),
                    _ => {}
                }
                gst::PadProbeReturn::Ok
            },
        );
        pipeline.set_state(gst::State::Playing).unwrap();
        let bus = pipeline.bus().unwrap();
        let done = bus.timed_pop_filtered(
            gst::ClockTime::from_seconds(20),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        );
        pipeline.set_state(gst::State::Null).unwrap();
        assert!(matches!(
            done.map(|m| m.type_()),
            Some(gst::MessageType::Eos)
        ));
        let (stamps, auds) = std::mem::take(&mut *seen.lock().unwrap());
        let first = stamps[0];
        (stamps.iter().map(|t| t.wrapping_sub(first)).collect(), auds)
    }

    #[test]
    fn the_payloader_sends_no_aud_packet_and_the_same_frames() {
        // x264enc writes an AUD per frame; rtph264pay sends it alone before every frame but the
        // IDRs (there it goes into the STAP-A with SPS and PPS): 12 of 15 frames.
        let (with, with_auds) = payload(false);
        assert_eq!(with_auds, 12);
        let (without, without_auds) = payload(true);
        assert_eq!(without_auds, 0);
        // The same packets otherwise, each frame at its own time (3000 apart at 30 fps).
        assert_eq!(without, with);
        let last = *without.iter().max().unwrap();
        assert!((14 * 3000 - 10..=14 * 3000 + 10).contains(&last), "{last}");
    }

    #[test]
    fn a_leading_aud_is_found_in_both_formats() {
        let idr = [0x65, 0x88, 0x84];
        let mut stream = vec![0, 0, 0, 1, 0x09, 0xf0, 0, 0, 0, 1];
        stream.extend(idr);
        assert_eq!(leading_aud(&stream, false), Some(6));
        let short = [0, 0, 1, 0x09, 0x10, 0, 0, 1, 0x41, 0x9a];
        assert_eq!(leading_aud(&short, false), Some(5));
        let mut avc = vec![0, 0, 0, 2, 0x09, 0xf0, 0, 0, 0, 3];
        avc.extend(idr);
        assert_eq!(leading_aud(&avc, true), Some(6));
    }

    #[test]
    fn anything_else_passes() {
        // No AUD first, an AUD alone, a truncated or empty buffer.
        assert_eq!(leading_aud(&[0, 0, 0, 1, 0x65, 0x88], false), None);
        assert_eq!(leading_aud(&[0, 0, 0, 1, 0x09, 0xf0], false), None);
        assert_eq!(leading_aud(&[0, 0, 0, 2, 0x09, 0xf0], true), None);
        assert_eq!(leading_aud(&[0, 0], false), None);
        assert_eq!(leading_aud(&[], true), None);
        assert_eq!(leading_aud(&[0, 0, 0, 9, 0x09, 0xf0], true), None);
    }
}

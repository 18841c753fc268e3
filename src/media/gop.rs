//! Instant start on passthrough: a stream keeps the RTP packets of its current GOP (from the
//! latest key frame on, bounded in bytes), and a joining viewer gets them at once instead of
//! waiting up to a GOP for the source's next IDR (FFmpeg's sources cannot be asked for one).
//!
//! The cached frames are sent with their RTP timestamps squeezed to just below the live frame's
//! (one tick apart, still increasing, sequence numbers untouched): the viewer's decoder catches
//! up through them at once and then plays live, instead of replaying the GOP in real time and
//! staying seconds behind. Browsers decode frames whose render time has passed without waiting
//! and show the latest, so the catch-up costs decoding time, not latency.

use std::sync::Mutex;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_rtp::RTPBuffer;

/// Most bytes of RTP a stream keeps: 10 s of 2 Mbit/s plus headroom. A longer or fatter GOP is
/// not cached (its viewers wait for the next key frame, as without the cache).
pub const MAX_BYTES: usize = 4 << 20;

#[derive(Default)]
struct Gop {
    packets: Vec<gst::Buffer>,
    bytes: usize,
    /// RTP timestamp of the key frame the packets start with; `None` while nothing is cached.
    start: Option<u32>,
}

/// The current GOP of one video track.
pub struct GopCache {
    key: fn(&[u8]) -> bool,
    max_bytes: usize,
    gop: Mutex<Gop>,
}

impl GopCache {
    /// Records every packet entering `pad` (the track's tee sink, so a packet is cached before
    /// any viewer sees it).
    pub fn install(
        pad: &gst::Pad,
        key: fn(&[u8]) -> bool,
        max_bytes: usize,
    ) -> std::sync::Arc<Self> {
        let cache = std::sync::Arc::new(GopCache {
            key,
            max_bytes,
            gop: Mutex::new(Gop::default()),
        });
        let recorder = cache.clone();
        pad.add_probe(
            gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
            move |_, info| {
                match info.data.as_ref() {
                    Some(gst::PadProbeData::Buffer(buffer)) => recorder.record(buffer),
                    Some(gst::PadProbeData::BufferList(list)) => {
                        for buffer in list.iter_owned() {
                            recorder.record(&buffer);
                        }
                    }
                    _ => {}
                }
                gst::PadProbeReturn::Ok
            },
        );
        cache
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Gop> {
        self.gop.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, buffer: &gst::Buffer) {
        let Ok(rtp) = RTPBuffer::from_buffer_readable(buffer) else {
            return;
        };
        let ts = rtp.timestamp();
        // SPS, PPS and the IDR's first packet all test as key; a new GOP starts with the first
        // of them, i.e. at a key packet of a new timestamp.
        let key = rtp.payload().is_ok_and(|p| (self.key)(p));
        drop(rtp);
        let mut gop = self.lock();
        if key && gop.start != Some(ts) {
            gop.packets.clear();
            gop.bytes = 0;
            gop.start = Some(ts);
        }
        if gop.start.is_none() {
            return;
        }
        gop.bytes += buffer.size();
        if gop.bytes > self.max_bytes {
            *gop = Gop::default();
            return;
        }
        gop.packets.push(buffer.clone());
    }

    /// The cached packets that precede the packet with sequence number `next_seq` (the first
    /// one a joining viewer is about to get live), rewritten for that viewer: payload type
    /// `pt`, timestamps squeezed below `next_ts`, presentation time `pts`. `None` when the
    /// cache does not lead up to that packet (nothing cached, or it starts there).
    pub fn catch_up(
        &self,
        next_seq: u16,
        next_ts: u32,
        pts: Option<gst::ClockTime>,
        pt: u8,
    ) -> Option<gst::BufferList> {
        let packets: Vec<gst::Buffer> = {
            let gop = self.lock();
            let Some(end) = gop.packets.iter().position(|b| seq(b) == Some(next_seq)) else {
                tracing::debug!(
                    next_seq,
                    cached = gop.packets.len(),
                    first = ?gop.packets.first().and_then(seq),
                    last = ?gop.packets.last().and_then(seq),
                    "the cached GOP does not lead to the viewer's first packet"
                );
                return None;
            };
            gop.packets[..end].to_vec()
        };
        if packets.is_empty() {
            return None;
        }
        let stamps: Vec<u32> = packets.iter().filter_map(timestamp).collect();
        let stamps = squeezed(stamps.into_iter(), next_ts);
        let mut list = gst::BufferList::new_sized(packets.len());
        let list_mut = list.get_mut().expect("new list");
        for packet in packets {
            let mut packet = packet.copy();
            {
                let packet = packet.make_mut();
                packet.set_pts(pts);
                packet.set_dts(gst::ClockTime::NONE);
                if let Ok(mut rtp) = RTPBuffer::from_buffer_writable(packet) {
                    let ts = rtp.timestamp();
                    rtp.set_timestamp(stamps(ts));
                    rtp.set_payload_type(pt);
                }
            }
            list_mut.add(packet);
        }
        Some(list)
    }

    /// Packets and bytes cached now.
    #[cfg(test)]
    fn size(&self) -> (usize, usize) {
        let gop = self.lock();
        (gop.packets.len(), gop.bytes)
    }
}

fn seq(buffer: &gst::Buffer) -> Option<u16> {
    RTPBuffer::from_buffer_readable(buffer)
        .ok()
        .map(|r| r.seq())
}

fn timestamp(buffer: &gst::Buffer) -> Option<u32> {
    RTPBuffer::from_buffer_readable(buffer)
        .ok()
        .map(|r| r.timestamp())
}

/// Maps the cached frames' timestamps (in sending order) to consecutive ticks ending just below
/// `next` (a frame that `next` itself belongs to keeps its timestamp).
fn squeezed(stamps: impl Iterator<Item = u32>, next: u32) -> impl Fn(u32) -> u32 {
    let mut frames: Vec<u32> = Vec::new();
    for ts in stamps {
        if ts != next && frames.last() != Some(&ts) {
            frames.push(ts);
        }
    }
    let count = frames.len() as u32;
    move |ts| match frames.iter().position(|f| *f == ts) {
        Some(i) => next.wrapping_sub(count - i as u32),
        None => ts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gstreamer_rtp::prelude::*;

    fn packet(seq: u16, ts: u32, payload: &[u8]) -> gst::Buffer {
        let mut buffer = gst::Buffer::new_rtp_with_sizes(payload.len() as u32, 0, 0).unwrap();
        {
            let mut rtp = RTPBuffer::from_buffer_writable(buffer.get_mut().unwrap()).unwrap();
            rtp.set_seq(seq);
            rtp.set_timestamp(ts);
            rtp.set_payload_type(96);
            rtp.payload_mut().unwrap().copy_from_slice(payload);
        }
        buffer
    }

    fn cache(max: usize) -> GopCache {
        GopCache {
            key: super::super::keyframe::h264_key,
            max_bytes: max,
            gop: Mutex::new(Gop::default()),
        }
    }

    #[test]
    fn keeps_the_gop_from_its_first_key_packet() {
        gst::init().unwrap();
        let c = cache(1 << 20);
        c.record(&packet(1, 0, &[0x41, 0])); // P frame before any key: not cached
        assert_eq!(c.size().0, 0);
        c.record(&packet(2, 3000, &[0x67, 0])); // SPS
        c.record(&packet(3, 3000, &[0x68, 0])); // PPS
        c.record(&packet(4, 3000, &[0x65, 0])); // IDR, same frame: same GOP
        c.record(&packet(5, 6000, &[0x41, 0]));
        assert_eq!(c.size().0, 4);
        c.record(&packet(6, 9000, &[0x67, 0])); // the next GOP replaces it
        assert_eq!(c.size().0, 1);
    }

    #[test]
    fn a_gop_over_the_bound_is_dropped_until_the_next_key_frame() {
        gst::init().unwrap();
        let c = cache(100);
        c.record(&packet(1, 0, &[0x65; 60]));
        c.record(&packet(2, 3000, &[0x41; 60]));
        assert_eq!(c.size(), (0, 0));
        c.record(&packet(3, 6000, &[0x41; 10]));
        assert_eq!(c.size().0, 0);
        c.record(&packet(4, 9000, &[0x65; 10]));
        assert_eq!(c.size().0, 1);
    }

    #[test]
    fn catch_up_squeezes_timestamps_below_the_live_frame() {
        gst::init().unwrap();
        let c = cache(1 << 20);
        for (seq, ts, nal) in [
            (10, 1000, 0x65),
            (11, 1000, 0x41),
            (12, 4000, 0x41),
            (13, 7000, 0x41),
            (14, 7000, 0x41),
            (15, 10000, 0x41),
        ] {
            c.record(&packet(seq, ts, &[nal, 0]));
        }
        // The viewer's first live packet is the second one of the frame at 7000.
        let list = c.catch_up(14, 7000, None, 102).unwrap();
        let got: Vec<(u16, u32, u8)> = list
            .iter()
            .map(|b| {
                let rtp = RTPBuffer::from_buffer_readable(b).unwrap();
                (rtp.seq(), rtp.timestamp(), rtp.payload_type())
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (10, 6998, 102),
                (11, 6998, 102),
                (12, 6999, 102),
                (13, 7000, 102)
            ]
        );
        // Nothing to catch up on when the live packet starts the GOP, or is not cached.
        assert!(c.catch_up(10, 1000, None, 102).is_none());
        assert!(c.catch_up(99, 1000, None, 102).is_none());
    }
}

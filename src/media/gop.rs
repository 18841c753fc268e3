//! Instant start on passthrough: a stream keeps the RTP packets of its current GOP (from the
//! latest key frame on, bounded in bytes), and a joining viewer gets them at once instead of
//! waiting up to a GOP for the source's next IDR (FFmpeg's sources cannot be asked for one).
//! [`super::catchup`] sends them, faster than real time, until the viewer reaches the live edge.

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

    /// Whether the cache leads up to the packet with sequence number `seq` (the first one a
    /// joining viewer is about to get live): it holds that packet and some before it.
    pub fn leads_to(&self, seq: u16) -> bool {
        let gop = self.lock();
        let found = position(&gop.packets, seq);
        if found.is_none() {
            tracing::debug!(
                seq,
                cached = gop.packets.len(),
                first = ?gop.packets.first().and_then(seq_of),
                last = ?gop.packets.last().and_then(seq_of),
                "the cached GOP does not lead to the viewer's first packet"
            );
        }
        found.is_some_and(|i| i > 0)
    }

    /// Up to `max` cached packets that follow the one numbered `last` (from the GOP's start
    /// when `last` is `None`, or when the cache moved on to a new GOP since).
    pub fn after(&self, last: Option<u16>, max: usize) -> Vec<gst::Buffer> {
        let gop = self.lock();
        let from = last
            .and_then(|seq| position(&gop.packets, seq))
            .map_or(0, |i| i + 1);
        let end = gop.packets.len().min(from.saturating_add(max));
        gop.packets.get(from..end).unwrap_or_default().to_vec()
    }

    /// Bytes cached now, and how many bytes a second the cached GOP carries.
    pub fn load(&self) -> (usize, u64) {
        let gop = self.lock();
        let ticks = match (gop.start, gop.packets.last().and_then(timestamp)) {
            (Some(first), Some(last)) => u64::from(last.wrapping_sub(first)),
            _ => 0,
        };
        let rate = (gop.bytes as u64 * 90_000).checked_div(ticks).unwrap_or(0);
        (gop.bytes, rate)
    }

    /// Packets and bytes cached now.
    #[cfg(test)]
    fn size(&self) -> (usize, usize) {
        let gop = self.lock();
        (gop.packets.len(), gop.bytes)
    }
}

/// Where the packet numbered `seq` is: the cache holds consecutive packets (the stream's own
/// payloader numbers them), so the index follows from the first one's number; a scan is the
/// fallback.
fn position(packets: &[gst::Buffer], seq: u16) -> Option<usize> {
    let first = seq_of(packets.first()?)?;
    let guess = usize::from(seq.wrapping_sub(first));
    if packets.get(guess).and_then(seq_of) == Some(seq) {
        return Some(guess);
    }
    packets.iter().position(|b| seq_of(b) == Some(seq))
}

fn seq_of(buffer: &gst::Buffer) -> Option<u16> {
    RTPBuffer::from_buffer_readable(buffer)
        .ok()
        .map(|r| r.seq())
}

fn timestamp(buffer: &gst::Buffer) -> Option<u32> {
    RTPBuffer::from_buffer_readable(buffer)
        .ok()
        .map(|r| r.timestamp())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use gstreamer_rtp::prelude::*;

    /// An RTP packet (payload type 96) carrying `payload`.
    pub(in crate::media) fn packet(seq: u16, ts: u32, payload: &[u8]) -> gst::Buffer {
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
    fn after_walks_the_gop_and_jumps_to_a_new_one() {
        gst::init().unwrap();
        let c = cache(1 << 20);
        for (seq, ts, nal) in [
            (10, 0, 0x65),
            (11, 0, 0x41),
            (12, 3000, 0x41),
            (13, 6000, 0x41),
            (14, 9000, 0x41),
        ] {
            c.record(&packet(seq, ts, &[nal, 0]));
        }
        let seqs = |v: Vec<gst::Buffer>| v.iter().filter_map(seq_of).collect::<Vec<u16>>();
        assert!(c.leads_to(13));
        // Nothing to catch up on when the live packet starts the GOP, or is not cached.
        assert!(!c.leads_to(10));
        assert!(!c.leads_to(99));
        assert_eq!(seqs(c.after(None, 3)), vec![10, 11, 12]);
        // 5 packets of 14 bytes over 9,000 ticks (0.1 s).
        assert_eq!(c.load(), (70, 700));
        assert_eq!(seqs(c.after(Some(12), 3)), vec![13, 14]);
        assert_eq!(seqs(c.after(Some(14), 3)), Vec::<u16>::new());
        // A new GOP replaced the one being walked: it goes on from the new key frame.
        c.record(&packet(15, 12000, &[0x65, 0]));
        c.record(&packet(16, 15000, &[0x41, 0]));
        assert_eq!(seqs(c.after(Some(14), 3)), vec![15, 16]);
        assert_eq!(seqs(c.after(Some(15), 3)), vec![16]);
    }
}

//! One RTP source towards FFmpeg across publishers. Each publisher starts its own SSRC, sequence
//! numbers and timestamps; FFmpeg's RTP demuxer drops packets whose sequence number looks older
//! than the last one it saw and jumps its clock with the timestamps, so a second publisher could
//! stall a running FFmpeg for minutes. Every packet is rewritten onto one fixed SSRC with
//! sequence numbers that continue and timestamps that advance with wall-clock time in between.

use std::time::Instant;

use gstreamer_rtp::RTPBuffer;

#[derive(Debug, Clone, Copy)]
struct Last {
    seq: u16,
    ts: u32,
    at: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Mapping {
    ssrc: u32,
    seq_delta: u16,
    ts_delta: u32,
}

/// The rewriting state of one medium.
#[derive(Debug)]
pub struct Continuity {
    ssrc: u32,
    pt: u8,
    clock_rate: u32,
    last: Option<Last>,
    mapping: Option<Mapping>,
}

/// What to do with a packet.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Send it (rewritten).
    Send,
    /// Drop it: padding only, nothing FFmpeg could use (the sequence numbers close over it).
    Drop,
}

impl Continuity {
    /// Packets leave with `ssrc` and payload type `pt`.
    pub fn new(ssrc: u32, pt: u8) -> Continuity {
        Continuity {
            ssrc,
            pt,
            clock_rate: 90000,
            last: None,
            mapping: None,
        }
    }

    /// A new publisher (or codec) starts: its packets are mapped afresh after the last one sent.
    pub fn begin(&mut self, clock_rate: u32) {
        self.clock_rate = clock_rate.max(1);
        self.mapping = None;
    }

    /// Rewrites one packet in place.
    pub fn rewrite(&mut self, rtp: &mut RTPBuffer<gstreamer_rtp::rtp_buffer::Writable>) -> Verdict {
        let (ssrc, seq, ts) = (rtp.ssrc(), rtp.seq(), rtp.timestamp());
        let mapping = match self.mapping {
            Some(m) if m.ssrc == ssrc => m,
            _ => {
                let (seq_delta, ts_delta) = match self.last {
                    None => (0, 0),
                    Some(last) => {
                        let ticks =
                            (last.at.elapsed().as_secs_f64() * f64::from(self.clock_rate)) as u64;
                        let next_ts = last
                            .ts
                            .wrapping_add(ticks.clamp(1, u64::from(u32::MAX / 2)) as u32);
                        (
                            last.seq.wrapping_add(1).wrapping_sub(seq),
                            next_ts.wrapping_sub(ts),
                        )
                    }
                };
                let m = Mapping {
                    ssrc,
                    seq_delta,
                    ts_delta,
                };
                self.mapping = Some(m);
                m
            }
        };
        if rtp.payload_size() == 0 {
            // Later packets move down by one so FFmpeg sees no gap (it would wait for the hole).
            if let Some(m) = &mut self.mapping {
                m.seq_delta = m.seq_delta.wrapping_sub(1);
            }
            return Verdict::Drop;
        }
        let out_seq = seq.wrapping_add(mapping.seq_delta);
        let out_ts = ts.wrapping_add(mapping.ts_delta);
        rtp.set_ssrc(self.ssrc);
        rtp.set_seq(out_seq);
        rtp.set_timestamp(out_ts);
        rtp.set_payload_type(self.pt);
        let newer = self
            .last
            .is_none_or(|last| (out_seq.wrapping_sub(last.seq) as i16) > 0);
        if newer {
            self.last = Some(Last {
                seq: out_seq,
                ts: out_ts,
                at: Instant::now(),
            });
        }
        Verdict::Send
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gstreamer as gst;
    use gstreamer_rtp::rtp_buffer::RTPBufferExt;

    fn packet(ssrc: u32, seq: u16, ts: u32, payload: u32) -> gst::Buffer {
        gst::init().unwrap();
        let mut buffer = gst::Buffer::new_rtp_with_sizes(payload, 0, 0).unwrap();
        {
            let mut rtp = RTPBuffer::from_buffer_writable(buffer.get_mut().unwrap()).unwrap();
            rtp.set_ssrc(ssrc);
            rtp.set_seq(seq);
            rtp.set_timestamp(ts);
            rtp.set_payload_type(102);
        }
        buffer
    }

    fn run(c: &mut Continuity, buffer: &mut gst::Buffer) -> (Verdict, u32, u16, u32, u8) {
        let mut rtp = RTPBuffer::from_buffer_writable(buffer.get_mut().unwrap()).unwrap();
        let verdict = c.rewrite(&mut rtp);
        (
            verdict,
            rtp.ssrc(),
            rtp.seq(),
            rtp.timestamp(),
            rtp.payload_type(),
        )
    }

    #[test]
    fn second_publisher_continues_the_first() {
        let mut c = Continuity::new(0xabc, 96);
        c.begin(90000);
        let mut a = packet(1, 65534, 1000, 10);
        assert_eq!(run(&mut c, &mut a), (Verdict::Send, 0xabc, 65534, 1000, 96));
        let mut b = packet(1, 65535, 4000, 10);
        assert_eq!(run(&mut c, &mut b).2, 65535);
        // A new publisher whose numbers are "behind" the first one's.
        c.begin(90000);
        let mut p = packet(7, 100, 5, 10);
        let (verdict, ssrc, seq, ts, pt) = run(&mut c, &mut p);
        assert_eq!((verdict, ssrc, seq, pt), (Verdict::Send, 0xabc, 0, 96));
        assert!(
            ts.wrapping_sub(4000) >= 1 && ts.wrapping_sub(4000) < 90000,
            "{ts}"
        );
        let mut q = packet(7, 101, 3005, 10);
        let (_, _, seq2, ts2, _) = run(&mut c, &mut q);
        assert_eq!((seq2, ts2.wrapping_sub(ts)), (1, 3000));
    }

    #[test]
    fn padding_only_packets_leave_no_gap() {
        let mut c = Continuity::new(5, 97);
        c.begin(48000);
        let mut a = packet(9, 10, 0, 20);
        assert_eq!(run(&mut c, &mut a).2, 10);
        let mut pad = packet(9, 11, 0, 0);
        assert_eq!(run(&mut c, &mut pad).0, Verdict::Drop);
        let mut b = packet(9, 12, 960, 20);
        assert_eq!(run(&mut c, &mut b).2, 11);
    }
}

//! Loopback UDP ports for the RTP legs FFmpeg sends to us and for the WHIP inputs it reads.

use std::collections::BTreeSet;
use std::net::UdpSocket;
use std::sync::{Arc, Mutex};

/// The bases (and `base + 2`) of the fours handed out, shared with what they were handed to.
type Used = Arc<Mutex<BTreeSet<u16>>>;

/// A stream's ports: two RTP/RTCP pairs, video RTP on `base` and audio RTP on `base + 2`, each
/// with its RTCP on the port above (where FFmpeg's RTP muxer sends its sender reports). The
/// sockets stay bound for as long as the pair lives and are handed to the pipeline, so no other
/// program (or a second server on the same host) can take a port between allocation and use.
/// Released when dropped.
#[derive(Debug)]
pub struct PortPair {
    base: u16,
    sockets: Vec<UdpSocket>,
    owner: Used,
}

impl PortPair {
    /// The video RTP port.
    pub fn video(&self) -> u16 {
        self.base
    }

    /// The audio RTP port.
    pub fn audio(&self) -> u16 {
        self.base + 2
    }

    /// The RTCP port of an RTP port (the one above, as FFmpeg's `rtp://` sends it).
    pub fn rtcp(rtp: u16) -> u16 {
        rtp + 1
    }

    /// A new handle (dup) of the bound socket of `port` (RTP or RTCP), for a udpsrc.
    pub fn socket(&self, port: u16) -> std::io::Result<UdpSocket> {
        match port.checked_sub(self.base) {
            Some(i @ 0..=3) => self.sockets[i as usize].try_clone(),
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "port not in this pair",
            )),
        }
    }
}

impl Drop for PortPair {
    fn drop(&mut self) {
        let mut used = self.owner.lock().unwrap_or_else(|e| e.into_inner());
        used.remove(&self.base);
        used.remove(&(self.base + 2));
    }
}

/// Four adjacent ports for a WHIP input FFmpeg reads: video RTP on `base`, audio RTP on
/// `base + 2`. FFmpeg's RTP demuxer binds each RTP port and the one above it (RTCP) itself, so
/// the quad holds the four sockets only while no FFmpeg runs: [`PortQuad::release`] right before
/// FFmpeg starts, [`PortQuad::hold`] again once it exited. Another program (or a second server on
/// the same host) then never finds them free.
#[derive(Debug)]
pub struct PortQuad {
    base: u16,
    held: Mutex<Vec<UdpSocket>>,
    owner: Used,
}

impl PortQuad {
    /// Where FFmpeg receives the video RTP (RTCP on the next port).
    pub fn video(&self) -> u16 {
        self.base
    }

    /// Where FFmpeg receives the audio RTP (RTCP on the next port).
    pub fn audio(&self) -> u16 {
        self.base + 2
    }

    /// Closes the held sockets, for FFmpeg to bind the ports.
    pub fn release(&self) {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Binds the ports again (FFmpeg exited). Returns false when one is taken by someone else.
    pub fn hold(&self) -> bool {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if held.len() == 4 {
            return true;
        }
        held.clear();
        for port in self.base..self.base + 4 {
            match bind(port) {
                Ok(socket) => held.push(socket),
                Err(_) => return false,
            }
        }
        true
    }
}

impl Drop for PortQuad {
    fn drop(&mut self) {
        let mut used = self.owner.lock().unwrap_or_else(|e| e.into_inner());
        used.remove(&self.base);
        used.remove(&(self.base + 2));
    }
}

/// Hands out stream ports and WHIP quads from a configured range, skipping ports another program
/// holds.
#[derive(Debug, Clone)]
pub struct PortAllocator {
    min: u16,
    max: u16,
    used: Used,
}

impl PortAllocator {
    /// Ports are taken from `min..=max` (both inclusive), in fours starting at multiples of four.
    pub fn new(min: u16, max: u16) -> PortAllocator {
        PortAllocator {
            min,
            max,
            used: Arc::default(),
        }
    }

    /// The next free stream ports (four, see [`PortPair`]), bound and held, or `None` when the
    /// range is exhausted.
    pub fn allocate(&self) -> Option<PortPair> {
        let (base, sockets, owner) = self.four()?;
        Some(PortPair {
            base,
            sockets,
            owner,
        })
    }

    /// Four free adjacent ports for a WHIP input, bound and held, or `None`.
    pub fn allocate_quad(&self) -> Option<PortQuad> {
        let (base, sockets, owner) = self.four()?;
        Some(PortQuad {
            base,
            held: Mutex::new(sockets),
            owner,
        })
    }

    /// Four free adjacent ports (`base` a multiple of four within the range), bound, and noted
    /// as used (by `base` and `base + 2`).
    fn four(&self) -> Option<(u16, Vec<UdpSocket>, Used)> {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        let mut base = self.min.div_ceil(4).saturating_mul(4);
        while base >= self.min && base.checked_add(3).is_some_and(|top| top <= self.max) {
            let free = !used.contains(&base) && !used.contains(&(base + 2));
            if free {
                let sockets: Vec<UdpSocket> = (base..base + 4)
                    .filter_map(|port| bind(port).ok())
                    .collect();
                if sockets.len() == 4 {
                    used.insert(base);
                    used.insert(base + 2);
                    return Some((base, sockets, self.used.clone()));
                }
            }
            base = base.checked_add(4)?;
        }
        None
    }
}

fn bind(port: u16) -> std::io::Result<UdpSocket> {
    let socket = UdpSocket::bind(("127.0.0.1", port))?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_hold_rtp_and_rtcp_and_are_released() {
        let alloc = PortAllocator::new(47000, 47011);
        let a = alloc.allocate().unwrap();
        let b = alloc.allocate().unwrap();
        assert_eq!((a.video(), a.audio()), (47000, 47002));
        assert_eq!(PortPair::rtcp(a.video()), 47001);
        // All four are held: RTP and the RTCP FFmpeg sends to the port above.
        for port in 47000..47004 {
            assert!(a.socket(port).is_ok());
            assert!(UdpSocket::bind(("127.0.0.1", port)).is_err());
        }
        assert!(a.socket(47004).is_err());
        assert_ne!(a.video(), b.video());
        let _held = UdpSocket::bind(("127.0.0.1", 47009)).unwrap();
        assert!(
            alloc.allocate().is_none(),
            "47009 is taken by another socket"
        );
        let freed = a.video();
        drop(a);
        assert_eq!(alloc.allocate().unwrap().video(), freed);
    }

    #[test]
    fn quads_do_not_overlap_pairs_and_are_released() {
        let alloc = PortAllocator::new(47100, 47115);
        let pair = alloc.allocate().unwrap();
        assert_eq!(pair.video(), 47100);
        let quad = alloc.allocate_quad().unwrap();
        assert_eq!((quad.video(), quad.audio()), (47104, 47106));
        // Neither takes the other's ports.
        let second = alloc.allocate().unwrap();
        assert_eq!(second.video(), 47108);
        assert_eq!(alloc.allocate_quad().unwrap().video(), 47112);
        // Held sockets keep a second allocator (another server) off the quad until released.
        let other = PortAllocator::new(47104, 47107);
        assert!(other.allocate_quad().is_none());
        quad.release();
        let theirs = other.allocate_quad().unwrap();
        assert!(!quad.hold(), "the ports went to the other allocator");
        drop(theirs);
        assert!(quad.hold());
        drop(quad);
        assert_eq!(alloc.allocate_quad().unwrap().video(), 47104);
        drop((pair, second));
    }
}

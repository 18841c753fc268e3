//! Loopback UDP port pairs for the RTP legs FFmpeg sends to us.

use std::collections::BTreeSet;
use std::net::UdpSocket;
use std::sync::{Arc, Mutex};

/// An adjacent pair: video on `base`, audio on `base + 1`. The sockets stay bound for as long as
/// the pair lives and are handed to the pipeline, so no other program (or a second server on the
/// same host) can take the port between allocation and use. Released when dropped.
#[derive(Debug)]
pub struct PortPair {
    base: u16,
    sockets: [UdpSocket; 2],
    owner: Arc<Mutex<BTreeSet<u16>>>,
}

impl PortPair {
    /// The video port.
    pub fn video(&self) -> u16 {
        self.base
    }

    /// The audio port.
    pub fn audio(&self) -> u16 {
        self.base + 1
    }

    /// A new handle (dup) of the bound socket of `port`, for a udpsrc.
    pub fn socket(&self, port: u16) -> std::io::Result<UdpSocket> {
        match port.checked_sub(self.base) {
            Some(i @ (0 | 1)) => self.sockets[i as usize].try_clone(),
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "port not in this pair",
            )),
        }
    }
}

impl Drop for PortPair {
    fn drop(&mut self) {
        self.owner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.base);
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
    owner: Arc<Mutex<BTreeSet<u16>>>,
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

/// Hands out pairs from a configured range, skipping ports another program holds.
#[derive(Debug, Clone)]
pub struct PortAllocator {
    min: u16,
    max: u16,
    used: Arc<Mutex<BTreeSet<u16>>>,
}

impl PortAllocator {
    /// Pairs are taken from `min..=max` (both inclusive; `min` should be even).
    pub fn new(min: u16, max: u16) -> PortAllocator {
        PortAllocator {
            min,
            max,
            used: Arc::default(),
        }
    }

    /// The next free pair, or `None` when the range is exhausted.
    pub fn allocate(&self) -> Option<PortPair> {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        let mut base = self.min;
        while base < self.max {
            if !used.contains(&base) {
                if let (Ok(video), Ok(audio)) = (bind(base), bind(base + 1)) {
                    used.insert(base);
                    return Some(PortPair {
                        base,
                        sockets: [video, audio],
                        owner: self.used.clone(),
                    });
                }
            }
            base = base.saturating_add(2);
        }
        None
    }
}

impl PortAllocator {
    /// Four free adjacent ports (`base` a multiple of four within the range), bound and held, or
    /// `None`.
    pub fn allocate_quad(&self) -> Option<PortQuad> {
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
                    return Some(PortQuad {
                        base,
                        held: Mutex::new(sockets),
                        owner: self.used.clone(),
                    });
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
    fn pairs_are_adjacent_distinct_and_released() {
        let alloc = PortAllocator::new(47000, 47005);
        let a = alloc.allocate().unwrap();
        let b = alloc.allocate().unwrap();
        assert_eq!(a.audio(), a.video() + 1);
        assert_ne!(a.video(), b.video());
        let _held = UdpSocket::bind(("127.0.0.1", 47004)).unwrap();
        assert!(
            alloc.allocate().is_none(),
            "47004 is taken by another socket"
        );
        let freed = a.video();
        drop(a);
        assert_eq!(alloc.allocate().unwrap().video(), freed);
    }

    #[test]
    fn quads_do_not_overlap_pairs_and_are_released() {
        let alloc = PortAllocator::new(47100, 47111);
        let pair = alloc.allocate().unwrap();
        assert_eq!(pair.video(), 47100);
        let quad = alloc.allocate_quad().unwrap();
        assert_eq!((quad.video(), quad.audio()), (47104, 47106));
        // The pair allocator skips both halves of the quad.
        assert_eq!(alloc.allocate().unwrap().video(), 47102);
        assert_eq!(alloc.allocate_quad().unwrap().video(), 47108);
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
    }
}

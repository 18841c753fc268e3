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
}

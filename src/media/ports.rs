//! Loopback UDP port pairs for the RTP legs FFmpeg sends to us.

use std::collections::BTreeSet;
use std::net::UdpSocket;
use std::sync::{Arc, Mutex};

/// An adjacent pair: video on `base`, audio on `base + 1`. Released when dropped.
#[derive(Debug)]
pub struct PortPair {
    base: u16,
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
            // Both ports must be bindable now; udpsrc binds them a moment later.
            if !used.contains(&base) && free(base) && free(base + 1) {
                used.insert(base);
                return Some(PortPair {
                    base,
                    owner: self.used.clone(),
                });
            }
            base = base.saturating_add(2);
        }
        None
    }
}

fn free(port: u16) -> bool {
    UdpSocket::bind(("127.0.0.1", port)).is_ok()
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

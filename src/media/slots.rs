//! Viewer caps as reservations that release themselves.
//!
//! A negotiation takes its slots before it starts, atomically (check and increment are one
//! compare-and-swap, so N concurrent POSTs against a cap of C get exactly C slots), and a slot
//! goes back when its [`Slot`] is dropped: when the viewer is removed, when negotiation fails,
//! and when it panics (unwinding drops it too), so no error path has to remember to release it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A counter with a cap.
#[derive(Debug)]
pub struct Slots {
    used: AtomicUsize,
    max: usize,
}

impl Slots {
    /// A cap of `max` slots.
    pub fn new(max: usize) -> Arc<Slots> {
        Arc::new(Slots {
            used: AtomicUsize::new(0),
            max,
        })
    }

    /// One slot, or `None` when all are taken.
    pub fn try_reserve(self: &Arc<Self>) -> Option<Slot> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(self.clone()))
    }

    /// Slots taken now.
    #[cfg(test)]
    fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

/// One reserved slot; dropping it gives it back.
#[derive(Debug)]
pub struct Slot(Arc<Slots>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.used.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_reservations_never_pass_the_cap() {
        let slots = Slots::new(3);
        let barrier = Arc::new(std::sync::Barrier::new(12));
        let handles: Vec<_> = (0..12)
            .map(|_| {
                let (slots, barrier) = (slots.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    slots.try_reserve()
                })
            })
            .collect();
        let taken: Vec<Slot> = handles
            .into_iter()
            .filter_map(|h| h.join().unwrap())
            .collect();
        assert_eq!(taken.len(), 3);
        assert_eq!(slots.used(), 3);
        drop(taken);
        assert_eq!(slots.used(), 0);
    }

    #[test]
    fn a_panic_gives_the_slot_back() {
        let slots = Slots::new(1);
        let inside = slots.clone();
        let result = std::panic::catch_unwind(move || {
            let _slot = inside.try_reserve().expect("a free slot");
            panic!("negotiation blew up");
        });
        assert!(result.is_err());
        assert_eq!(slots.used(), 0);
        assert!(slots.try_reserve().is_some());
    }
}

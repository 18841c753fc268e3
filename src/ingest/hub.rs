//! One publisher, many readers per name: the fan-out both servers share.
//!
//! A reader gets a bounded queue; a reader that lets it fill is dropped (its sender goes away, so
//! its task sees the end of the stream and closes the connection) instead of slowing the
//! publisher or the other readers. When the publisher goes, its channel goes with it and every
//! reader's stream ends: readers reconnect as FFmpeg's reconnect rules say, as in Core.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;

/// Messages a reader may have queued before it counts as too slow. At 2 Mbit/s in 1316-byte SRT
/// payloads or per-frame RTMP messages this is several seconds of media.
pub const READER_QUEUE: usize = 2048;

/// The channels of one server. `C` is what a new reader needs before the live messages (RTMP:
/// metadata, sequence headers and the current GOP; SRT: nothing).
pub struct Hub<M, C> {
    channels: Mutex<HashMap<String, Channel<M, C>>>,
}

struct Channel<M, C> {
    publisher: u64,
    readers: Vec<(u64, mpsc::Sender<M>)>,
    cache: C,
}

/// A reader's start: what the channel had cached and the live queue.
pub struct Subscription<M, C> {
    pub cache: C,
    pub queue: mpsc::Receiver<M>,
}

impl<M: Clone, C: Default + Clone> Hub<M, C> {
    pub fn new() -> Arc<Self> {
        Arc::new(Hub {
            channels: Mutex::new(HashMap::new()),
        })
    }

    // A panic elsewhere while the lock was held leaves consistent data (every change is one
    // insert/remove/push), so a poisoned lock is taken over rather than spreading the panic.
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Channel<M, C>>> {
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claims `name` for publisher `id`; `None` while another publisher holds it.
    pub fn publish(self: &Arc<Self>, name: &str, id: u64) -> Option<Publisher<M, C>> {
        let mut channels = self.lock();
        if channels.contains_key(name) {
            return None;
        }
        channels.insert(
            name.to_string(),
            Channel {
                publisher: id,
                readers: Vec::new(),
                cache: C::default(),
            },
        );
        Some(Publisher {
            hub: self.clone(),
            name: name.to_string(),
            id,
        })
    }

    /// Whether `name` has a publisher now.
    pub fn is_live(&self, name: &str) -> bool {
        self.lock().contains_key(name)
    }

    /// Adds reader `id` to a live `name`.
    pub fn subscribe(&self, name: &str, id: u64) -> Option<Subscription<M, C>> {
        let mut channels = self.lock();
        let channel = channels.get_mut(name)?;
        let (tx, rx) = mpsc::channel(READER_QUEUE);
        channel.readers.push((id, tx));
        Some(Subscription {
            cache: channel.cache.clone(),
            queue: rx,
        })
    }

    /// Live names with their publisher's id and their readers' ids.
    pub fn channels(&self) -> Vec<(String, u64, Vec<u64>)> {
        let mut list: Vec<_> = self
            .lock()
            .iter()
            .map(|(name, c)| {
                let readers = c.readers.iter().map(|(id, _)| *id).collect();
                (name.clone(), c.publisher, readers)
            })
            .collect();
        list.sort();
        list
    }
}

/// A publisher's hold on its name; dropping it (also on a panic) ends the channel.
pub struct Publisher<M: Clone, C: Default + Clone> {
    hub: Arc<Hub<M, C>>,
    name: String,
    id: u64,
}

impl<M: Clone, C: Default + Clone> Publisher<M, C> {
    /// Updates the cache, then queues `message` for every reader; returns the ids of the readers
    /// dropped for being too slow.
    pub fn send(&self, message: M, update: impl FnOnce(&mut C, &M)) -> Vec<u64> {
        let mut channels = self.hub.lock();
        let Some(channel) = channels.get_mut(&self.name) else {
            return Vec::new();
        };
        update(&mut channel.cache, &message);
        let mut dropped = Vec::new();
        channel
            .readers
            .retain(|(id, tx)| match tx.try_send(message.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    dropped.push(*id);
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            });
        dropped
    }
}

impl<M: Clone, C: Default + Clone> Drop for Publisher<M, C> {
    fn drop(&mut self) {
        let mut channels = self.hub.lock();
        if channels
            .get(&self.name)
            .is_some_and(|c| c.publisher == self.id)
        {
            channels.remove(&self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_publisher_many_readers_slow_ones_dropped() {
        let hub = Hub::<u32, Vec<u32>>::new();
        let publisher = hub.publish("cam", 1).unwrap();
        assert!(hub.publish("cam", 2).is_none(), "second publisher refused");
        publisher.send(7, |cache, m| cache.push(*m));
        let mut fast = hub.subscribe("cam", 10).unwrap();
        let slow = hub.subscribe("cam", 11).unwrap();
        assert_eq!(fast.cache, vec![7]);
        for i in 0..READER_QUEUE as u32 {
            assert!(publisher.send(i, |_, _| {}).is_empty());
            assert_eq!(fast.queue.try_recv().unwrap(), i);
        }
        assert_eq!(publisher.send(0, |_, _| {}), vec![11]);
        assert_eq!(hub.channels(), vec![("cam".into(), 1, vec![10])]);
        drop(slow);
        drop(publisher);
        assert!(!hub.is_live("cam"));
        assert_eq!(fast.queue.try_recv().unwrap(), 0);
        assert!(
            fast.queue.try_recv().is_err(),
            "the reader's stream ends with the publisher"
        );
        assert!(hub.subscribe("cam", 12).is_none());
    }
}

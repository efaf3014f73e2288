//! Bounded links between pipeline threads, each with an explicit policy when full:
//!
//! * [`Policy::KeepLatest`] (live capture): the oldest queued item is dropped to make room,
//!   and the drop is counted;
//! * [`Policy::Block`] (batch sources, results): the sender waits.
//!
//! A link closes when its sender is dropped; the receiver then drains what is queued and
//! sees the end. This is how shutdown flows downstream.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use crossbeam_channel::{Receiver, Sender, TrySendError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    KeepLatest,
    Block,
}

pub struct LinkSender<T> {
    tx: Sender<T>,
    /// Only used by KeepLatest, to take the oldest item out.
    evict: Receiver<T>,
    policy: Policy,
    dropped: Arc<AtomicU64>,
    consumer: Weak<()>,
}

/// The consuming end; the link counts as closed for the sender once this is dropped.
pub struct LinkReceiver<T> {
    rx: Receiver<T>,
    _alive: Arc<()>,
}

impl<T> LinkReceiver<T> {
    /// The next item; `None` once the sender is gone and the queue is drained.
    pub fn recv(&self) -> Option<T> {
        self.rx.recv().ok()
    }

    pub fn iter(&self) -> impl Iterator<Item = T> + '_ {
        self.rx.iter()
    }
}

/// Creates a link of `capacity` items.
pub fn link<T>(capacity: usize, policy: Policy) -> (LinkSender<T>, LinkReceiver<T>, Arc<AtomicU64>) {
    let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
    let dropped = Arc::new(AtomicU64::new(0));
    let alive = Arc::new(());
    let sender =
        LinkSender { tx, evict: rx.clone(), policy, dropped: dropped.clone(), consumer: Arc::downgrade(&alive) };
    (sender, LinkReceiver { rx, _alive: alive }, dropped)
}

/// The receiving side is gone.
#[derive(Debug, PartialEq, Eq)]
pub struct Closed;

impl<T> LinkSender<T> {
    pub fn send(&self, mut item: T) -> Result<(), Closed> {
        match self.policy {
            // wait in slices: the eviction handle would keep a plain send waiting forever
            // after the consumer is gone
            Policy::Block => loop {
                if !self.is_open() {
                    return Err(Closed);
                }
                match self.tx.send_timeout(item, std::time::Duration::from_millis(100)) {
                    Ok(()) => return Ok(()),
                    Err(crossbeam_channel::SendTimeoutError::Timeout(back)) => item = back,
                    Err(crossbeam_channel::SendTimeoutError::Disconnected(_)) => return Err(Closed),
                }
            },
            // the sender's own eviction handle keeps the channel connected: check the consumer
            Policy::KeepLatest if !self.is_open() => Err(Closed),
            Policy::KeepLatest => loop {
                match self.tx.try_send(item) {
                    Ok(()) => return Ok(()),
                    Err(TrySendError::Disconnected(_)) => return Err(Closed),
                    Err(TrySendError::Full(back)) => {
                        item = back;
                        if self.evict.try_recv().is_ok() {
                            self.dropped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            },
        }
    }

    /// Whether the consumer still exists (the sender's own eviction handle does not count).
    pub fn is_open(&self) -> bool {
        self.consumer.strong_count() > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_latest_drops_the_oldest_and_counts() {
        let (tx, rx, dropped) = link(2, Policy::KeepLatest);
        for i in 0..5 {
            tx.send(i).unwrap();
        }
        assert_eq!(dropped.load(Ordering::Relaxed), 3);
        drop(tx);
        assert_eq!(rx.iter().collect::<Vec<_>>(), vec![3, 4]);
    }

    #[test]
    fn block_loses_nothing_and_closing_ends_the_stream() {
        let (tx, rx, dropped) = link(1, Policy::Block);
        let producer = std::thread::spawn(move || {
            for i in 0..100 {
                tx.send(i).unwrap();
            }
        });
        let got: Vec<i32> = rx.iter().collect();
        producer.join().unwrap();
        assert_eq!(got, (0..100).collect::<Vec<_>>());
        assert_eq!(dropped.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_blocked_sender_is_released_when_the_consumer_goes() {
        let (tx, rx, _) = link::<u8>(1, Policy::Block);
        tx.send(0).unwrap();
        let waiter = std::thread::spawn(move || tx.send(1));
        std::thread::sleep(std::time::Duration::from_millis(50));
        drop(rx);
        assert_eq!(waiter.join().unwrap(), Err(Closed));
    }

    #[test]
    fn a_gone_consumer_is_reported() {
        for policy in [Policy::Block, Policy::KeepLatest] {
            let (tx, rx, _) = link::<u8>(1, policy);
            assert!(tx.is_open());
            drop(rx);
            assert!(!tx.is_open());
            assert_eq!(tx.send(1), Err(Closed), "{policy:?}");
        }
    }
}

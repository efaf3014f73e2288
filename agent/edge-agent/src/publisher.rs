//! The publisher task: moves results from the pipelines to the broker, through the disk
//! outbox whenever the broker cannot take them.
//!
//! Policy, in order:
//! 1. A live result is handed to the MQTT client at once when the broker is connected and the
//!    client's queue has room; otherwise it is appended to the outbox. Nothing is dropped here.
//!    Retained messages are state (the stats, which model and head serve): only the newest per
//!    topic is kept, in memory, and it goes first once the broker is back. (They had been
//!    dropped when the broker was away, the start-up announcements of the active models with
//!    them whenever they beat the first connection.)
//! 2. While connected, the backlog is replayed oldest first, one message at a time, only when
//!    no live result is waiting: live results keep flowing and the backlog fills the gaps.
//!    Consumers restore order with the per-pipeline `seq`.
//! 3. When the pipelines are done, the backlog is still replayed while connected, for at most
//!    `drain_for`; what remains stays on disk for the next start.
//!
//! 4. Messages the client gives back after a failed connection (`returned`: not acknowledged,
//!    or still queued) are results to spill, or retained state that waits again unless newer
//!    state for its topic already does. At stop, [`Publisher::run`] hands the outbox back, and
//!    the caller adds what the closed connection returned: nothing waits in memory only.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::mqtt::{Connection, Outgoing};
use crate::outbox::{Outbox, OutboxStats};

/// How long to wait before trying again when the client's queue is full.
const BACKOFF: Duration = Duration::from_millis(50);

/// How often an `interval` outbox is checked for a due sync.
const SYNC_TICK: Duration = Duration::from_millis(100);

/// A segment being replayed: its id, its messages, the next one to send.
struct Replay {
    id: u64,
    messages: Vec<Outgoing>,
    next: usize,
}

pub struct Publisher {
    conn: Arc<Connection>,
    outbox: Outbox,
    replay: Option<Replay>,
    /// Retained state not handed to the client yet: the newest per topic.
    retained: BTreeMap<String, Outgoing>,
    /// Shared with the health report.
    stats: Arc<std::sync::Mutex<OutboxStats>>,
    /// Messages the client gave back when a connection failed.
    returned: mpsc::UnboundedReceiver<Outgoing>,
}

impl Publisher {
    pub fn new(conn: Arc<Connection>, outbox: Outbox, returned: mpsc::UnboundedReceiver<Outgoing>) -> Publisher {
        let stats = Arc::new(std::sync::Mutex::new(outbox.stats()));
        Publisher { conn, outbox, replay: None, retained: BTreeMap::new(), stats, returned }
    }

    /// The outbox counters, updated as the publisher works.
    pub fn stats_handle(&self) -> Arc<std::sync::Mutex<OutboxStats>> {
        self.stats.clone()
    }

    fn update_stats(&self) {
        // a plain mutex: held only to copy a small struct, never across an await
        *self.stats.lock().unwrap_or_else(|p| p.into_inner()) = self.outbox.stats();
    }

    fn spill(&mut self, msg: &Outgoing) {
        if let Err(e) = self.outbox.push(msg) {
            tracing::error!(error = %e, topic = %msg.topic, "cannot write to the outbox; result lost");
        }
        self.update_stats();
    }

    /// A message the client gave back: a result goes to the outbox; retained state waits
    /// again, unless newer state for its topic already waits.
    fn take_back(&mut self, msg: Outgoing) {
        if msg.retain {
            self.retained.entry(msg.topic.clone()).or_insert(msg);
        } else {
            self.spill(&msg);
        }
    }

    fn has_backlog(&self) -> bool {
        self.replay.is_some() || !self.outbox.is_empty()
    }

    /// A live message: to the client if the broker is up and the client's queue has room;
    /// else a result goes to the outbox and retained state waits, replacing older state for
    /// its topic.
    fn publish(&mut self, msg: Outgoing, up: bool) {
        if msg.retain {
            // what waits for this topic is older: this one replaces it, sent or not
            self.retained.remove(&msg.topic);
        }
        if up && self.conn.try_publish(&msg).is_ok() {
            return;
        }
        if msg.retain {
            self.retained.insert(msg.topic.clone(), msg);
        } else {
            self.spill(&msg);
        }
    }

    /// Hands the waiting retained state to the client. Returns false when its queue filled
    /// first, so the caller waits before trying again.
    fn send_retained(&mut self) -> bool {
        while let Some((topic, msg)) = self.retained.pop_first() {
            if self.conn.try_publish(&msg).is_err() {
                self.retained.insert(topic, msg);
                return false;
            }
        }
        true
    }

    /// Hands one backlog message to the client. Returns false when it could not (queue full,
    /// or a disk error), so the caller waits before trying again.
    fn replay_one(&mut self) -> bool {
        if self.replay.is_none() {
            match self.outbox.take_oldest() {
                Ok(Some((id, messages))) => self.replay = Some(Replay { id, messages, next: 0 }),
                Ok(None) => return true,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the outbox");
                    return false;
                }
            }
        }
        let Some(r) = &mut self.replay else { return true };
        if r.next < r.messages.len() {
            if self.conn.try_publish(&r.messages[r.next]).is_err() {
                return false;
            }
            r.next += 1;
        }
        if r.next >= r.messages.len() {
            let id = r.id;
            self.replay = None;
            if let Err(e) = self.outbox.ack(id) {
                tracing::error!(error = %e, "cannot delete a replayed outbox segment");
            }
            self.update_stats();
        }
        true
    }

    /// Runs until `results` closes and the backlog is replayed (or `drain_for` passes); returns
    /// the outbox, for what the connection gives back when it is closed.
    pub async fn run(mut self, mut results: mpsc::Receiver<Outgoing>, drain_for: Duration) -> Outbox {
        let mut connected = self.conn.connected();
        let mut open = true;
        let mut drain_deadline: Option<Instant> = None;
        // `outbox.sync = "interval"` syncs on this tick when nothing else spills
        let mut sync_tick = tokio::time::interval(SYNC_TICK);
        sync_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let up = *connected.borrow_and_update();
            if !open {
                let past = drain_deadline.is_some_and(|d| Instant::now() >= d);
                if (!self.has_backlog() && self.retained.is_empty()) || past {
                    break;
                }
            }
            let replaying = up && self.has_backlog();
            tokio::select! {
                biased;
                msg = results.recv(), if open => match msg {
                    Some(msg) => self.publish(msg, up),
                    None => {
                        open = false;
                        drain_deadline = Some(Instant::now() + drain_for);
                    }
                },
                Some(msg) = self.returned.recv() => self.take_back(msg),
                _ = std::future::ready(()), if up && !self.retained.is_empty() => {
                    if !self.send_retained() {
                        tokio::time::sleep(BACKOFF).await;
                    }
                }
                _ = std::future::ready(()), if replaying => {
                    if !self.replay_one() {
                        tokio::time::sleep(BACKOFF).await;
                    }
                }
                changed = connected.changed() => {
                    if changed.is_err() {
                        break; // the connection's driver is gone
                    }
                }
                _ = sync_tick.tick() => {
                    if let Err(e) = self.outbox.flush_due() {
                        tracing::error!(error = %e, "cannot sync the outbox");
                    }
                    self.update_stats();
                }
                _ = tokio::time::sleep(Duration::from_millis(200)), if !open => {}
            }
        }
        while let Ok(msg) = self.returned.try_recv() {
            self.take_back(msg);
        }
        if !self.retained.is_empty() {
            tracing::info!(topics = ?self.retained.keys().collect::<Vec<_>>(), "stopping before the broker had this retained state");
        }
        if self.has_backlog() {
            tracing::warn!(
                messages = self.outbox.stats().messages,
                "stopping with results in the outbox; they are sent after the next start"
            );
        }
        self.update_stats();
        self.outbox
    }
}

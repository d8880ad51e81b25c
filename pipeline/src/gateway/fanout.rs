//! The gateway's fan-out: one bounded queue per client, so a slow client costs only its own
//! buffer. Updates are shared (`Arc<str>`), so memory is bounded by clients × buffer
//! pointers plus the updates still queued somewhere.
//!
//! A client whose queue is full when an update arrives is handled by the [`SlowClient`]
//! policy: `drop_oldest` drops its oldest update and tells it how many it missed (an SSE
//! comment `lagged N`), `disconnect` ends its stream with the reason. When *every* client's
//! queue is full, nothing is dropped: [`Fanout::all_full`] tells the Kafka consumer to
//! pause its partitions until a client makes room ([`Fanout::wait_for_room`]).
//!
//! On shutdown each stream is drained: what was queued is still sent, then it ends.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// What happens to a client that falls a whole buffer behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlowClient {
    /// Drop its oldest update; it is told how many it missed (`lagged N`).
    #[default]
    DropOldest,
    /// End its stream with the reason.
    Disconnect,
}

impl SlowClient {
    /// The name a scenario writes.
    pub const fn name(self) -> &'static str {
        match self {
            Self::DropOldest => "drop_oldest",
            Self::Disconnect => "disconnect",
        }
    }
}

/// Per-client buffering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FanoutConfig {
    /// Updates a client may have queued.
    pub buffer: usize,
    pub policy: SlowClient,
    /// Updates kept for long-poll clients (see [`crate::gateway::longpoll`]).
    pub retain: usize,
}

impl Default for FanoutConfig {
    fn default() -> Self {
        Self { buffer: 4096, policy: SlowClient::DropOldest, retain: 10_000 }
    }
}

/// What the fan-out has done, readable while it runs.
#[derive(Debug, Default)]
pub struct FanoutStats {
    /// Updates dropped from slow clients' queues (`drop_oldest`).
    pub dropped: AtomicU64,
    /// Clients disconnected for falling behind (`disconnect`).
    pub disconnected: AtomicU64,
    /// Times the consumer paused because every client's queue was full.
    pub pauses: AtomicU64,
    /// Time spent paused, ns.
    pub paused_ns: AtomicU64,
    /// The most clients connected at once.
    pub peak_clients: AtomicU64,
}

#[derive(Debug)]
struct Client {
    session: Option<u64>,
    queue: Mutex<VecDeque<Arc<str>>>,
    /// Updates dropped since the client last read.
    missed: AtomicU64,
    wake: Notify,
    /// Disconnected by the policy.
    cut: AtomicBool,
    /// The client went away (its subscription was dropped).
    gone: AtomicBool,
}

/// Every connected client's queue.
#[derive(Debug)]
pub struct Fanout {
    clients: Mutex<Vec<Arc<Client>>>,
    config: FanoutConfig,
    room: Notify,
    shutdown: CancellationToken,
    /// Every live client's queue was full after the last push (see [`Fanout::filled`]).
    filled: AtomicBool,
    pub stats: FanoutStats,
}

/// What a client's stream yields next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Update(Arc<str>),
    /// Updates dropped before this point.
    Lagged(u64),
    /// The policy cut the client off; the stream ends after this.
    Disconnected(String),
}

impl Fanout {
    /// A fan-out whose streams drain and end at `shutdown`.
    pub fn new(config: FanoutConfig, shutdown: CancellationToken) -> Self {
        let config = FanoutConfig { buffer: config.buffer.max(1), ..config };
        Self {
            clients: Mutex::default(),
            config,
            room: Notify::new(),
            shutdown,
            filled: AtomicBool::new(false),
            stats: FanoutStats::default(),
        }
    }

    fn clients(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Client>>> {
        self.clients.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a client of one session's updates (all of them when `None`).
    pub fn subscribe(self: &Arc<Self>, session: Option<u64>) -> Subscription {
        let client = Arc::new(Client {
            session,
            queue: Mutex::new(VecDeque::new()),
            missed: AtomicU64::new(0),
            wake: Notify::new(),
            cut: AtomicBool::new(false),
            gone: AtomicBool::new(false),
        });
        let mut clients = self.clients();
        clients.push(Arc::clone(&client));
        self.stats.peak_clients.fetch_max(clients.len() as u64, Ordering::Relaxed);
        Subscription { fanout: Arc::clone(self), client, ended: false }
    }

    /// Clients connected now.
    pub fn subscribers(&self) -> usize {
        self.clients().iter().filter(|c| !c.gone.load(Ordering::Relaxed)).count()
    }

    /// Queues `data` for every client of `session`; returns how many got it. In the same
    /// pass, notes whether every live queue is full afterwards ([`Fanout::filled`]).
    pub fn push(&self, session: u64, data: &Arc<str>) -> usize {
        let mut clients = self.clients();
        clients.retain(|c| !c.gone.load(Ordering::Relaxed) && !c.cut.load(Ordering::Relaxed));
        let mut got = 0;
        let mut all_full = !clients.is_empty();
        for c in clients.iter() {
            let mut q = c.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if c.session.is_some_and(|s| s != session) {
                all_full &= q.len() >= self.config.buffer;
                continue;
            }
            if q.len() >= self.config.buffer {
                match self.config.policy {
                    SlowClient::DropOldest => {
                        q.pop_front();
                        c.missed.fetch_add(1, Ordering::Relaxed);
                        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    SlowClient::Disconnect => {
                        q.clear();
                        all_full = false; // it is gone; the rest decide
                        c.cut.store(true, Ordering::Relaxed);
                        self.stats.disconnected.fetch_add(1, Ordering::Relaxed);
                        drop(q);
                        c.wake.notify_one();
                        continue;
                    }
                }
            }
            q.push_back(Arc::clone(data));
            all_full &= q.len() >= self.config.buffer;
            drop(q);
            c.wake.notify_one();
            got += 1;
        }
        self.filled.store(all_full, Ordering::Relaxed);
        got
    }

    /// Whether every live queue was full after the last push: a cheap hint, read before
    /// each push, that [`Fanout::all_full`] (which looks at every queue) is worth asking.
    pub fn filled(&self) -> bool {
        self.filled.load(Ordering::Relaxed)
    }

    /// Whether there are clients and every one's queue is full: the consumer should pause
    /// rather than drop.
    pub fn all_full(&self) -> bool {
        let clients = self.clients();
        let mut live = clients.iter().filter(|c| !c.gone.load(Ordering::Relaxed) && !c.cut.load(Ordering::Relaxed));
        let mut any = false;
        let full = live.all(|c| {
            any = true;
            c.queue.lock().is_ok_and(|q| q.len() >= self.config.buffer)
        });
        any && full
    }

    /// Returns once a client has taken an update (or gone), or at shutdown.
    pub async fn wait_for_room(&self) {
        tokio::select! {
            () = self.room.notified() => {}
            () = self.shutdown.cancelled() => {}
        }
    }
}

/// One client's stream of updates; dropping it unregisters the client.
#[derive(Debug)]
pub struct Subscription {
    fanout: Arc<Fanout>,
    client: Arc<Client>,
    ended: bool,
}

impl Subscription {
    /// The next item: a gap marker first if updates were dropped, then queued updates in
    /// order; `None` once the stream has ended (cut off, or shutdown with nothing queued).
    pub async fn next(&mut self) -> Option<Item> {
        loop {
            if self.ended {
                return None;
            }
            let c = &self.client;
            if c.cut.load(Ordering::Relaxed) {
                self.ended = true;
                let buffer = self.fanout.config.buffer;
                return Some(Item::Disconnected(format!("disconnected: fell {buffer} updates behind")));
            }
            let missed = c.missed.swap(0, Ordering::Relaxed);
            if missed > 0 {
                return Some(Item::Lagged(missed));
            }
            let popped = c.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop_front();
            if let Some(data) = popped {
                self.fanout.room.notify_one();
                return Some(Item::Update(data));
            }
            if self.fanout.shutdown.is_cancelled() {
                self.ended = true; // drained
                return None;
            }
            tokio::select! {
                () = c.wake.notified() => {}
                () = self.fanout.shutdown.cancelled() => {}
            }
        }
    }

    /// The subscription as a stream.
    pub fn into_stream(self) -> impl futures::Stream<Item = Item> + Send {
        futures::stream::unfold(self, |mut s| async move { s.next().await.map(|i| (i, s)) })
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.client.gone.store(true, Ordering::Relaxed);
        self.fanout.room.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fanout(buffer: usize, policy: SlowClient) -> Arc<Fanout> {
        Arc::new(Fanout::new(FanoutConfig { buffer, policy, retain: 1 }, CancellationToken::new()))
    }

    fn data(n: u64) -> Arc<str> {
        Arc::from(n.to_string())
    }

    #[tokio::test]
    async fn a_slow_client_loses_its_oldest_updates_and_is_told_the_others_get_everything() {
        let f = fanout(3, SlowClient::DropOldest);
        let mut fast = f.subscribe(None);
        let mut slow = f.subscribe(None);
        for n in 0..5 {
            assert_eq!(f.push(1, &data(n)), 2);
            assert_eq!(fast.next().await, Some(Item::Update(data(n))));
        }
        assert_eq!(slow.next().await, Some(Item::Lagged(2)));
        for n in 2..5 {
            assert_eq!(slow.next().await, Some(Item::Update(data(n))));
        }
        assert_eq!(f.stats.dropped.load(Ordering::Relaxed), 2);
        assert!(!f.all_full(), "the fast client had room all along");
    }

    #[tokio::test]
    async fn the_disconnect_policy_cuts_a_slow_client_off_with_the_reason() {
        let f = fanout(2, SlowClient::Disconnect);
        let mut slow = f.subscribe(Some(7));
        let mut other = f.subscribe(Some(8));
        for n in 0..3 {
            f.push(7, &data(n));
        }
        f.push(8, &data(9));
        assert_eq!(slow.next().await, Some(Item::Disconnected("disconnected: fell 2 updates behind".into())));
        assert_eq!(slow.next().await, None);
        assert_eq!(other.next().await, Some(Item::Update(data(9))), "a session stream sees only its session");
        assert_eq!(f.stats.disconnected.load(Ordering::Relaxed), 1);
        assert_eq!(f.subscribers(), 1, "a client cut off no longer counts");
        drop(slow);
        assert_eq!(f.subscribers(), 1);
    }

    #[tokio::test]
    async fn when_every_queue_is_full_the_fanout_asks_for_a_pause_until_a_client_reads() {
        let f = fanout(2, SlowClient::DropOldest);
        assert!(!f.all_full(), "no clients: nothing to wait for");
        let mut a = f.subscribe(None);
        let mut b = f.subscribe(None);
        f.push(1, &data(0));
        f.push(1, &data(1));
        assert!(f.all_full());
        let waiting = {
            let f = Arc::clone(&f);
            tokio::spawn(async move { f.wait_for_room().await })
        };
        tokio::task::yield_now().await;
        assert_eq!(a.next().await, Some(Item::Update(data(0))));
        waiting.await.unwrap();
        assert!(!f.all_full(), "a has room again");
        assert_eq!(b.next().await, Some(Item::Update(data(0))));
    }

    #[tokio::test]
    async fn shutdown_drains_what_was_queued_then_ends_the_stream() {
        let shutdown = CancellationToken::new();
        let f = Arc::new(Fanout::new(FanoutConfig::default(), shutdown.clone()));
        let mut s = f.subscribe(None);
        f.push(1, &data(1));
        f.push(1, &data(2));
        shutdown.cancel();
        assert_eq!(s.next().await, Some(Item::Update(data(1))));
        assert_eq!(s.next().await, Some(Item::Update(data(2))));
        assert_eq!(s.next().await, None);
    }
}

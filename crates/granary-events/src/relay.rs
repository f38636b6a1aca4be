//! [`Relay`]: delivers committed outbox entries to sinks, at least once, in commit order per
//! grain.
//!
//! The relay reads each outbox shard it owns (one silo owns a shard at a time; a handover may
//! deliver an entry twice, never lose it), publishes the entries to the sinks their event type
//! is routed to, waits for every sink's confirmation, and only then removes them from the
//! outbox. A sink that fails is retried with backoff while the entries stay in the outbox: a
//! slow or absent broker slows the relay down (backpressure) and loses nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use granary_core::provider::{Outbox, OutboxEntry};
use tokio_util::sync::CancellationToken;

use crate::envelope::EventEnvelope;
use crate::sink::Sink;

/// Which outbox shards this relay serves (in a cluster: the ones its silo owns).
pub type ShardOwner = Arc<dyn Fn(u32) -> bool + Send + Sync>;

/// Timings and sizes of a [`Relay`].
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Entries read from a shard at a time. Default 512.
    pub batch: usize,
    /// Longest wait when every owned shard was empty (the outbox wakes the relay earlier when
    /// a commit arrives). Default 20 ms.
    pub idle_poll: Duration,
    /// First wait after a sink failed; doubles up to `retry_max`. Default 50 ms.
    pub retry_min: Duration,
    /// Longest wait between retries. Default 5 s.
    pub retry_max: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch: 512,
            idle_poll: Duration::from_millis(20),
            retry_min: Duration::from_millis(50),
            retry_max: Duration::from_secs(5),
        }
    }
}

#[derive(Clone)]
struct Target {
    sink: Arc<dyn Sink>,
    /// `None`: the event's type name is the topic.
    topic: Option<String>,
}

/// Configures a [`Relay`]: the default sinks and routes per event type.
pub struct RelayBuilder {
    outbox: Arc<dyn Outbox>,
    defaults: Vec<Target>,
    routes: HashMap<String, Vec<Target>>,
    owner: ShardOwner,
    config: RelayConfig,
}

impl std::fmt::Debug for RelayBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayBuilder")
            .field("defaults", &self.defaults.len())
            .field("routes", &self.routes.keys().collect::<Vec<_>>())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl RelayBuilder {
    /// Delivers every event type not routed otherwise to `sink`, on a topic named after the
    /// event type (`player.died`). Several default sinks each get every event.
    #[must_use]
    pub fn sink(mut self, sink: Arc<dyn Sink>) -> Self {
        self.defaults.push(Target { sink, topic: None });
        self
    }

    /// Delivers events of type `type_name` to `sink` on `topic` (instead of the defaults; call
    /// again to add more sinks for the type).
    #[must_use]
    pub fn route(mut self, type_name: &str, sink: Arc<dyn Sink>, topic: &str) -> Self {
        self.routes
            .entry(type_name.to_owned())
            .or_default()
            .push(Target {
                sink,
                topic: Some(topic.to_owned()),
            });
        self
    }

    /// Serves only the shards `owner` accepts (default: all).
    #[must_use]
    pub fn owner(mut self, owner: ShardOwner) -> Self {
        self.owner = owner;
        self
    }

    /// Sets the timings.
    #[must_use]
    pub fn config(mut self, config: RelayConfig) -> Self {
        self.config = config;
        self
    }

    /// Starts the relay on the current tokio runtime.
    ///
    /// # Panics
    /// If no sink is configured: events would stay in the outbox forever.
    #[must_use]
    pub fn start(self) -> Relay {
        assert!(
            !self.defaults.is_empty() || !self.routes.is_empty(),
            "a relay needs at least one sink"
        );
        let stop = CancellationToken::new();
        let stats = Arc::new(Stats::default());
        let worker = Worker {
            outbox: self.outbox,
            defaults: self.defaults,
            routes: self.routes,
            owner: self.owner,
            config: self.config,
            stop: stop.clone(),
            stats: stats.clone(),
        };
        let task = tokio::spawn(worker.run());
        Relay { stop, task, stats }
    }
}

#[derive(Debug, Default)]
struct Stats {
    delivered: AtomicU64,
    failures: AtomicU64,
}

/// A running relay. Stop it with [`stop`](Self::stop); dropping it stops it too (events not yet
/// confirmed stay in the outbox for the next relay).
#[derive(Debug)]
pub struct Relay {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    stats: Arc<Stats>,
}

impl Relay {
    /// A relay of `outbox`'s events.
    #[must_use]
    pub fn builder(outbox: Arc<dyn Outbox>) -> RelayBuilder {
        RelayBuilder {
            outbox,
            defaults: Vec::new(),
            routes: HashMap::new(),
            owner: Arc::new(|_| true),
            config: RelayConfig::default(),
        }
    }

    /// Events delivered to every sink they were routed to and removed from the outbox.
    #[must_use]
    pub fn delivered(&self) -> u64 {
        self.stats.delivered.load(Ordering::Relaxed)
    }

    /// Failed publish attempts so far (each retried).
    #[must_use]
    pub fn failures(&self) -> u64 {
        self.stats.failures.load(Ordering::Relaxed)
    }

    /// Stops the relay and waits for it. A batch in flight is abandoned unacknowledged: the next
    /// relay delivers it again.
    pub async fn stop(mut self) {
        self.stop.cancel();
        let _ = (&mut self.task).await;
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

struct Worker {
    outbox: Arc<dyn Outbox>,
    defaults: Vec<Target>,
    routes: HashMap<String, Vec<Target>>,
    owner: ShardOwner,
    config: RelayConfig,
    stop: CancellationToken,
    stats: Arc<Stats>,
}

impl Worker {
    async fn run(self) {
        while !self.stop.is_cancelled() {
            let mut moved = 0;
            let mut owned = Vec::new();
            for shard in 0..self.outbox.shards() {
                if self.stop.is_cancelled() {
                    return;
                }
                if !(self.owner)(shard) {
                    continue;
                }
                owned.push(shard);
                match self.outbox.pending_in(shard, self.config.batch).await {
                    Ok(entries) if entries.is_empty() => {}
                    Ok(entries) => {
                        if !self.deliver(&entries).await {
                            return;
                        }
                        moved += entries.len();
                    }
                    Err(err) => {
                        tracing::warn!(shard, cause = %err, "cannot read the outbox; retrying");
                        self.pause(self.config.retry_min).await;
                    }
                }
            }
            if moved == 0 {
                // Nothing to do: wait for a commit to one of the owned shards (or the poll
                // interval, which also picks up ownership changes).
                tokio::select! {
                    () = self.outbox.wait_for_entries(&owned, self.config.idle_poll) => {}
                    () = self.stop.cancelled() => {}
                }
            }
        }
    }

    async fn pause(&self, wait: Duration) {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = self.stop.cancelled() => {}
        }
    }

    fn targets(&self, type_name: &str) -> &[Target] {
        self.routes
            .get(type_name)
            .map_or(self.defaults.as_slice(), Vec::as_slice)
    }

    /// Delivers `entries` (one shard's, in commit order) to their sinks, then acknowledges them.
    /// Returns false if stopped before every sink confirmed.
    async fn deliver(&self, entries: &[OutboxEntry]) -> bool {
        // Per (sink, topic), the events routed there, in commit order.
        let mut batches: Vec<(Target, String, Vec<EventEnvelope>)> = Vec::new();
        for entry in entries {
            let envelope = match EventEnvelope::from_entry(entry) {
                Ok(envelope) => envelope,
                Err(err) => {
                    // Cannot happen for events published with `ctx.publish` (always JSON).
                    tracing::error!(cause = %err, "undeliverable outbox entry: dropped");
                    continue;
                }
            };
            let targets = self.targets(&envelope.type_name);
            let mut envelope = Some(envelope);
            for (i, target) in targets.iter().enumerate() {
                // The last target takes the envelope itself; the others a copy.
                let event = if i + 1 == targets.len() {
                    envelope.take()
                } else {
                    envelope.clone()
                };
                let Some(event) = event else { break };
                let topic = match &target.topic {
                    Some(topic) => topic.as_str(),
                    None => event.type_name.as_str(),
                };
                match batches
                    .iter_mut()
                    .find(|(t, tp, _)| Arc::ptr_eq(&t.sink, &target.sink) && tp == topic)
                {
                    Some((_, _, events)) => events.push(event),
                    None => batches.push((target.clone(), topic.to_owned(), vec![event])),
                }
            }
        }
        for (target, topic, events) in &batches {
            let mut wait = self.config.retry_min;
            loop {
                match target.sink.publish(topic, events).await {
                    Ok(()) => break,
                    Err(err) => {
                        self.stats.failures.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(sink = target.sink.name(), topic, cause = %err, retry_in = ?wait, "publish failed; the events stay in the outbox");
                        self.pause(wait).await;
                        if self.stop.is_cancelled() {
                            return false;
                        }
                        wait = (wait * 2).min(self.config.retry_max);
                    }
                }
            }
        }
        let positions: Vec<_> = entries.iter().map(|e| e.position.clone()).collect();
        let mut wait = self.config.retry_min;
        while let Err(err) = self.outbox.ack(&positions).await {
            // Delivered but not removed: they will be delivered again (same ids) unless the
            // removal succeeds.
            tracing::warn!(cause = %err, "cannot remove delivered events from the outbox; retrying");
            self.pause(wait).await;
            if self.stop.is_cancelled() {
                return false;
            }
            wait = (wait * 2).min(self.config.retry_max);
        }
        self.stats
            .delivered
            .fetch_add(entries.len() as u64, Ordering::Relaxed);
        true
    }
}

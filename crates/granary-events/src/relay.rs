//! [`Relay`]: delivers committed outbox entries to sinks, at least once, in commit order per
//! grain.
//!
//! The relay reads each outbox shard it owns (one silo owns a shard at a time; a handover may
//! deliver an entry twice, never lose it), publishes the entries to the sinks their event type
//! is routed to, waits for every sink's confirmation, and only then removes them from the
//! outbox. A sink that fails is retried with backoff while the entries stay in the outbox: a
//! slow or absent broker slows the relay down (backpressure) and loses nothing.
//!
//! A delivery is up to [`batch`](RelayConfig::batch) entries gathered across the owned
//! shards: the relay reads every owned shard's oldest entries at once
//! ([`Outbox::pending_in_each`]: one round trip to the store however many shards it owns),
//! each shard for an equal share of the batch, then what is left of the batch from the shards
//! that had more, shared among them; so a shard with a long backlog does not hold back the
//! others, and an idle relay woken by one commit reads it in one round trip.
//! Each sink gets one batch per delivery with all the events routed to it, each with its
//! topic, in commit order per grain across event types; a sink publishes it in that order.
//!
//! A broker that refuses an event for good ([`SinkError::Refused`]) gets the batch again event
//! by event, so that only that event is held back; after
//! [`max_refusals`](RelayConfig::max_refusals) refusals it moves to its shard's dead-letter
//! stream ([`Outbox::dead_letter`]), as does an entry that holds no readable event, and the
//! shard goes on.
//!
//! Each sink has its [`RelayMetrics`]: delivered events, failed publishes, and its lag.
//!
//! # Order, and what runs at the same time
//!
//! A grain's events live in one shard, and a delivery holds each shard's entries in the
//! shard's order, so a batch of entries from several shards still holds each grain's events
//! in commit order. While a delivery is published, the relay reads and decodes the next one
//! (in the same task, while the publish waits on the sinks): that read skips the entries
//! being delivered (they are their shards' oldest) and publishes nothing. Only one delivery is ever in flight, and its sinks are
//! published one after the other, so a sink never has two of the relay's publishes in flight:
//! were a second batch in flight while the first was retried after a failure, the second
//! could land first and put a grain's later events before its earlier ones. The next delivery
//! is published only once every sink confirmed the one before and its entries were removed
//! (or dead-lettered), so a retry never reorders anything. A delivery read ahead is read again
//! if one of its shards changed hands meanwhile, or if it came back empty.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use granary_core::provider::{Outbox, OutboxEntry, OutboxPosition, ShardRead};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::envelope::EventEnvelope;
use crate::metrics::{RelayMetrics, SinkStats};
use crate::sink::{Outgoing, Sink, SinkError};

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
    /// How long [`Relay::stop`] lets a publish in flight finish (so that a clean stop does not
    /// make its batch be delivered twice) before it abandons it, unacknowledged: a sink that
    /// hangs never holds a silo's shutdown for longer. Default 5 s.
    pub stop_grace: Duration,
    /// Refusals ([`SinkError::Refused`]) of one event by a sink after which the relay moves
    /// the event to its shard's dead-letter stream, so that the events after it go out. At
    /// least 1. Default 5.
    pub max_refusals: u32,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch: 512,
            idle_poll: Duration::from_millis(20),
            retry_min: Duration::from_millis(50),
            retry_max: Duration::from_secs(5),
            stop_grace: Duration::from_secs(5),
            max_refusals: 5,
        }
    }
}

/// A sink and topic as configured.
#[derive(Clone)]
struct Route {
    sink: Arc<dyn Sink>,
    /// `None`: the event's type name is the topic.
    topic: Option<String>,
}

/// A route with its sink's metrics, as the running relay uses it.
#[derive(Clone)]
struct Target {
    sink: Arc<dyn Sink>,
    /// `None`: the event's type name is the topic.
    topic: Option<Arc<str>>,
    stats: Arc<SinkStats>,
}

/// Configures a [`Relay`]: the default sinks and routes per event type.
pub struct RelayBuilder {
    outbox: Arc<dyn Outbox>,
    defaults: Vec<Route>,
    routes: HashMap<String, Vec<Route>>,
    owner: ShardOwner,
    config: RelayConfig,
    /// `(event type, sink)`: delivered there as well as to the type's routes or defaults.
    extra: Vec<(String, Arc<dyn Sink>)>,
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
        self.defaults.push(Route { sink, topic: None });
        self
    }

    /// Delivers events of type `type_name` to `sink` on `topic` (instead of the defaults; call
    /// again to add more sinks for the type).
    #[must_use]
    pub fn route(mut self, type_name: &str, sink: Arc<dyn Sink>, topic: &str) -> Self {
        self.routes
            .entry(type_name.to_owned())
            .or_default()
            .push(Route {
                sink,
                topic: Some(topic.to_owned()),
            });
        self
    }

    /// Delivers events of type `type_name` to `sink` **as well as** to the sinks the type is
    /// routed to (or the defaults), on a topic named after the event type: how a silo's
    /// subscribed grains get their events (`Silo::deliver_subscriptions`). The sink is one more
    /// sink of the relay, with the same guarantees: at least once, in commit order per grain,
    /// retried with backoff, dead-lettered after [`max_refusals`](RelayConfig::max_refusals)
    /// refusals.
    #[must_use]
    pub fn subscriber(mut self, type_name: &str, sink: Arc<dyn Sink>) -> Self {
        self.extra.push((type_name.to_owned(), sink));
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
    /// Each distinct sink gets its metrics under the label [`Sink::name`]; a second sink of
    /// the same name is labelled `<name>-2` (then `-3`, …), in the order the sinks were added.
    ///
    /// # Panics
    /// If no sink is configured: events would stay in the outbox forever.
    #[must_use]
    pub fn start(mut self) -> Relay {
        for (type_name, sink) in std::mem::take(&mut self.extra) {
            let defaults = &self.defaults;
            self.routes
                .entry(type_name)
                .or_insert_with(|| defaults.clone())
                .push(Route { sink, topic: None });
        }
        assert!(
            !self.defaults.is_empty() || !self.routes.is_empty(),
            "a relay needs at least one sink"
        );
        // The distinct sinks (one `Arc` added several times is one sink), in the order added;
        // routes in the order of their type names, so that labels do not depend on hashing.
        let mut route_types: Vec<&String> = self.routes.keys().collect();
        route_types.sort();
        let mut sinks: Vec<Arc<dyn Sink>> = Vec::new();
        let mut names: Vec<String> = Vec::new();
        let all = self
            .defaults
            .iter()
            .chain(route_types.iter().flat_map(|t| &self.routes[*t]));
        for route in all {
            if sinks.iter().any(|s| same_sink(s, &route.sink)) {
                continue;
            }
            let base = route.sink.name();
            let mut name = base.to_owned();
            let mut n = 1;
            while names.contains(&name) {
                n += 1;
                name = format!("{base}-{n}");
            }
            sinks.push(route.sink.clone());
            names.push(name);
        }
        let (metrics, stats) = crate::metrics::build(&names);
        let undecodable = metrics.undecodable_counter();
        let mut config = self.config;
        config.max_refusals = config.max_refusals.max(1);
        let target = |route: &Route| {
            let i = sinks
                .iter()
                .position(|s| same_sink(s, &route.sink))
                .expect("every sink was listed above");
            Target {
                sink: route.sink.clone(),
                topic: route.topic.as_deref().map(Arc::from),
                stats: stats[i].clone(),
            }
        };
        let defaults = self.defaults.iter().map(target).collect();
        let routes = self
            .routes
            .iter()
            .map(|(t, routes)| (t.clone(), routes.iter().map(target).collect()))
            .collect();
        let stop = CancellationToken::new();
        let totals = Arc::new(Stats::default());
        let worker = Worker {
            outbox: self.outbox,
            defaults,
            routes,
            owner: self.owner,
            config,
            stop: stop.clone(),
            stats: totals.clone(),
            undecodable,
        };
        let task = tokio::spawn(worker.run());
        Relay {
            stop,
            task,
            stats: totals,
            metrics,
        }
    }
}

/// Whether two handles are the same sink (the same allocation, whatever the vtable).
fn same_sink(a: &Arc<dyn Sink>, b: &Arc<dyn Sink>) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
}

#[derive(Debug, Default)]
struct Stats {
    delivered: AtomicU64,
    failures: AtomicU64,
    dead_lettered: AtomicU64,
    /// Notified each time events were delivered.
    progress: Notify,
}

/// A running relay. Stop it with [`stop`](Self::stop); dropping it stops it too (events not yet
/// confirmed stay in the outbox for the next relay).
#[derive(Debug)]
pub struct Relay {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    stats: Arc<Stats>,
    metrics: RelayMetrics,
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
            extra: Vec::new(),
        }
    }

    /// Events delivered to every sink they were routed to and removed from the outbox.
    #[must_use]
    pub fn delivered(&self) -> u64 {
        self.stats.delivered.load(Ordering::Relaxed)
    }

    /// Waits until at least `n` events were delivered ([`delivered`](Self::delivered)) and
    /// returns how many were. It waits for ever if the outbox never holds that many: bound it
    /// with a timeout.
    ///
    /// # Cancel safety
    /// Cancel safe: it only watches.
    pub async fn delivered_at_least(&self, n: u64) -> u64 {
        loop {
            let progress = self.stats.progress.notified();
            tokio::pin!(progress);
            // Registered before the check: a delivery between the check and the wait wakes it.
            progress.as_mut().enable();
            let delivered = self.delivered();
            if delivered >= n {
                return delivered;
            }
            progress.await;
        }
    }

    /// Failed publish attempts so far (each retried).
    #[must_use]
    pub fn failures(&self) -> u64 {
        self.stats.failures.load(Ordering::Relaxed)
    }

    /// Outbox entries this relay moved to the dead-letter stream: refused too often by a sink,
    /// or undecodable.
    #[must_use]
    pub fn dead_lettered(&self) -> u64 {
        self.stats.dead_lettered.load(Ordering::Relaxed)
    }

    /// The relay's per-sink metrics (lag, delivered, failures): a handle that stays valid after
    /// the relay stopped. A silo process serves them at `/metrics` with the silo's.
    #[must_use]
    pub fn metrics(&self) -> RelayMetrics {
        self.metrics.clone()
    }

    /// Stops the relay and waits for it. A publish in flight gets
    /// [`stop_grace`](RelayConfig::stop_grace) to finish; then it is abandoned, and its batch,
    /// unacknowledged, is delivered again by the next relay (same event ids). No new publish
    /// starts once stopping.
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
    undecodable: prometheus_client::metrics::counter::Counter,
}

/// Entries read for one delivery (up to [`RelayConfig::batch`], gathered across the owned
/// shards), decoded and split into one batch per sink. The entries' events moved into the
/// batches' envelopes; what is left of each entry is its position.
struct Delivery {
    /// Per entry, in the order read: where it is in the outbox (what the acknowledgement
    /// removes, and what the read of the next delivery skips).
    positions: Vec<OutboxPosition>,
    /// Per entry: why it goes to the dead-letter stream instead of being acknowledged.
    dead: Vec<Option<String>>,
    batches: Vec<Batch>,
    /// The shards owned when the entries were read.
    owned: Vec<u32>,
    /// The shard the next read starts at.
    next: u32,
    /// Whether reading a shard failed (the relay pauses before reading again).
    failed: bool,
}

/// The entries of `held` (a delivery's positions: runs of one shard each) that are `shard`'s.
fn held_of(held: &[OutboxPosition], shard: u32) -> &[OutboxPosition] {
    let from = held
        .iter()
        .position(|p| p.shard == shard)
        .unwrap_or(held.len());
    let count = held[from..].iter().take_while(|p| p.shard == shard).count();
    &held[from..from + count]
}

impl Worker {
    async fn run(self) {
        // Where the next read starts: reads go round the owned shards, so that a shard with a
        // long backlog does not hold back the others.
        let mut next = 0;
        // The delivery read (and decoded) while the one before it was being published.
        let mut ahead: Option<Delivery> = None;
        while !self.stop.is_cancelled() {
            let delivery = match ahead.take().filter(|d| self.still_owned(d)) {
                Some(delivery) => delivery,
                // Nothing read ahead (or it came back empty, or a shard it read changed
                // hands): read now, so that what was committed meanwhile goes at once.
                None => self.read(next, &[]).await,
            };
            next = delivery.next;
            if delivery.positions.is_empty() {
                if delivery.failed {
                    self.pause(self.config.retry_min).await;
                } else {
                    // Nothing to do: wait for a commit to one of the owned shards (or the
                    // poll interval, which also picks up ownership changes).
                    tokio::select! {
                        () = self.outbox.wait_for_entries(&delivery.owned, self.config.idle_poll) => {}
                        () = self.stop.cancelled() => {}
                    }
                }
                continue;
            }
            // Read and decode the next entries while these are published, in this task while
            // the publish waits on the sinks (no hand-over between threads, which costs a
            // scheduler slice on a busy machine): the read skips the entries being delivered,
            // and nothing of it is published before they are confirmed and removed. The
            // publish is polled first, so that it is sent before the read runs. Both borrow the
            // delivery's positions: the acknowledgement removes them, the read skips them.
            let Delivery {
                positions,
                dead,
                batches,
                ..
            } = delivery;
            let (delivered, read) = Box::pin(futures::future::join(
                self.deliver(&positions, dead, batches),
                self.read(next, &positions),
            ))
            .await;
            if !delivered {
                return;
            }
            ahead = Some(read);
        }
    }

    /// Whether every shard `delivery` read from is still owned: a delivery read ahead is
    /// read again when a shard changed hands meanwhile, rather than published by a relay that
    /// no longer serves it.
    fn still_owned(&self, delivery: &Delivery) -> bool {
        let mut last = None;
        !delivery.positions.is_empty()
            && delivery.positions.iter().all(|p| {
                let shard = p.shard;
                // Entries come in runs of one shard: ask once per run.
                let owned = last == Some(shard) || (self.owner)(shard);
                last = Some(shard);
                owned
            })
    }

    /// Reads up to [`RelayConfig::batch`] entries from the owned shards, skipping the entries
    /// `held` (the delivery in flight), then decodes them into one batch per sink. Every owned
    /// shard is read at once (one round trip to the store, whatever the number of shards),
    /// for an equal share of the batch; the shards that had more than their share then share
    /// what is left of the batch, in a second read. Shards go round from shard `from`, so
    /// that no shard is always last.
    async fn read(&self, from: u32, held: &[OutboxPosition]) -> Delivery {
        let shards = self.outbox.shards();
        let owned: Vec<u32> = (0..shards).filter(|&s| (self.owner)(s)).collect();
        let start = owned.iter().position(|&s| s >= from).unwrap_or(0);
        let order: Vec<u32> = owned[start..]
            .iter()
            .chain(&owned[..start])
            .copied()
            .collect();
        let batch = self.config.batch.max(1);
        // With more shards than the batch holds, each reads one and the last are left out
        // (the next read starts one shard further round).
        let share = (batch / order.len().max(1)).max(1);
        let first: Vec<ShardRead<'_>> = order
            .iter()
            .map(|&shard| ShardRead {
                shard,
                held: held_of(held, shard),
                max: share,
            })
            .collect();
        let mut failed = false;
        let mut each = if first.is_empty() || self.stop.is_cancelled() {
            Vec::new()
        } else {
            self.outbox
                .pending_in_each(&first)
                .await
                .unwrap_or_else(|err| {
                    tracing::warn!(cause = %err, "cannot read the outbox; retrying");
                    failed = true;
                    Vec::new()
                })
        };
        let left = batch.saturating_sub(each.iter().map(Vec::len).sum());
        // The shards whose read was full may have more.
        let full: Vec<usize> = (0..each.len())
            .filter(|&i| each[i].len() >= share)
            .collect();
        if left > 0 && !full.is_empty() && !self.stop.is_cancelled() {
            let read_so_far: Vec<Vec<OutboxPosition>> = full
                .iter()
                .map(|&i| {
                    let shard = order[i];
                    held_of(held, shard)
                        .iter()
                        .cloned()
                        .chain(each[i].iter().map(|e| e.position.clone()))
                        .collect()
                })
                .collect();
            let (base, extra) = (left / full.len(), left % full.len());
            let (second, at): (Vec<ShardRead<'_>>, Vec<usize>) = full
                .iter()
                .zip(&read_so_far)
                .enumerate()
                .map(|(j, (&i, read))| {
                    let max = base + usize::from(j < extra);
                    let shard = order[i];
                    (
                        ShardRead {
                            shard,
                            held: read,
                            max,
                        },
                        i,
                    )
                })
                .filter(|(read, _)| read.max > 0)
                .unzip();
            match self.outbox.pending_in_each(&second).await {
                Ok(more) => {
                    for (i, more) in at.into_iter().zip(more) {
                        each[i].extend(more);
                    }
                }
                Err(err) => {
                    tracing::warn!(cause = %err, "cannot read the outbox; retrying");
                    failed = true;
                }
            }
        }
        let entries: Vec<OutboxEntry> = each.into_iter().flatten().take(batch).collect();
        let next = order.get(1).copied().unwrap_or(from);
        let (positions, dead, batches) = self.split(entries);
        Delivery {
            positions,
            dead,
            batches,
            owned,
            next,
            failed,
        }
    }

    async fn pause(&self, wait: Duration) {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = self.stop.cancelled() => {}
        }
    }

    /// Publishes `events` to `target`; `None` if the relay was stopped and the publish did not
    /// finish within the grace period (it is dropped: the events stay in the outbox).
    async fn publish(&self, target: &Target, events: &[Outgoing]) -> Option<Result<(), SinkError>> {
        let publish = target.sink.publish(events);
        tokio::pin!(publish);
        tokio::select! {
            result = &mut publish => Some(result),
            () = self.stop.cancelled() => {
                match tokio::time::timeout(self.config.stop_grace, publish).await {
                    Ok(result) => Some(result),
                    Err(_) => {
                        tracing::warn!(
                            sink = target.sink.name(),
                            grace = ?self.config.stop_grace,
                            "the relay stopped and a publish did not finish in time: abandoned; \
                             its events stay in the outbox"
                        );
                        None
                    }
                }
            }
        }
    }

    fn targets(&self, type_name: &str) -> &[Target] {
        self.routes
            .get(type_name)
            .map_or(self.defaults.as_slice(), Vec::as_slice)
    }

    /// Decodes `entries` (in commit order per grain) into one batch per sink, each in that
    /// order whatever the events' topics; and, per entry, its position and why it goes to the
    /// dead-letter stream (it cannot be decoded) instead. The entries' events move into the
    /// envelopes, not copied.
    fn split(
        &self,
        entries: Vec<OutboxEntry>,
    ) -> (Vec<OutboxPosition>, Vec<Option<String>>, Vec<Batch>) {
        let mut positions: Vec<OutboxPosition> = Vec::with_capacity(entries.len());
        let mut dead: Vec<Option<String>> = vec![None; entries.len()];
        let mut batches: Vec<Batch> = Vec::new();
        // The topics of default routes (the type names) seen in this delivery, shared.
        let mut type_topics: Vec<Arc<str>> = Vec::new();
        for (i, entry) in entries.into_iter().enumerate() {
            let OutboxEntry {
                id,
                event,
                position,
                committed_ms,
            } = entry;
            positions.push(position);
            let envelope = match EventEnvelope::from_event(&id, event, committed_ms) {
                Ok(envelope) => envelope,
                Err(err) => {
                    // Cannot happen for events published with `ctx.publish` (always JSON).
                    let position = &positions[i];
                    tracing::error!(
                        shard = position.shard,
                        entry = %position.entry,
                        cause = %err,
                        "undecodable outbox entry: moved to the shard's dead-letter stream"
                    );
                    self.undecodable.inc();
                    dead[i] = Some(format!("undecodable event: {err}"));
                    continue;
                }
            };
            let targets = self.targets(&envelope.type_name);
            let mut envelope = Some(envelope);
            for (k, target) in targets.iter().enumerate() {
                // The last target takes the envelope itself; the others a copy.
                let event = if k + 1 == targets.len() {
                    envelope.take()
                } else {
                    envelope.clone()
                };
                let Some(event) = event else { break };
                let topic = match &target.topic {
                    Some(topic) => topic.clone(),
                    None => match type_topics.iter().find(|t| ***t == *event.type_name) {
                        Some(topic) => topic.clone(),
                        None => {
                            let topic: Arc<str> = event.type_name.as_str().into();
                            type_topics.push(topic.clone());
                            topic
                        }
                    },
                };
                let batch = match batches
                    .iter()
                    .position(|b| Arc::ptr_eq(&b.target.stats, &target.stats))
                {
                    Some(b) => &mut batches[b],
                    None => {
                        batches.push(Batch {
                            target: target.clone(),
                            events: Vec::new(),
                            entries: Vec::new(),
                            oldest: committed_ms,
                        });
                        batches.last_mut().expect("just pushed")
                    }
                };
                batch.oldest = batch.oldest.min(committed_ms);
                batch.events.push(Outgoing { topic, event });
                batch.entries.push(i);
            }
        }
        (positions, dead, batches)
    }

    /// Delivers the `batches` of a delivery to their sinks, one sink after the other, then
    /// acknowledges its entries, at `positions` (and moves what cannot be delivered, as
    /// `dead` says, to the shards' dead-letter streams). Returns false if stopped before
    /// every sink confirmed.
    async fn deliver(
        &self,
        positions: &[OutboxPosition],
        mut dead: Vec<Option<String>>,
        batches: Vec<Batch>,
    ) -> bool {
        for batch in &batches {
            batch.target.stats.pending_since(batch.oldest);
        }
        for batch in &batches {
            if !self.publish_batch(batch, positions, &mut dead).await {
                return false;
            }
            batch.target.stats.caught_up();
        }
        drop(batches);
        // Usually every entry is acknowledged: the positions as they are, not copied.
        let mut dead_letters = Vec::new();
        let mut kept = Vec::new();
        if dead.iter().any(Option::is_some) {
            for (position, reason) in positions.iter().zip(dead) {
                match reason {
                    Some(reason) => dead_letters.push((position.clone(), reason)),
                    None => kept.push(position.clone()),
                }
            }
        }
        let positions = if dead_letters.is_empty() {
            positions
        } else {
            kept.as_slice()
        };
        if !dead_letters.is_empty() {
            let moved = self
                .store_retrying(
                    "cannot move events to the dead-letter stream; retrying",
                    || self.outbox.dead_letter(&dead_letters),
                )
                .await;
            if !moved {
                return false;
            }
            self.stats
                .dead_lettered
                .fetch_add(dead_letters.len() as u64, Ordering::Relaxed);
        }
        // Delivered but not removed: they will be delivered again (same ids) unless the removal
        // succeeds. (A delivery whose every entry was dead-lettered has nothing left to remove.)
        let removed = positions.is_empty()
            || self
                .store_retrying(
                    "cannot remove delivered events from the outbox; retrying",
                    || self.outbox.ack(positions),
                )
                .await;
        if !removed {
            return false;
        }
        self.stats
            .delivered
            .fetch_add(positions.len() as u64, Ordering::Relaxed);
        self.stats.progress.notify_waiters();
        true
    }

    /// Runs the store operation `op` until it succeeds, with backoff, logging `failed` with the
    /// cause each time; false if the relay was stopped first.
    async fn store_retrying<'s, F>(&'s self, failed: &'static str, op: F) -> bool
    where
        F: Fn() -> futures::future::BoxFuture<'s, Result<(), granary_core::StorageError>>,
    {
        let mut wait = self.config.retry_min;
        while let Err(err) = op().await {
            tracing::warn!(cause = %err, "{failed}");
            self.pause(wait).await;
            if self.stop.is_cancelled() {
                return false;
            }
            wait = (wait * 2).min(self.config.retry_max);
        }
        true
    }

    /// Publishes `batch` until its sink confirmed it; after a refusal, event by event (see
    /// [`publish_each`](Self::publish_each)). Returns false if stopped first.
    async fn publish_batch(
        &self,
        batch: &Batch,
        positions: &[OutboxPosition],
        dead: &mut [Option<String>],
    ) -> bool {
        let target = &batch.target;
        let mut wait = self.config.retry_min;
        loop {
            if self.stop.is_cancelled() {
                return false;
            }
            let Some(published) = self.publish(target, &batch.events).await else {
                return false;
            };
            match published {
                Ok(()) => {
                    target.stats.confirmed(batch.events.len());
                    return true;
                }
                Err(err) => {
                    self.stats.failures.fetch_add(1, Ordering::Relaxed);
                    target.stats.failed();
                    if matches!(err, SinkError::Refused { .. }) {
                        tracing::warn!(sink = target.sink.name(), events = batch.events.len(), cause = %err, "the sink refused a batch; publishing it event by event");
                        return self.publish_each(batch, positions, dead).await;
                    }
                    tracing::warn!(sink = target.sink.name(), cause = %err, retry_in = ?wait, "publish failed; the events stay in the outbox");
                    self.pause(wait).await;
                    wait = (wait * 2).min(self.config.retry_max);
                }
            }
        }
    }

    /// Publishes `batch` one event at a time, in order, so that only the event the sink
    /// refuses is held back: after [`max_refusals`](RelayConfig::max_refusals) refusals it is
    /// marked for the dead-letter stream and the next event goes. Returns false if stopped
    /// first.
    async fn publish_each(
        &self,
        batch: &Batch,
        positions: &[OutboxPosition],
        dead: &mut [Option<String>],
    ) -> bool {
        let target = &batch.target;
        let sink = target.sink.name();
        for (event, &i) in batch.events.iter().zip(&batch.entries) {
            if dead[i].is_some() {
                // Already set aside (another sink refused it, or it was routed here twice).
                continue;
            }
            let mut wait = self.config.retry_min;
            let mut refusals = 0;
            loop {
                if self.stop.is_cancelled() {
                    return false;
                }
                let Some(published) = self.publish(target, std::slice::from_ref(event)).await
                else {
                    return false;
                };
                match published {
                    Ok(()) => {
                        target.stats.confirmed(1);
                        break;
                    }
                    Err(err) => {
                        self.stats.failures.fetch_add(1, Ordering::Relaxed);
                        target.stats.failed();
                        if matches!(err, SinkError::Refused { .. }) {
                            refusals += 1;
                            if refusals >= self.config.max_refusals {
                                tracing::error!(
                                    sink,
                                    topic = %event.topic,
                                    event = %event.event.id,
                                    shard = positions[i].shard,
                                    refusals,
                                    cause = %err,
                                    "the sink refused an event too often: moved to the shard's dead-letter stream; `granary events dead` lists and re-drives it"
                                );
                                target.stats.dead_lettered();
                                dead[i] = Some(format!(
                                    "{sink} refused it {refusals} times (topic {}): {err}",
                                    event.topic
                                ));
                                break;
                            }
                        }
                        tracing::warn!(sink, event = %event.event.id, cause = %err, retry_in = ?wait, "publish failed; the event stays in the outbox");
                        self.pause(wait).await;
                        wait = (wait * 2).min(self.config.retry_max);
                    }
                }
            }
        }
        true
    }
}

/// One sink's share of a delivery: its events in commit order, and the entry each came from.
struct Batch {
    target: Target,
    events: Vec<Outgoing>,
    /// Per event, its index in the delivered entries.
    entries: Vec<usize>,
    /// The commit time of the oldest event.
    oldest: u64,
}

#[cfg(test)]
mod tests;

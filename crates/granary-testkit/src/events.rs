//! The scaffolding of the event adapters' integration tests (NATS, RabbitMQ, SQS, Kafka): a
//! grain that publishes one event per call, a silo that hosts it, handlers that record what a
//! consumer delivered, and the checks that every event arrived once and in commit order.
//!
//! [`EventCounterGrain::bump`] adds one to its count and publishes [`Bumped`] with the new
//! count, in the same commit: grain `k`'s `n`th bump commits state version `n` with one event,
//! whose id is [`bumped_id`]. A test bumps some grains ([`bump`]), lets a relay deliver the
//! outbox to the queue under test, records what its consumer is handed ([`Deliveries`]) and
//! checks it ([`assert_once_in_order`]). [`EventCounterGrain::bump_mixed`] publishes every
//! `every`th count as a [`Milestone`] instead, so that a grain's events interleave two types
//! (two topics); [`bump_mixed`] drives it and the same checks accept both types.
//!
//! ```
//! use std::sync::Arc;
//!
//! use granary::provider::MemoryStore;
//! use granary_events::EventEnvelope;
//! use granary_testkit::events::{assert_once_in_order, bump, silo};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = Arc::new(MemoryStore::new());
//! let silo = silo(store.clone()).await;
//! bump(&silo, 0..3, 4).await;
//! // No relay: the events are still in the outbox, in commit order.
//! let events = store
//!     .outbox_entries()
//!     .iter()
//!     .map(EventEnvelope::from_entry)
//!     .collect::<Result<Vec<_>, _>>()?;
//! assert_once_in_order(&events, 3, 4);
//! silo.shutdown().await?;
//! # Ok(())
//! # }
//! ```

use std::collections::{BTreeMap, HashSet};
use std::future::{Future, Ready};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use granary::provider::MemoryStore;
use granary::{Event, Grain, GrainContext, GrainId, GrainKey, Silo, SiloConfig, grain};
use granary_events::{EventEnvelope, Outgoing, Sink, SinkError};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Published by [`EventCounterGrain::bump`]: the grain's count after the bump.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bumped {
    /// The count, from 1.
    pub n: u64,
}

impl Event for Bumped {
    /// Fixed: the sinks name their subjects, queues and topics after it (`<prefix>bumped`).
    const TYPE_NAME: &'static str = "bumped";
}

/// Published by [`EventCounterGrain::bump_mixed`] instead of [`Bumped`] for every `every`th
/// count: a second event type (topic) of the same grain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Milestone {
    /// The count, from 1.
    pub n: u64,
}

impl Event for Milestone {
    /// Fixed, like [`Bumped`]'s: `<prefix>milestone`.
    const TYPE_NAME: &'static str = "milestone";
}

/// The state of an [`EventCounterGrain`].
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Count {
    /// How many times the grain was bumped.
    pub n: u64,
}

/// A grain that counts its bumps and publishes each as a [`Bumped`] event, committed with the
/// count: type name `testkit.event-counter`.
#[derive(Debug, Default)]
pub struct EventCounterGrain;

#[grain(name = "testkit.event-counter", state = Count)]
impl EventCounterGrain {
    /// Adds one to the count, publishes `Bumped` with the new count and commits both; returns
    /// the new count.
    pub async fn bump(&self, ctx: &GrainContext<Self>) -> granary::Result<u64> {
        let n = {
            let mut state = ctx.state();
            state.n += 1;
            state.n
        };
        ctx.publish(&Bumped { n })?;
        ctx.write_state().await?;
        Ok(n)
    }

    /// As [`bump`](Self::bump), but publishes [`Milestone`] instead of [`Bumped`] when the new
    /// count is a multiple of `every`.
    pub async fn bump_mixed(&self, ctx: &GrainContext<Self>, every: u64) -> granary::Result<u64> {
        let n = {
            let mut state = ctx.state();
            state.n += 1;
            state.n
        };
        if every > 0 && n % every == 0 {
            ctx.publish(&Milestone { n })?;
        } else {
            ctx.publish(&Bumped { n })?;
        }
        ctx.write_state().await?;
        Ok(n)
    }
}

/// The failure [`Deliveries::failing_on`]'s handler reports for the poison event.
pub const POISON_FAILURE: &str = "cannot process this one";

/// The id of the [`Bumped`] event that grain `key` commits on its `n`th bump into the store of
/// origin `origin` (state version `n`, index 0).
#[must_use]
pub fn bumped_id(origin: &str, key: impl Into<GrainKey>, n: u64) -> String {
    let grain = GrainId::new(EventCounterGrain::TYPE_NAME, key);
    granary_events::event_id(origin, &grain, n, 0)
}

/// Starts a silo with the test profile on `store`, hosting [`EventCounterGrain`].
///
/// # Panics
/// If the silo does not start.
pub async fn silo(store: Arc<MemoryStore>) -> Silo {
    Silo::builder()
        .config(SiloConfig::test_profile())
        .storage(store)
        .register::<EventCounterGrain>()
        .start()
        .await
        .expect("a silo on the memory store starts")
}

/// Bumps each grain of `keys`, in turn, `times` times: each bump commits one [`Bumped`].
///
/// # Panics
/// If a bump fails.
pub async fn bump<K: Into<GrainKey>>(silo: &Silo, keys: impl IntoIterator<Item = K>, times: u64) {
    bump_with(silo, keys, times, None).await;
}

/// Bumps each grain of `keys` `times` times, with `bump_mixed(every)` when `every` is set.
async fn bump_with<K: Into<GrainKey>>(
    silo: &Silo,
    keys: impl IntoIterator<Item = K>,
    times: u64,
    every: Option<u64>,
) {
    for key in keys {
        let key: GrainKey = key.into();
        let grain = silo.client().grain::<EventCounterGrain>(key.clone());
        for _ in 0..times {
            let bumped = match every {
                Some(every) => grain.bump_mixed(every).await,
                None => grain.bump().await,
            };
            if let Err(err) = bumped {
                panic!("bumping grain {key:?} failed: {err}");
            }
        }
    }
}

/// As [`bump`], with [`EventCounterGrain::bump_mixed`]: every `every`th count of each grain is
/// a [`Milestone`], the others [`Bumped`].
///
/// # Panics
/// If a bump fails.
pub async fn bump_mixed<K: Into<GrainKey>>(
    silo: &Silo,
    keys: impl IntoIterator<Item = K>,
    times: u64,
    every: u64,
) {
    bump_with(silo, keys, times, Some(every)).await;
}

/// Waits until `done()` holds, looking every 20 ms: for what a test can only see by looking
/// (a relay's counters, a store's outbox, what a consumer recorded).
///
/// # Panics
/// If `done()` does not hold within `timeout`; the message names `what` it awaited.
pub async fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs a consumer in a task until the returned token is cancelled: `run` is handed the token
/// and returns the consumer's run (which may hand the consumer back when it ends, for the test
/// to inspect or delete it).
///
/// ```
/// # use granary_testkit::events::{Deliveries, spawn_consumer};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # struct Consumer;
/// # impl Consumer {
/// #     async fn run<F>(&self, _handler: F, stop: tokio_util::sync::CancellationToken) -> Result<(), String> {
/// #         stop.cancelled().await;
/// #         Ok(())
/// #     }
/// # }
/// # let consumer = Consumer;
/// let received = Deliveries::new();
/// let handler = received.recorder();
/// let (stop, task) = spawn_consumer(|stop| async move {
///     consumer.run(handler, stop).await?;
///     Ok::<_, String>(consumer)
/// });
/// // ... publish, wait until `received` holds what was published ...
/// stop.cancel();
/// let consumer = task.await??;
/// # let _ = consumer;
/// # Ok(())
/// # }
/// ```
pub fn spawn_consumer<F, Fut>(run: F) -> (CancellationToken, JoinHandle<Fut::Output>)
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    let stop = CancellationToken::new();
    let task = tokio::spawn(run(stop.clone()));
    (stop, task)
}

/// The envelopes a consumer's handler was handed, in the order it was handed them, repeats
/// included; clones share them.
///
/// The handler ([`recorder`](Self::recorder) or [`failing_on`](Self::failing_on)) runs in the
/// consumer's task; the test reads what it recorded while it runs or after it stopped.
#[derive(Debug, Clone, Default)]
pub struct Deliveries {
    recorded: Arc<Mutex<Recorded>>,
}

#[derive(Debug, Default)]
struct Recorded {
    events: Vec<EventEnvelope>,
    failures: u32,
}

/// What a consumer's handler returns here: ready at once.
type Handled = Ready<Result<(), String>>;

impl Deliveries {
    /// Nothing delivered yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A consumer's handler that records every envelope and succeeds.
    pub fn recorder(&self) -> impl Fn(EventEnvelope) -> Handled + Send + Sync + 'static {
        let recorded = self.recorded.clone();
        move |event| {
            recorded.lock().events.push(event);
            std::future::ready(Ok(()))
        }
    }

    /// A consumer's handler that fails every delivery of the event with id `poison` with
    /// [`POISON_FAILURE`] (counted by [`failures`](Self::failures), not recorded) and records
    /// every other envelope and succeeds.
    pub fn failing_on(
        &self,
        poison: &str,
    ) -> impl Fn(EventEnvelope) -> Handled + Send + Sync + 'static {
        let (recorded, poison) = (self.recorded.clone(), poison.to_owned());
        move |event| {
            let mut recorded = recorded.lock();
            if event.id == poison {
                recorded.failures += 1;
                std::future::ready(Err(POISON_FAILURE.to_owned()))
            } else {
                recorded.events.push(event);
                std::future::ready(Ok(()))
            }
        }
    }

    /// A copy of the recorded envelopes, in delivery order.
    #[must_use]
    pub fn events(&self) -> Vec<EventEnvelope> {
        self.recorded.lock().events.clone()
    }

    /// How many envelopes were recorded, repeats included.
    #[must_use]
    pub fn len(&self) -> usize {
        self.recorded.lock().events.len()
    }

    /// Whether none was recorded.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many distinct events (by id) were recorded.
    #[must_use]
    pub fn distinct(&self) -> usize {
        let recorded = self.recorded.lock();
        recorded
            .events
            .iter()
            .map(|e| &e.id)
            .collect::<HashSet<_>>()
            .len()
    }

    /// How many times the handler of [`failing_on`](Self::failing_on) failed.
    #[must_use]
    pub fn failures(&self) -> u32 {
        self.recorded.lock().failures
    }

    /// The [`Bumped`] counts of grain `key`'s recorded envelopes, in delivery order, repeats
    /// included.
    ///
    /// # Panics
    /// If one of them is not a `Bumped`.
    #[must_use]
    pub fn counts_of(&self, key: &str) -> Vec<u64> {
        let recorded = self.recorded.lock();
        recorded
            .events
            .iter()
            .filter(|e| e.source.key == key)
            .map(count)
            .collect()
    }
}

/// Asserts that `events` (as delivered, repeats included) hold, after dropping repeats by id,
/// the events of exactly `grains` grains, each grain's in commit order and with the counts
/// `1..=times`, each once: what `grains` grains bumped `times` times each published.
///
/// # Panics
/// If they do not, saying which grain and how; or if an event is not a [`Bumped`] or a
/// [`Milestone`].
pub fn assert_once_in_order(events: &[EventEnvelope], grains: usize, times: u64) {
    assert_once_in_order_with(events, grains, |_| 1..=times);
}

/// As [`assert_once_in_order`], with the counts grain `key` must show given by
/// `expected(key)`: for a test in which some events were lost on purpose or published before
/// the consumer started reading.
///
/// # Panics
/// As [`assert_once_in_order`].
pub fn assert_once_in_order_with(
    events: &[EventEnvelope],
    grains: usize,
    expected: impl Fn(&str) -> RangeInclusive<u64>,
) {
    if let Err(problem) = check_once_in_order(events, grains, expected) {
        panic!("{problem}");
    }
}

/// The check behind [`assert_once_in_order_with`]: what is wrong, if anything.
fn check_once_in_order(
    events: &[EventEnvelope],
    grains: usize,
    expected: impl Fn(&str) -> RangeInclusive<u64>,
) -> Result<(), String> {
    // The first delivery of each event, per grain (type, key kind, key), in delivery order.
    let mut seen = HashSet::new();
    let mut per_grain: BTreeMap<(&str, &str, &str), Vec<&EventEnvelope>> = BTreeMap::new();
    for event in events {
        if seen.insert(event.id.as_str()) {
            let source = &event.source;
            per_grain
                .entry((&source.type_name, &source.key_kind, &source.key))
                .or_default()
                .push(event);
        }
    }
    if per_grain.len() != grains {
        return Err(format!(
            "events of {} grains, expected {grains}: {:?}",
            per_grain.len(),
            per_grain.keys().collect::<Vec<_>>()
        ));
    }
    for ((type_name, _, key), events) in per_grain {
        let positions: Vec<(u64, u32)> = events.iter().map(|e| (e.version, e.index)).collect();
        if !positions.windows(2).all(|pair| pair[0] < pair[1]) {
            return Err(format!(
                "grain {type_name}/{key}: not in commit order (version, index): {positions:?}"
            ));
        }
        let counts: Vec<u64> = events.iter().map(|e| count(e)).collect();
        let expected = expected(key);
        if !counts.iter().copied().eq(expected.clone()) {
            return Err(format!(
                "grain {type_name}/{key}: counts {counts:?} after dropping repeats, expected \
                 each of {expected:?} once, in order"
            ));
        }
    }
    Ok(())
}

/// The count an envelope of a [`Bumped`] or [`Milestone`] carries.
fn count(event: &EventEnvelope) -> u64 {
    if event.type_name == Milestone::TYPE_NAME {
        return match event.decode::<Milestone>() {
            Ok(milestone) => milestone.n,
            Err(err) => panic!("event {} is not a Milestone: {err}", event.id),
        };
    }
    match event.decode::<Bumped>() {
        Ok(bumped) => bumped.n,
        Err(err) => panic!("event {} is not a Bumped: {err}", event.id),
    }
}

/// Waits at most `timeout` until `store`'s outbox is empty: the relay delivered and
/// acknowledged every committed event.
///
/// # Panics
/// If it is not empty in time.
pub async fn outbox_drained(store: &MemoryStore, timeout: Duration) {
    wait_until("the outbox is empty", timeout, || {
        store.outbox_entries().is_empty()
    })
    .await;
}

/// A sink that hands batches on to `inner` until `after` events were confirmed, then fails every
/// publish (the relay keeps the batch in the outbox and retries it), so that a test that stops
/// the relay once [`holding`](Self::holding) stops it mid-stream, with a batch unacknowledged,
/// however fast the load, the relay and the broker are.
pub struct HoldAfter {
    inner: Arc<dyn Sink>,
    after: usize,
    confirmed: AtomicUsize,
    holding: AtomicBool,
}

impl std::fmt::Debug for HoldAfter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HoldAfter")
            .field("inner", &self.inner.name())
            .field("after", &self.after)
            .field("confirmed", &self.confirmed())
            .field("holding", &self.holding())
            .finish()
    }
}

impl HoldAfter {
    /// Passes batches to `inner` until `after` events were confirmed.
    #[must_use]
    pub fn new(inner: Arc<dyn Sink>, after: usize) -> Self {
        Self {
            inner,
            after,
            confirmed: AtomicUsize::new(0),
            holding: AtomicBool::new(false),
        }
    }

    /// Whether it has refused a batch: the relay has events it could not deliver.
    #[must_use]
    pub fn holding(&self) -> bool {
        self.holding.load(Ordering::SeqCst)
    }

    /// The events `inner` confirmed.
    #[must_use]
    pub fn confirmed(&self) -> usize {
        self.confirmed.load(Ordering::SeqCst)
    }
}

impl Sink for HoldAfter {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn publish<'a>(&'a self, events: &'a [Outgoing]) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            if self.confirmed() >= self.after {
                self.holding.store(true, Ordering::SeqCst);
                return Err(SinkError::Unavailable {
                    sink: self.name().to_owned(),
                    reason: "held back by the test".to_owned(),
                });
            }
            self.inner.publish(events).await?;
            self.confirmed.fetch_add(events.len(), Ordering::SeqCst);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests;

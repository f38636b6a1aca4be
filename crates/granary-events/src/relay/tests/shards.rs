//! Deliveries gathered across outbox shards: several shards in one publish, each grain in
//! commit order, at most `batch` entries, one publish in flight, the next delivery read while
//! one is published, and nothing removed before the sink confirmed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use granary_core::provider::{DeadLetter, EventId, Outbox, OutboxEntry, OutboxPosition};
use granary_core::{GrainId, PublishedEvent, StorageError};
use tokio::sync::Semaphore;

use super::{Entries, fast, id, now_ms, until};
use crate::{Outgoing, Relay, RelayConfig, Sink, SinkError};

/// An outbox of several shards in memory (an [`Entries`] each); counts the reads made while a
/// publish of the sink is in flight.
struct Shards {
    shards: Vec<Entries>,
    /// Set by the sink while one of its publishes is in flight.
    publishing: Arc<AtomicBool>,
    reads_while_publishing: AtomicUsize,
}

impl Shards {
    /// The events `(shard, grain key)` in this commit order (each grain's versions count up
    /// from 1), of type `tested`.
    fn of(shards: u32, events: &[(u32, &str)], publishing: Arc<AtomicBool>) -> Arc<Self> {
        let mut versions: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
        let by_shard: Vec<Entries> = (0..shards).map(|_| Entries::default()).collect();
        for (i, (shard, key)) in events.iter().enumerate() {
            let version = versions.entry(key).or_default();
            *version += 1;
            by_shard[*shard as usize]
                .0
                .lock()
                .unwrap()
                .push(OutboxEntry {
                    id: EventId {
                        origin: "relay.test".into(),
                        grain: GrainId::new("relay.test", *key),
                        version: *version,
                        index: 0,
                    },
                    event: PublishedEvent {
                        type_name: "tested".into(),
                        payload: b"{}".to_vec(),
                        trace: None,
                    },
                    position: OutboxPosition {
                        shard: *shard,
                        entry: i.to_string(),
                    },
                    committed_ms: now_ms(),
                });
        }
        Arc::new(Self {
            shards: by_shard,
            publishing,
            reads_while_publishing: AtomicUsize::new(0),
        })
    }

    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.0.lock().unwrap().len()).sum()
    }
}

impl Outbox for Shards {
    fn pending(&self, max: usize) -> BoxFuture<'_, Result<Vec<OutboxEntry>, StorageError>> {
        let entries = self
            .shards
            .iter()
            .flat_map(|s| s.0.lock().unwrap().clone())
            .take(max)
            .collect();
        Box::pin(async move { Ok(entries) })
    }

    fn shards(&self) -> u32 {
        u32::try_from(self.shards.len()).unwrap()
    }

    fn pending_in(
        &self,
        shard: u32,
        max: usize,
    ) -> BoxFuture<'_, Result<Vec<OutboxEntry>, StorageError>> {
        if self.publishing.load(Ordering::SeqCst) {
            self.reads_while_publishing.fetch_add(1, Ordering::SeqCst);
        }
        self.shards[shard as usize].pending_in(0, max)
    }

    fn ack(&self, entries: &[OutboxPosition]) -> BoxFuture<'_, Result<(), StorageError>> {
        for shard in &self.shards {
            // `Entries` removes them at once; its future only reports success.
            drop(shard.ack(entries));
        }
        Box::pin(async { Ok(()) })
    }

    fn dead_letter<'a>(
        &'a self,
        _entries: &'a [(OutboxPosition, String)],
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        unreachable!("every event here is deliverable")
    }

    fn dead_letters(
        &self,
        shard: u32,
        max: usize,
    ) -> BoxFuture<'_, Result<Vec<DeadLetter>, StorageError>> {
        self.shards[shard as usize].dead_letters(0, max)
    }

    fn redrive<'a>(
        &'a self,
        _dead: &'a [OutboxPosition],
    ) -> BoxFuture<'a, Result<usize, StorageError>> {
        unreachable!("the relay never re-drives")
    }
}

/// A sink that records every batch (the event ids), holds each publish until the test lets
/// it go (one permit per publish), and counts the publishes in flight at once.
struct Gated {
    batches: std::sync::Mutex<Vec<Vec<String>>>,
    gate: Semaphore,
    publishing: Arc<AtomicBool>,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
    started: AtomicUsize,
}

impl Gated {
    fn new(publishing: Arc<AtomicBool>) -> Arc<Self> {
        Arc::new(Self {
            batches: std::sync::Mutex::default(),
            gate: Semaphore::new(0),
            publishing,
            in_flight: AtomicUsize::new(0),
            most_in_flight: AtomicUsize::new(0),
            started: AtomicUsize::new(0),
        })
    }

    fn batches(&self) -> Vec<Vec<String>> {
        self.batches.lock().unwrap().clone()
    }
}

impl Sink for Gated {
    fn name(&self) -> &str {
        "gated"
    }

    fn publish<'a>(&'a self, events: &'a [Outgoing]) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_in_flight.fetch_max(now, Ordering::SeqCst);
            self.publishing.store(true, Ordering::SeqCst);
            self.started.fetch_add(1, Ordering::SeqCst);
            self.gate.acquire().await.unwrap().forget();
            self.batches
                .lock()
                .unwrap()
                .push(events.iter().map(|e| e.event.id.clone()).collect());
            self.publishing.store(false, Ordering::SeqCst);
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        })
    }
}

/// The ids of `events` `(grain key, version)`.
fn ids(events: &[(&str, u64)]) -> Vec<String> {
    events
        .iter()
        .map(|(key, version)| id(key, *version))
        .collect()
}

#[tokio::test]
async fn one_publish_holds_the_events_of_several_shards_each_grain_in_commit_order() {
    // Grains a and b live in shard 0, c in shard 1, d in shard 2; commits interleave.
    let publishing = Arc::new(AtomicBool::new(false));
    let outbox = Shards::of(
        3,
        &[
            (0, "a"),
            (1, "c"),
            (0, "b"),
            (2, "d"),
            (0, "a"),
            (1, "c"),
            (2, "d"),
            (0, "b"),
            (0, "a"),
        ],
        publishing.clone(),
    );
    let sink = Gated::new(publishing);
    let relay = Relay::builder(outbox.clone())
        .sink(sink.clone())
        .config(fast())
        .start();
    until("the first publish started", || {
        sink.started.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(outbox.len(), 9, "nothing removed before the sink confirmed");
    sink.gate.add_permits(1);
    let delivered = tokio::time::timeout(Duration::from_secs(10), relay.delivered_at_least(9))
        .await
        .expect("every event delivered");
    assert_eq!(delivered, 9);
    assert_eq!(outbox.len(), 0, "removed once confirmed");
    relay.stop().await;

    let batches = sink.batches();
    assert_eq!(
        batches.len(),
        1,
        "one publish for the three shards: {batches:?}"
    );
    // Each shard's entries in its order, the shards one after the other.
    let expected = ids(&[
        ("a", 1),
        ("b", 1),
        ("a", 2),
        ("b", 2),
        ("a", 3),
        ("c", 1),
        ("c", 2),
        ("d", 1),
        ("d", 2),
    ]);
    assert_eq!(batches[0], expected, "each grain in commit order");
}

#[tokio::test]
async fn deliveries_of_at_most_batch_go_round_the_shards_one_publish_at_a_time() {
    let publishing = Arc::new(AtomicBool::new(false));
    // Shard 0 has a backlog of 6 (grain a); shards 1 and 2 have 3 (b) and 2 (c).
    let outbox = Shards::of(
        3,
        &[
            (0, "a"),
            (0, "a"),
            (1, "b"),
            (0, "a"),
            (2, "c"),
            (0, "a"),
            (1, "b"),
            (0, "a"),
            (2, "c"),
            (1, "b"),
            (0, "a"),
        ],
        publishing.clone(),
    );
    let sink = Gated::new(publishing);
    let relay = Relay::builder(outbox.clone())
        .sink(sink.clone())
        .config(RelayConfig { batch: 4, ..fast() })
        .start();

    // While the first delivery is held unconfirmed, the next one is read (and nothing of the
    // first is removed, nothing else published).
    until(
        "the next delivery was read during the first publish",
        || outbox.reads_while_publishing.load(Ordering::SeqCst) > 0,
    )
    .await;
    assert_eq!(
        sink.started.load(Ordering::SeqCst),
        1,
        "one publish in flight"
    );
    assert_eq!(
        outbox.len(),
        11,
        "nothing removed before the sink confirmed"
    );

    sink.gate.add_permits(3);
    let delivered = tokio::time::timeout(Duration::from_secs(10), relay.delivered_at_least(11))
        .await
        .expect("every event delivered");
    assert_eq!(delivered, 11);
    relay.stop().await;

    assert_eq!(
        sink.most_in_flight.load(Ordering::SeqCst),
        1,
        "never two publishes at once"
    );
    let batches = sink.batches();
    // Each delivery takes a share of the batch from every shard (here one entry each), then
    // the rest from the shards that had more, starting one shard further round each time: so
    // shards 1 and 2 are not held back behind shard 0's backlog.
    assert_eq!(
        batches,
        [
            ids(&[("a", 1), ("a", 2), ("b", 1), ("c", 1)]),
            ids(&[("b", 2), ("b", 3), ("c", 2), ("a", 3)]),
            ids(&[("a", 4), ("a", 5), ("a", 6)]),
        ]
    );
    assert_eq!(outbox.len(), 0);
}

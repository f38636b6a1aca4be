//! The relay's per-sink metrics against sinks that are down until told otherwise.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use granary_core::provider::{DeadLetter, EventId, Outbox, OutboxEntry, OutboxPosition};
use granary_core::{GrainId, PublishedEvent, StorageError};

use crate::{Outgoing, Relay, RelayConfig, RelayMetrics, Sink, SinkError};

/// One shard of entries in memory, and its dead-letter stream.
#[derive(Default)]
struct Entries(
    std::sync::Mutex<Vec<OutboxEntry>>,
    std::sync::Mutex<Vec<(DeadLetter, OutboxEntry)>>,
);

impl Outbox for Entries {
    fn pending(&self, max: usize) -> BoxFuture<'_, Result<Vec<OutboxEntry>, StorageError>> {
        self.pending_in(0, max)
    }

    fn shards(&self) -> u32 {
        1
    }

    fn pending_in(
        &self,
        _shard: u32,
        max: usize,
    ) -> BoxFuture<'_, Result<Vec<OutboxEntry>, StorageError>> {
        let entries = self.0.lock().unwrap().iter().take(max).cloned().collect();
        Box::pin(async move { Ok(entries) })
    }

    fn ack(&self, entries: &[OutboxPosition]) -> BoxFuture<'_, Result<(), StorageError>> {
        self.0
            .lock()
            .unwrap()
            .retain(|e| !entries.contains(&e.position));
        Box::pin(async { Ok(()) })
    }

    fn dead_letter<'a>(
        &'a self,
        entries: &'a [(OutboxPosition, String)],
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        let mut outbox = self.0.lock().unwrap();
        let mut dead = self.1.lock().unwrap();
        for (position, reason) in entries {
            if let Some(at) = outbox.iter().position(|e| &e.position == position) {
                let entry = outbox.remove(at);
                let letter = DeadLetter {
                    position: OutboxPosition {
                        shard: 0,
                        entry: format!("dead-{}", dead.len()),
                    },
                    reason: reason.clone(),
                    dead_ms: now_ms(),
                    id: Some(entry.id.clone()),
                    type_name: Some(entry.event.type_name.clone()),
                };
                dead.push((letter, entry));
            }
        }
        Box::pin(async { Ok(()) })
    }

    fn dead_letters(
        &self,
        _shard: u32,
        max: usize,
    ) -> BoxFuture<'_, Result<Vec<DeadLetter>, StorageError>> {
        let letters = self
            .1
            .lock()
            .unwrap()
            .iter()
            .take(max)
            .map(|(l, _)| l.clone())
            .collect();
        Box::pin(async move { Ok(letters) })
    }

    fn redrive<'a>(
        &'a self,
        _dead: &'a [OutboxPosition],
    ) -> BoxFuture<'a, Result<usize, StorageError>> {
        unreachable!("the relay never re-drives")
    }
}

/// A sink that refuses every batch while it is down.
struct Switch {
    down: AtomicBool,
    received: AtomicUsize,
}

impl Switch {
    fn new(down: bool) -> Arc<Self> {
        Arc::new(Self {
            down: AtomicBool::new(down),
            received: AtomicUsize::new(0),
        })
    }
}

impl Sink for Switch {
    fn name(&self) -> &str {
        "switch"
    }

    fn publish<'a>(&'a self, events: &'a [Outgoing]) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            if self.down.load(Ordering::SeqCst) {
                return Err(SinkError::Unavailable {
                    sink: "switch".into(),
                    reason: "down".into(),
                });
            }
            self.received.fetch_add(events.len(), Ordering::SeqCst);
            Ok(())
        })
    }
}

fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// An outbox of `n` events, committed `age` ago.
fn outbox(n: u32, age: Duration) -> Arc<Entries> {
    let committed_ms = now_ms() - u64::try_from(age.as_millis()).unwrap();
    let entries = (0..n)
        .map(|i| OutboxEntry {
            id: EventId {
                origin: "relay.test".into(),
                grain: GrainId::new("relay.test", "k"),
                version: u64::from(i) + 1,
                index: 0,
            },
            event: PublishedEvent {
                type_name: "tested".into(),
                payload: b"{}".to_vec(),
                trace: None,
            },
            position: OutboxPosition {
                shard: 0,
                entry: i.to_string(),
            },
            committed_ms,
        })
        .collect();
    Arc::new(Entries(
        std::sync::Mutex::new(entries),
        std::sync::Mutex::default(),
    ))
}

fn fast() -> RelayConfig {
    RelayConfig {
        idle_poll: Duration::from_millis(5),
        retry_min: Duration::from_millis(5),
        retry_max: Duration::from_millis(20),
        ..RelayConfig::default()
    }
}

async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The value of the sample `name{sink="<sink>"}` in the rendered text.
fn sample(metrics: &RelayMetrics, name: &str, sink: &str) -> f64 {
    let text = metrics.render();
    let prefix = format!("{name}{{sink=\"{sink}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} in:\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_sink_that_is_down_lags_more_and_more_then_catches_up() {
    let entries = outbox(3, Duration::from_secs(5));
    let sink = Switch::new(true);
    let relay = Relay::builder(entries.clone())
        .sink(sink.clone())
        .config(fast())
        .start();
    let metrics = relay.metrics();
    assert_eq!(metrics.sinks(), ["switch"]);

    until("the relay failed twice", || {
        metrics.failures("switch") >= Some(2)
    })
    .await;
    let first = metrics.lag("switch").unwrap();
    assert!(first >= Duration::from_secs(5), "{first:?}");
    until("the lag grows while the sink is down", || {
        metrics.lag("switch").unwrap() > first
    })
    .await;
    assert_eq!(metrics.delivered("switch"), Some(0));
    assert!(sample(&metrics, "granary_relay_lag_seconds", "switch") >= 5.0);
    assert!(sample(&metrics, "granary_relay_failures_total", "switch") >= 2.0);
    assert_eq!(
        entries.0.lock().unwrap().len(),
        3,
        "nothing left the outbox"
    );

    sink.down.store(false, Ordering::SeqCst);
    until("the outbox drained", || {
        entries.0.lock().unwrap().is_empty()
    })
    .await;
    assert_eq!(sink.received.load(Ordering::SeqCst), 3);
    assert_eq!(metrics.delivered("switch"), Some(3));
    assert_eq!(metrics.lag("switch"), Some(Duration::ZERO));
    assert_eq!(sample(&metrics, "granary_relay_lag_seconds", "switch"), 0.0);
    assert_eq!(
        sample(&metrics, "granary_relay_delivered_total", "switch"),
        3.0
    );
    assert!(metrics.render().ends_with("# EOF\n"));
    relay.stop().await;
}

#[tokio::test]
async fn each_sink_has_its_own_lag_and_counters() {
    let entries = outbox(4, Duration::from_secs(2));
    let up = Switch::new(false);
    let down = Switch::new(true);
    // The same sink added twice is one sink; a second sink of the same name gets `-2`.
    let relay = Relay::builder(entries.clone())
        .sink(up.clone())
        .sink(down.clone())
        .route("other", up.clone(), "elsewhere")
        .config(fast())
        .start();
    let metrics = relay.metrics();
    assert_eq!(metrics.sinks(), ["switch", "switch-2"]);

    until("the second sink failed", || {
        metrics.failures("switch-2") >= Some(2)
    })
    .await;
    // The first sink confirmed its batch: caught up, while the second falls behind.
    assert_eq!(metrics.delivered("switch"), Some(4));
    assert_eq!(metrics.lag("switch"), Some(Duration::ZERO));
    assert_eq!(metrics.failures("switch"), Some(0));
    assert!(metrics.lag("switch-2").unwrap() >= Duration::from_secs(2));
    assert_eq!(
        entries.0.lock().unwrap().len(),
        4,
        "not removed before every sink confirmed"
    );

    down.down.store(false, Ordering::SeqCst);
    until("the outbox drained", || {
        entries.0.lock().unwrap().is_empty()
    })
    .await;
    assert_eq!(metrics.delivered("switch-2"), Some(4));
    assert_eq!(metrics.lag("switch-2"), Some(Duration::ZERO));
    assert_eq!(metrics.lag("nowhere"), None);
    relay.stop().await;
}

/// A sink whose publish never returns (a broker that accepted the connection and went silent).
struct Hung {
    started: AtomicBool,
}

impl Sink for Hung {
    fn name(&self) -> &str {
        "hung"
    }

    fn publish<'a>(&'a self, _events: &'a [Outgoing]) -> BoxFuture<'a, Result<(), SinkError>> {
        self.started.store(true, Ordering::SeqCst);
        Box::pin(futures::future::pending())
    }
}

#[tokio::test]
async fn stopping_abandons_a_hung_publish_after_the_grace_and_keeps_its_events() {
    let entries = outbox(3, Duration::ZERO);
    let sink = Arc::new(Hung {
        started: AtomicBool::new(false),
    });
    let grace = Duration::from_millis(200);
    let relay = Relay::builder(entries.clone())
        .sink(sink.clone())
        .config(RelayConfig {
            stop_grace: grace,
            ..fast()
        })
        .start();
    until("the publish started", || {
        sink.started.load(Ordering::SeqCst)
    })
    .await;
    let stopping = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), relay.stop())
        .await
        .expect("stop returns although the publish never does");
    let took = stopping.elapsed();
    assert!(took >= grace, "the publish had its grace: {took:?}");
    assert_eq!(
        entries.0.lock().unwrap().len(),
        3,
        "the abandoned batch stays in the outbox"
    );
}

/// A sink that takes 100 ms per publish.
struct Slow {
    started: AtomicBool,
    received: AtomicUsize,
}

impl Sink for Slow {
    fn name(&self) -> &str {
        "slow"
    }

    fn publish<'a>(&'a self, events: &'a [Outgoing]) -> BoxFuture<'a, Result<(), SinkError>> {
        self.started.store(true, Ordering::SeqCst);
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            self.received.fetch_add(events.len(), Ordering::SeqCst);
            Ok(())
        })
    }
}

#[tokio::test]
async fn stopping_lets_a_publish_in_flight_finish_within_the_grace() {
    let entries = outbox(3, Duration::ZERO);
    let sink = Arc::new(Slow {
        started: AtomicBool::new(false),
        received: AtomicUsize::new(0),
    });
    let relay = Relay::builder(entries.clone())
        .sink(sink.clone())
        .config(fast())
        .start();
    until("the publish started", || {
        sink.started.load(Ordering::SeqCst)
    })
    .await;
    relay.stop().await;
    // Confirmed and acknowledged: a clean stop leaves nothing to deliver twice.
    assert_eq!(sink.received.load(Ordering::SeqCst), 3);
    assert!(entries.0.lock().unwrap().is_empty());
}

/// An outbox of the events `(grain key, type)`, in this commit order: each grain's versions
/// count up from 1.
fn outbox_of(events: &[(&str, &str)]) -> Arc<Entries> {
    let mut versions: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
    let entries = events
        .iter()
        .enumerate()
        .map(|(i, (key, type_name))| {
            let version = versions.entry(key).or_default();
            *version += 1;
            OutboxEntry {
                id: EventId {
                    origin: "relay.test".into(),
                    grain: GrainId::new("relay.test", *key),
                    version: *version,
                    index: 0,
                },
                event: PublishedEvent {
                    type_name: (*type_name).into(),
                    payload: b"{}".to_vec(),
                    trace: None,
                },
                position: OutboxPosition {
                    shard: 0,
                    entry: i.to_string(),
                },
                committed_ms: now_ms(),
            }
        })
        .collect();
    Arc::new(Entries(
        std::sync::Mutex::new(entries),
        std::sync::Mutex::default(),
    ))
}

/// A sink that records every batch it confirms (topic and event id of each event), and
/// refuses every batch holding the event `refuse`.
struct Recording {
    batches: std::sync::Mutex<Vec<Vec<(String, String)>>>,
    refuse: Option<String>,
    refused: AtomicUsize,
}

impl Recording {
    fn new(refuse: Option<&str>) -> Arc<Self> {
        Arc::new(Self {
            batches: std::sync::Mutex::default(),
            refuse: refuse.map(str::to_owned),
            refused: AtomicUsize::new(0),
        })
    }

    /// Every event confirmed, in the order received.
    fn events(&self) -> Vec<(String, String)> {
        self.batches.lock().unwrap().concat()
    }
}

impl Sink for Recording {
    fn name(&self) -> &str {
        "recording"
    }

    fn publish<'a>(&'a self, events: &'a [Outgoing]) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            if let Some(refuse) = &self.refuse
                && events.iter().any(|e| &e.event.id == refuse)
            {
                self.refused.fetch_add(1, Ordering::SeqCst);
                return Err(SinkError::Refused {
                    sink: "recording".into(),
                    reason: format!("{refuse} is too large"),
                });
            }
            self.batches.lock().unwrap().push(
                events
                    .iter()
                    .map(|e| (e.topic.to_string(), e.event.id.clone()))
                    .collect(),
            );
            Ok(())
        })
    }
}

fn id(key: &str, version: u64) -> String {
    crate::event_id("relay.test", &GrainId::new("relay.test", key), version, 0)
}

#[tokio::test]
async fn a_sink_gets_each_grains_events_in_commit_order_across_topics() {
    // Two grains, each with events of three types interleaved; one type routed to its own
    // topic on the same sink.
    let entries = outbox_of(&[
        ("a", "match.created"),
        ("b", "match.created"),
        ("a", "match.started"),
        ("a", "match.ended"),
        ("b", "match.started"),
        ("a", "match.created"),
        ("b", "match.ended"),
        ("a", "match.started"),
    ]);
    let sink = Recording::new(None);
    let relay = Relay::builder(entries.clone())
        .sink(sink.clone())
        .route("match.ended", sink.clone(), "results")
        .config(fast())
        .start();
    until("the outbox drained", || {
        entries.0.lock().unwrap().is_empty()
    })
    .await;
    relay.stop().await;

    let batches = sink.batches.lock().unwrap().clone();
    assert_eq!(
        batches.len(),
        1,
        "one batch for the sink, every topic in it"
    );
    let got = sink.events();
    let expected: Vec<(String, String)> = [
        ("match.created", "a", 1),
        ("match.created", "b", 1),
        ("match.started", "a", 2),
        ("results", "a", 3),
        ("match.started", "b", 2),
        ("match.created", "a", 4),
        ("results", "b", 3),
        ("match.started", "a", 5),
    ]
    .iter()
    .map(|(topic, key, version)| ((*topic).to_owned(), id(key, *version)))
    .collect();
    assert_eq!(got, expected, "commit order, across topics");
}

#[tokio::test]
async fn an_event_refused_too_often_is_dead_lettered_and_the_events_after_it_go_out() {
    let entries = outbox_of(&[
        ("a", "t.one"),
        ("b", "t.two"),
        ("a", "t.two"),
        ("b", "t.one"),
        ("a", "t.one"),
    ]);
    let poison = id("a", 2);
    let sink = Recording::new(Some(&poison));
    let relay = Relay::builder(entries.clone())
        .sink(sink.clone())
        .config(RelayConfig {
            max_refusals: 3,
            ..fast()
        })
        .start();
    let metrics = relay.metrics();
    until("the outbox drained", || {
        entries.0.lock().unwrap().is_empty()
    })
    .await;
    assert_eq!(relay.dead_lettered(), 1);
    relay.stop().await;

    let delivered: Vec<String> = sink.events().into_iter().map(|(_, id)| id).collect();
    assert_eq!(
        delivered,
        [id("a", 1), id("b", 1), id("b", 2), id("a", 3)],
        "every other event, in commit order"
    );
    // Once as part of the batch, then three times alone.
    assert_eq!(sink.refused.load(Ordering::SeqCst), 4);
    let dead = entries.1.lock().unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].1.id.version, 2);
    assert_eq!(dead[0].0.type_name.as_deref(), Some("t.two"));
    assert!(
        dead[0].0.reason.contains("recording refused it 3 times"),
        "{}",
        dead[0].0.reason
    );
    assert_eq!(metrics.dead_lettered("recording"), Some(1));
    assert_eq!(
        sample(&metrics, "granary_relay_dead_lettered_total", "recording"),
        1.0
    );
    assert_eq!(metrics.delivered("recording"), Some(4));
}

#[tokio::test]
async fn an_undecodable_entry_is_dead_lettered_not_dropped() {
    let entries = outbox_of(&[("a", "t.one"), ("a", "t.one"), ("a", "t.one")]);
    entries.0.lock().unwrap()[1].event.payload = b"\xff not JSON".to_vec();
    let sink = Recording::new(None);
    let relay = Relay::builder(entries.clone())
        .sink(sink.clone())
        .config(fast())
        .start();
    let metrics = relay.metrics();
    until("the outbox drained", || {
        entries.0.lock().unwrap().is_empty()
    })
    .await;
    assert_eq!(relay.dead_lettered(), 1);
    assert_eq!(relay.delivered(), 2);
    relay.stop().await;

    let delivered: Vec<String> = sink.events().into_iter().map(|(_, id)| id).collect();
    assert_eq!(delivered, [id("a", 1), id("a", 3)]);
    let dead = entries.1.lock().unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].1.id.version, 2);
    assert!(
        dead[0].0.reason.contains("undecodable"),
        "{}",
        dead[0].0.reason
    );
    assert_eq!(metrics.undecodable(), 1);
    assert!(
        metrics
            .render()
            .contains("granary_relay_undecodable_total 1")
    );
}

mod shards;

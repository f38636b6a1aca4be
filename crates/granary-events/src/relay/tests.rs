//! The relay's per-sink metrics against sinks that are down until told otherwise.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use granary_core::provider::{EventId, Outbox, OutboxEntry, OutboxPosition};
use granary_core::{GrainId, PublishedEvent, StorageError};

use crate::{EventEnvelope, Relay, RelayConfig, RelayMetrics, Sink, SinkError};

/// One shard of entries in memory.
#[derive(Default)]
struct Entries(std::sync::Mutex<Vec<OutboxEntry>>);

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

    fn publish<'a>(
        &'a self,
        _topic: &'a str,
        events: &'a [EventEnvelope],
    ) -> BoxFuture<'a, Result<(), SinkError>> {
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
    Arc::new(Entries(std::sync::Mutex::new(entries)))
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

    fn publish<'a>(
        &'a self,
        _topic: &'a str,
        _events: &'a [EventEnvelope],
    ) -> BoxFuture<'a, Result<(), SinkError>> {
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

    fn publish<'a>(
        &'a self,
        _topic: &'a str,
        events: &'a [EventEnvelope],
    ) -> BoxFuture<'a, Result<(), SinkError>> {
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

//! [`RelayMetrics`]: what a relay counts per sink, in the Prometheus text format.
//!
//! | metric | kind | labels |
//! |--------|------|--------|
//! | `granary_relay_lag_seconds` | gauge | `sink` |
//! | `granary_relay_delivered_total` | counter | `sink` |
//! | `granary_relay_failures_total` | counter | `sink` |
//! | `granary_relay_dead_lettered_total` | counter | `sink` |
//! | `granary_relay_undecodable_total` | counter | |
//!
//! `dead_lettered` counts the events a sink refused
//! [`max_refusals`](crate::RelayConfig::max_refusals) times, moved to their shard's
//! dead-letter stream; `undecodable` the outbox entries moved there because they hold no
//! readable event. Alert on either: each is an event that did not reach its queue.
//!
//! The lag of a sink is the age of the oldest committed event this relay has read from the
//! outbox and that sink has not confirmed yet, 0 when it has confirmed everything read. It is
//! computed when the metrics are rendered, so a sink that is down shows a lag that keeps
//! growing even though the relay is only waiting to retry.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// A relay's per-sink metrics: cheap to clone, readable while the relay runs and after it
/// stopped.
#[derive(Clone)]
pub struct RelayMetrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RelayMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayMetrics")
            .field(
                "sinks",
                &self.inner.sinks.iter().map(|s| &s.name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl RelayMetrics {
    /// The sinks' labels, in the order they were added to the relay.
    #[must_use]
    pub fn sinks(&self) -> Vec<&str> {
        self.inner.sinks.iter().map(|s| s.name.as_str()).collect()
    }

    /// How far `sink` is behind: the age of the oldest event read and not yet confirmed by it
    /// (zero when caught up); `None` if the relay has no sink of that label.
    #[must_use]
    pub fn lag(&self, sink: &str) -> Option<Duration> {
        self.stats(sink).map(|s| s.lag(now_ms()))
    }

    /// Events `sink` confirmed; `None` if the relay has no sink of that label.
    #[must_use]
    pub fn delivered(&self, sink: &str) -> Option<u64> {
        self.stats(sink).map(|s| s.delivered.get())
    }

    /// Failed publish attempts to `sink` (each retried); `None` if the relay has no sink of
    /// that label.
    #[must_use]
    pub fn failures(&self, sink: &str) -> Option<u64> {
        self.stats(sink).map(|s| s.failures.get())
    }

    /// Events `sink` refused too often, moved to the dead-letter stream; `None` if the relay
    /// has no sink of that label.
    #[must_use]
    pub fn dead_lettered(&self, sink: &str) -> Option<u64> {
        self.stats(sink).map(|s| s.dead_lettered.get())
    }

    /// Outbox entries moved to the dead-letter stream because they hold no readable event.
    #[must_use]
    pub fn undecodable(&self) -> u64 {
        self.inner.undecodable.get()
    }

    pub(crate) fn undecodable_counter(&self) -> Counter {
        self.inner.undecodable.clone()
    }

    /// Appends the metric families, without the closing `# EOF` line, to `out`: an endpoint
    /// that serves several sources (a silo's metrics and its relay's) encodes each, then ends
    /// the text with `# EOF`.
    pub fn encode(&self, out: &mut String) {
        let now = now_ms();
        for sink in &self.inner.sinks {
            sink.lag.set(sink.lag(now).as_secs_f64());
        }
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode_registry(out, &self.inner.registry);
    }

    /// The metrics in the Prometheus (OpenMetrics) text format, `# EOF` included.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.encode(&mut out);
        out.push_str("# EOF\n");
        out
    }

    fn stats(&self, sink: &str) -> Option<&SinkStats> {
        self.inner
            .sinks
            .iter()
            .find(|s| s.name == sink)
            .map(AsRef::as_ref)
    }
}

struct Inner {
    registry: Registry,
    sinks: Vec<Arc<SinkStats>>,
    undecodable: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkLabels {
    sink: String,
}

/// The handles of one sink, shared by every route to it.
pub(crate) struct SinkStats {
    name: String,
    delivered: Counter,
    failures: Counter,
    dead_lettered: Counter,
    lag: Gauge<f64, AtomicU64>,
    /// Commit time (ms since the epoch) of the oldest event read and not yet confirmed by the
    /// sink; 0 when there is none.
    oldest_unconfirmed_ms: AtomicU64,
}

impl SinkStats {
    /// Events committed at `committed_ms` (the oldest of a batch) await this sink.
    pub(crate) fn pending_since(&self, committed_ms: u64) {
        // 0 means "none": an event of the epoch's first millisecond counts from 1.
        let committed_ms = committed_ms.max(1);
        let _ = self.oldest_unconfirmed_ms.fetch_update(
            Ordering::Relaxed,
            Ordering::Relaxed,
            |current| (current == 0 || committed_ms < current).then_some(committed_ms),
        );
    }

    /// The sink confirmed every event read so far.
    pub(crate) fn caught_up(&self) {
        self.oldest_unconfirmed_ms.store(0, Ordering::Relaxed);
    }

    /// The sink confirmed `events` events.
    pub(crate) fn confirmed(&self, events: usize) {
        self.delivered.inc_by(events as u64);
    }

    /// The sink refused an event too often: it goes to the dead-letter stream.
    pub(crate) fn dead_lettered(&self) {
        self.dead_lettered.inc();
    }

    /// A publish to the sink failed.
    pub(crate) fn failed(&self) {
        self.failures.inc();
    }

    fn lag(&self, now_ms: u64) -> Duration {
        match self.oldest_unconfirmed_ms.load(Ordering::Relaxed) {
            0 => Duration::ZERO,
            // The store's clock may run ahead of ours: never a negative lag.
            oldest => Duration::from_millis(now_ms.saturating_sub(oldest)),
        }
    }
}

/// Builds the metrics of a relay's sinks, one per distinct label.
pub(crate) fn build(names: &[String]) -> (RelayMetrics, Vec<Arc<SinkStats>>) {
    let lag = Family::<SinkLabels, Gauge<f64, AtomicU64>>::default();
    let delivered = Family::<SinkLabels, Counter>::default();
    let failures = Family::<SinkLabels, Counter>::default();
    let dead_lettered = Family::<SinkLabels, Counter>::default();
    let undecodable = Counter::default();
    let mut registry = Registry::with_prefix("granary_relay");
    registry.register(
        "lag_seconds",
        "Age of the oldest committed event read by this silo's relay and not yet confirmed by the sink (0 when caught up)",
        lag.clone(),
    );
    registry.register("delivered", "Events the sink confirmed", delivered.clone());
    registry.register(
        "failures",
        "Publish attempts to the sink that failed (each is retried)",
        failures.clone(),
    );
    registry.register(
        "dead_lettered",
        "Events the sink refused max_refusals times, moved to their shard's dead-letter stream",
        dead_lettered.clone(),
    );
    registry.register(
        "undecodable",
        "Outbox entries holding no readable event, moved to their shard's dead-letter stream",
        undecodable.clone(),
    );
    let sinks: Vec<Arc<SinkStats>> = names
        .iter()
        .map(|name| {
            let labels = SinkLabels { sink: name.clone() };
            Arc::new(SinkStats {
                name: name.clone(),
                delivered: delivered.get_or_create(&labels).clone(),
                failures: failures.get_or_create(&labels).clone(),
                dead_lettered: dead_lettered.get_or_create(&labels).clone(),
                lag: lag.get_or_create(&labels).clone(),
                oldest_unconfirmed_ms: AtomicU64::new(0),
            })
        })
        .collect();
    let metrics = RelayMetrics {
        inner: Arc::new(Inner {
            registry,
            sinks: sinks.clone(),
            undecodable,
        }),
    };
    (metrics, sinks)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

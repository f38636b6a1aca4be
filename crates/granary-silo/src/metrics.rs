//! [`SiloMetrics`]: what a silo counts, in the Prometheus text format.
//!
//! | metric | kind | labels |
//! |--------|------|--------|
//! | `granary_calls_total` | counter | `grain_type`, `method` |
//! | `granary_call_errors_total` | counter (calls whose turn ended in an error) | `grain_type`, `method` |
//! | `granary_call_duration_seconds` | histogram (two-way calls) | `grain_type`, `method` |
//! | `granary_activations` | gauge | `grain_type` |
//! | `granary_queued_requests` | gauge | |
//! | `granary_storage_conflicts_total` | counter | |
//! | `granary_forwards_total` | counter | |
//! | `granary_call_retries_total` | counter | |
//! | `granary_membership_changes_total` | counter | |
//! | `granary_refused_total` | counter | `limit`: `activations`, `queue`, `key` |

mod calls;

use std::sync::{Arc, Weak};
use std::time::Duration;

use dashmap::DashMap;
use granary_core::MethodInfo;
use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use self::calls::CallStats;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    grain_type: String,
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabels {
    grain_type: String,
}

/// A limit that refused a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `SiloConfig::max_activations`: a new activation was refused.
    Activations,
    /// `SiloConfig::max_queued_requests`: a call was refused by a full queue.
    Queue,
    /// `MAX_KEY_LEN`: an envelope with a too long key arrived.
    Key,
}

impl Refusal {
    const ALL: [Self; 3] = [Self::Activations, Self::Queue, Self::Key];

    fn label(self) -> &'static str {
        match self {
            Self::Activations => "activations",
            Self::Queue => "queue",
            Self::Key => "key",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    limit: String,
}

/// The per-method handles of each grain type, made when its first activation is.
type MethodsByType = DashMap<&'static str, Arc<[MethodMetrics]>>;

/// The counters of one silo.
pub(crate) struct Metrics {
    registry: Mutex<Registry>,
    activations: Family<TypeLabels, Gauge>,
    queued: Gauge,
    conflicts: Counter,
    forwards: Counter,
    retries: Counter,
    membership_changes: Counter,
    /// The refusal counters, in `Refusal::ALL` order.
    refusals: [Counter; 3],
    /// The per-method handles of each grain type (shared with the registry's collector).
    types: Arc<MethodsByType>,
}

/// The call counter and duration histogram of one method, sharded by thread (see `calls`):
/// the calls of one method on two workers do not contend.
#[derive(Debug)]
pub(crate) struct MethodMetrics {
    grain_type: &'static str,
    method: &'static str,
    stats: CallStats,
}

impl MethodMetrics {
    /// Records one call, how long it took if it was timed, and whether it `failed` (its turn
    /// ended in an error: a domain error, a rejection, a storage failure, …).
    pub(crate) fn record(&self, took: Option<Duration>, failed: bool) {
        self.stats.record(took, failed);
    }

    fn labels(&self) -> CallLabels {
        CallLabels {
            grain_type: self.grain_type.to_owned(),
            method: self.method.to_owned(),
        }
    }
}

/// A counter of a method's calls (`CallStats::calls`, `CallStats::errors`).
type CountOf = fn(&CallStats) -> u64;

/// Encodes `granary_calls_total`, `granary_call_errors_total` and
/// `granary_call_duration_seconds` from the methods' sharded counters at each scrape.
#[derive(Debug)]
struct CallCollector {
    types: Arc<MethodsByType>,
}

impl Collector for CallCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let mut types: Vec<Arc<[MethodMetrics]>> =
            self.types.iter().map(|t| t.value().clone()).collect();
        types.sort_by_key(|methods| methods.first().map(|m| m.grain_type));
        let methods = || types.iter().flat_map(|t| t.iter());
        if methods().next().is_none() {
            return Ok(()); // no family without a member, as `Family` does
        }
        let counters: [(&str, &str, CountOf); 2] = [
            (
                "calls",
                "Calls handled, by grain type and method",
                CallStats::calls,
            ),
            (
                "call_errors",
                "Calls whose turn ended in an error, by grain type and method",
                CallStats::errors,
            ),
        ];
        for (name, help, count) in counters {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for m in methods() {
                family
                    .encode_family(&m.labels())?
                    .encode_counter::<NoLabelSet, _, u64>(&count(&m.stats), None)?;
            }
        }
        let mut durations = encoder.encode_descriptor(
            "call_duration_seconds",
            "Time from a turn's start to its end, by grain type and method",
            None,
            MetricType::Histogram,
        )?;
        for m in methods() {
            let snap = m.stats.snapshot();
            durations
                .encode_family(&m.labels())?
                .encode_histogram::<NoLabelSet>(
                    snap.sum_seconds,
                    snap.timed,
                    &snap.buckets,
                    None,
                )?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let activations = Family::<TypeLabels, Gauge>::default();
        let queued = Gauge::default();
        let conflicts = Counter::default();
        let forwards = Counter::default();
        let retries = Counter::default();
        let membership_changes = Counter::default();
        let refusals = Family::<RefusalLabels, Counter>::default();
        let types = Arc::new(MethodsByType::new());
        let mut registry = Registry::with_prefix("granary");
        registry.register_collector(Box::new(CallCollector {
            types: types.clone(),
        }));
        registry.register("activations", "Active grains, by type", activations.clone());
        registry.register(
            "queued_requests",
            "Requests waiting in activations' queues",
            queued.clone(),
        );
        registry.register(
            "storage_conflicts",
            "Commits refused as stale or with an unknown outcome",
            conflicts.clone(),
        );
        registry.register(
            "forwards",
            "Calls forwarded to the silo owning their grain",
            forwards.clone(),
        );
        registry.register(
            "call_retries",
            "Calls of this silo's grains that another silo refused without running them (it was shutting down), placed and sent again",
            retries.clone(),
        );
        registry.register(
            "membership_changes",
            "Changes of the active silos seen by this silo",
            membership_changes.clone(),
        );
        registry.register(
            "refused",
            "Calls refused by a limit of the silo, by limit",
            refusals.clone(),
        );
        let refusals = Refusal::ALL.map(|limit| {
            refusals
                .get_or_create(&RefusalLabels {
                    limit: limit.label().to_owned(),
                })
                .clone()
        });
        Self {
            registry: Mutex::new(registry),
            activations,
            queued,
            conflicts,
            forwards,
            retries,
            membership_changes,
            refusals,
            types,
        }
    }

    /// Counts a commit refused as stale or with an unknown outcome.
    pub(crate) fn conflict(&self) {
        self.conflicts.inc();
    }

    /// Counts a call forwarded towards its grain's owner.
    pub(crate) fn forwarded(&self) {
        self.forwards.inc();
    }

    /// Counts a call sent again after a refusal that said it did not run.
    pub(crate) fn retried(&self) {
        self.retries.inc();
    }

    /// Counts a change of the active silos.
    pub(crate) fn membership_changed(&self) {
        self.membership_changes.inc();
    }

    /// Counts a call refused by `limit`.
    pub(crate) fn refused(&self, limit: Refusal) {
        let i = Refusal::ALL
            .iter()
            .position(|l| *l == limit)
            .expect("ALL lists every limit");
        self.refusals[i].inc();
    }

    /// Calls handled so far, of every type and method.
    pub(crate) fn calls_total(&self) -> u64 {
        self.types
            .iter()
            .map(|methods| methods.value().iter().map(|m| m.stats.calls()).sum::<u64>())
            .sum()
    }

    /// The handles of `grain_type`'s `methods`, in their order: the activations of a type
    /// share them, and a call finds its own by index, with no lookup by label.
    pub(crate) fn methods_of(
        &self,
        grain_type: &'static str,
        methods: &'static [MethodInfo],
    ) -> Arc<[MethodMetrics]> {
        if let Some(known) = self.types.get(grain_type) {
            return known.clone();
        }
        self.types
            .entry(grain_type)
            .or_insert_with(|| {
                methods
                    .iter()
                    .map(|m| MethodMetrics {
                        grain_type,
                        method: m.name,
                        stats: CallStats::default(),
                    })
                    .collect()
            })
            .clone()
    }
}

/// What the metrics read from the silo when they are rendered: the counts that are not
/// kept as counters (implemented by the router, which owns the catalog).
pub(crate) trait Census: Send + Sync {
    /// The silo's counters.
    fn metrics(&self) -> &Metrics;
    /// The activations per grain type, sorted by type name.
    fn activations_by_type(&self) -> Vec<(String, u64)>;
    /// Requests waiting in the activations' queues.
    fn queued(&self) -> usize;
}

/// A handle on a silo's metrics, for an HTTP endpoint: cheap to clone, outlives nothing.
#[derive(Clone)]
pub struct SiloMetrics {
    pub(crate) source: Weak<dyn Census>,
}

impl std::fmt::Debug for SiloMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SiloMetrics")
            .field("live", &(self.source.strong_count() > 0))
            .finish()
    }
}

impl SiloMetrics {
    /// The metrics in the Prometheus (OpenMetrics) text format, `# EOF` included; `None` once
    /// the silo is gone.
    #[must_use]
    pub fn render(&self) -> Option<String> {
        let mut out = String::new();
        self.encode(&mut out).then(|| {
            out.push_str("# EOF\n");
            out
        })
    }

    /// Appends the metric families, without the closing `# EOF` line, to `out`: an endpoint
    /// that serves several sources (the silo's metrics and its relay's) encodes each, then
    /// ends the text with `# EOF`. Returns false (and appends nothing) once the silo is gone.
    pub fn encode(&self, out: &mut String) -> bool {
        match self.source.upgrade() {
            Some(source) => {
                encode(&*source, out);
                true
            }
            None => false,
        }
    }
}

fn encode(source: &dyn Census, out: &mut String) {
    let metrics = source.metrics();
    let queued = i64::try_from(source.queued()).unwrap_or(i64::MAX);
    metrics.activations.clear();
    for (grain_type, n) in source.activations_by_type() {
        metrics
            .activations
            .get_or_create(&TypeLabels { grain_type })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }
    metrics.queued.set(queued);
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode_registry(out, &metrics.registry.lock());
}

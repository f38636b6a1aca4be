//! [`SiloMetrics`]: what a silo counts, in the Prometheus text format.
//!
//! | metric | kind | labels |
//! |--------|------|--------|
//! | `granary_calls_total` | counter | `grain_type`, `method` |
//! | `granary_call_duration_seconds` | histogram | `grain_type`, `method` |
//! | `granary_activations` | gauge | `grain_type` |
//! | `granary_queued_requests` | gauge | |
//! | `granary_storage_conflicts_total` | counter | |
//! | `granary_forwards_total` | counter | |
//! | `granary_membership_changes_total` | counter | |

use std::sync::{Arc, Weak};
use std::time::Duration;

use dashmap::DashMap;
use granary_core::MethodId;
use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::runtime::Runtime;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    grain_type: String,
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabels {
    grain_type: String,
}

/// The counters of one silo.
pub(crate) struct Metrics {
    registry: Mutex<Registry>,
    calls: Family<CallLabels, Counter>,
    durations: Family<CallLabels, Histogram>,
    activations: Family<TypeLabels, Gauge>,
    queued: Gauge,
    pub(crate) conflicts: Counter,
    pub(crate) forwards: Counter,
    pub(crate) membership_changes: Counter,
    /// The per-method handles, found without building labels on every call.
    handles: DashMap<(&'static str, MethodId), (Counter, Histogram)>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let calls = Family::<CallLabels, Counter>::default();
        let durations = Family::<CallLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.000_01, 2.0, 20))) as fn() -> Histogram,
        );
        let activations = Family::<TypeLabels, Gauge>::default();
        let queued = Gauge::default();
        let conflicts = Counter::default();
        let forwards = Counter::default();
        let membership_changes = Counter::default();
        let mut registry = Registry::with_prefix("granary");
        registry.register(
            "calls",
            "Calls handled, by grain type and method",
            calls.clone(),
        );
        registry.register(
            "call_duration_seconds",
            "Time from a turn's start to its end, by grain type and method",
            durations.clone(),
        );
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
            "membership_changes",
            "Changes of the active silos seen by this silo",
            membership_changes.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            calls,
            durations,
            activations,
            queued,
            conflicts,
            forwards,
            membership_changes,
            handles: DashMap::new(),
        }
    }

    /// Records one call of `method` of `grain_type` that took `took`.
    pub(crate) fn call(
        &self,
        grain_type: &'static str,
        method: MethodId,
        name: &str,
        took: Duration,
    ) {
        let handles = self.handles.entry((grain_type, method)).or_insert_with(|| {
            let labels = CallLabels {
                grain_type: grain_type.to_owned(),
                method: name.to_owned(),
            };
            (
                self.calls.get_or_create(&labels).clone(),
                self.durations.get_or_create(&labels).clone(),
            )
        });
        handles.0.inc();
        handles.1.observe(took.as_secs_f64());
    }
}

/// A handle on a silo's metrics, for an HTTP endpoint: cheap to clone, outlives nothing.
#[derive(Debug, Clone)]
pub struct SiloMetrics {
    pub(crate) runtime: Weak<Runtime>,
}

impl SiloMetrics {
    /// The metrics in the Prometheus text format; `None` once the silo is gone.
    #[must_use]
    pub fn render(&self) -> Option<String> {
        let runtime = self.runtime.upgrade()?;
        Some(render(&runtime))
    }
}

fn render(runtime: &Arc<Runtime>) -> String {
    let metrics = &runtime.metrics;
    let mut per_type: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
    let mut queued = 0_i64;
    for entry in &runtime.catalog {
        *per_type
            .entry(entry.key().type_name().to_owned())
            .or_default() += 1;
        queued += i64::try_from(entry.value().queued()).unwrap_or(i64::MAX);
    }
    metrics.activations.clear();
    for (grain_type, n) in per_type {
        metrics
            .activations
            .get_or_create(&TypeLabels { grain_type })
            .set(n);
    }
    metrics.queued.set(queued);
    let mut out = String::new();
    let _ = prometheus_client::encoding::text::encode(&mut out, &metrics.registry.lock());
    out
}

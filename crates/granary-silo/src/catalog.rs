//! [`Catalog`]: the activations one silo holds, by grain, and the grain types it can
//! activate. At most one entry per grain per silo: an entry is created under the `DashMap`
//! shard lock. The entry of a stateless worker key is its worker pool (`crate::workers`),
//! which holds several activations.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use tokio::sync::Notify;
use tokio::time::Instant;

use granary_core::{
    ActivationHost, ActivationId, BuildGrainIdHasher, CallError, GrainId, MethodId,
};

use crate::activation::ActivationEntry;
use crate::events::DeactivationReason;
use crate::metrics::Refusal;
use crate::registry::Registry;
use crate::shared::Shared;

/// The activations of one silo and the types it can activate.
pub(crate) struct Catalog {
    shared: Arc<Shared>,
    registry: Registry,
    entries: DashMap<GrainId, Arc<dyn ActivationEntry>, BuildGrainIdHasher>,
    /// Entries, counted apart: `DashMap::len` locks every shard, and the activation limit is
    /// checked while one is locked.
    count: AtomicUsize,
    /// Entries ever created: tells [`deactivate_all`](Self::deactivate_all) whether a scan can
    /// find an entry it has not asked yet.
    created: AtomicU64,
    /// False once the silo stops: no new activation is created.
    accepting: AtomicBool,
    /// Notified when the last entry leaves (not at every removal: a notification takes a
    /// lock, and a silo removes entries all the time).
    emptied: Notify,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("types", &self.registry)
            .field("activations", &self.len())
            .finish_non_exhaustive()
    }
}

impl Catalog {
    pub(crate) fn new(shared: Arc<Shared>, registry: Registry) -> Self {
        Self {
            shared,
            registry,
            entries: DashMap::default(),
            count: AtomicUsize::new(0),
            created: AtomicU64::new(0),
            accepting: AtomicBool::new(true),
            emptied: Notify::new(),
        }
    }

    /// The activation of `id`, if there is one.
    pub(crate) fn get(&self, id: &GrainId) -> Option<Arc<dyn ActivationEntry>> {
        self.entries.get(id).map(|e| e.clone())
    }

    /// Whether `id` has an activation here.
    pub(crate) fn contains(&self, id: &GrainId) -> bool {
        self.entries.contains_key(id)
    }

    /// How many activations there are (activating, active or deactivating), each worker of a
    /// stateless worker pool included.
    pub(crate) fn len(&self) -> usize {
        self.entries.len() + self.shared.extra_workers()
    }

    /// Whether grain type `type_name` is a stateless worker type registered here.
    pub(crate) fn is_stateless(&self, type_name: &str) -> bool {
        self.registry.is_stateless(type_name)
    }

    /// Whether new activations may be created.
    pub(crate) fn accepting(&self) -> bool {
        self.accepting.load(Ordering::Acquire)
    }

    /// Stops creating activations (shutdown, or the silo was declared dead).
    pub(crate) fn stop_accepting(&self) {
        self.accepting.store(false, Ordering::Release);
    }

    /// The static type name of the registered grain type `type_name` and the name of its
    /// method `id`: names a call that arrived can use without copying them.
    pub(crate) fn static_names(
        &self,
        type_name: &str,
        id: MethodId,
    ) -> Option<(&'static str, Option<&'static str>)> {
        self.registry.static_names(type_name, id)
    }

    /// Whether this silo hosts (has registered) grain type `type_name`.
    pub(crate) fn hosts_type(&self, type_name: &str) -> bool {
        self.registry.get(type_name).is_some()
    }

    /// The name of method `id` of grain type `type_name`.
    pub(crate) fn method_name(&self, type_name: &str, id: MethodId) -> Option<&'static str> {
        self.registry.method_name(type_name, id)
    }

    /// The activation of `id` and whether this call created it (then the caller starts it,
    /// once the request that created it is delivered). Exactly one activation is created
    /// however many callers race here; `host` (what its grain context calls) is asked for
    /// only then.
    pub(crate) fn activation_for(
        &self,
        id: &GrainId,
        host: impl FnOnce() -> Arc<dyn ActivationHost>,
    ) -> Result<(Arc<dyn ActivationEntry>, bool), CallError> {
        if !self.accepting() {
            return Err(CallError::ShuttingDown);
        }
        let factory =
            self.registry
                .get(id.type_name())
                .ok_or_else(|| CallError::UnknownGrainType {
                    grain_type: id.type_name().to_owned(),
                })?;
        Ok(match self.entries.entry(id.clone()) {
            Entry::Occupied(existing) => (existing.get().clone(), false),
            Entry::Vacant(slot) => {
                let limit = self.shared.config().max_activations;
                if self.count.fetch_add(1, Ordering::Relaxed) >= limit {
                    self.count.fetch_sub(1, Ordering::Relaxed);
                    self.shared.metrics().refused(Refusal::Activations);
                    tracing::debug!(grain = %id, limit, "activation refused: the silo is full");
                    return Err(CallError::TooManyActivations {
                        grain: id.clone(),
                        silo: self.shared.silo().to_string(),
                        limit,
                    });
                }
                let activation = factory.create(id.clone(), &self.shared, host());
                slot.insert(activation.clone());
                self.created.fetch_add(1, Ordering::Release);
                (activation, true)
            }
        })
    }

    /// Removes `activation` of `id` (if it is still the one here).
    pub(crate) fn remove(&self, id: &GrainId, activation: ActivationId) {
        if self
            .entries
            .remove_if(id, |_, entry| entry.activation_id() == activation)
            .is_some()
            && self.count.fetch_sub(1, Ordering::Relaxed) == 1
        {
            self.emptied.notify_waiters();
        }
    }

    /// The entry of `id` if it is still `activation`.
    pub(crate) fn entry_of(
        &self,
        id: &GrainId,
        activation: ActivationId,
    ) -> Option<Arc<dyn ActivationEntry>> {
        let entry = self.entries.get(id)?.clone();
        if entry.activation_id() == activation {
            Some(entry)
        } else {
            entry.worker(activation)
        }
    }

    /// The entries with an activation idle at epoch `now` for at least as many collection
    /// epochs as `passes` gives for their grain type (`u64::MAX`: never collected), each with
    /// that number of epochs (for [`ActivationEntry::collect_idle`]).
    pub(crate) fn idle(
        &self,
        now: u64,
        passes: impl Fn(&str) -> u64,
    ) -> Vec<(Arc<dyn ActivationEntry>, u64)> {
        self.entries
            .iter()
            .filter_map(|e| {
                let passes = passes(e.key().type_name());
                let idle = passes != u64::MAX && e.idle_for(now).is_some_and(|idle| idle >= passes);
                idle.then(|| (e.clone(), passes))
            })
            .collect()
    }

    /// Each registered grain type's idle collection policy, sorted by type name.
    pub(crate) fn idle_policies(&self) -> Vec<(&'static str, granary_core::IdleAfter)> {
        self.registry.idle_policies()
    }

    /// The activations per grain type, sorted by type name.
    pub(crate) fn activations_by_type(&self) -> Vec<(String, u64)> {
        let mut per_type: BTreeMap<String, u64> = BTreeMap::new();
        for entry in &self.entries {
            let name = entry.key().type_name();
            let n = entry.activations() as u64;
            match per_type.get_mut(name) {
                Some(count) => *count += n,
                None => {
                    per_type.insert(name.to_owned(), n);
                }
            }
        }
        per_type.into_iter().collect()
    }

    /// Requests waiting in every activation's queue.
    pub(crate) fn queued(&self) -> usize {
        self.entries.iter().map(|e| e.value().queued()).sum()
    }

    /// Asks every activation to deactivate; resolves when the catalog is empty or `timeout`
    /// passed. Returns the number of activations left.
    pub(crate) async fn deactivate_all(&self, timeout: Duration) -> usize {
        let deadline = granary_core::deadline_in(timeout);
        // Each activation is asked once. The catalog is scanned again only when an entry was
        // created since the last scan (an activation that a call admitted just before the silo
        // stopped accepting created meanwhile), and then at most every 100 ms: asking every
        // entry at every change of the catalog made shutdown quadratic, and rescanning a
        // million entries every 100 ms left a current-thread runtime no time to deactivate
        // them. Between scans it sleeps until the catalog empties (or 100 ms pass: a count
        // raced by a refused activation may miss the notification), not at every removal.
        let mut asked = HashSet::new();
        let mut next_scan = Instant::now();
        let mut scanned: Option<u64> = None;
        loop {
            let emptied = self.emptied.notified();
            if self.entries.is_empty() {
                return 0;
            }
            let now = Instant::now();
            if now >= deadline {
                return self.entries.len();
            }
            let created = self.created.load(Ordering::Acquire);
            if now >= next_scan && scanned != Some(created) {
                scanned = Some(created);
                let fresh: Vec<_> = self
                    .entries
                    .iter()
                    .filter(|e| !asked.contains(&e.activation_id()))
                    .map(|e| e.clone())
                    .collect();
                for entry in fresh {
                    asked.insert(entry.activation_id());
                    entry.request_deactivation(DeactivationReason::Shutdown);
                }
            }
            next_scan = next_scan.max(now + Duration::from_millis(100));
            let _ = tokio::time::timeout_at(next_scan.min(deadline), emptied).await;
        }
    }
}

//! [`Runtime`]: the state one silo shares between its activations, its router and its
//! background tasks, and the routing of a request to its activation.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use tokio::sync::{Notify, broadcast};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use granary_core::provider::{GrainDirectory, StateStore};
use granary_core::{
    ActivationHost, ActivationId, BuildGrainIdHasher, CallError, GrainId, Invoker, MethodId, SiloId,
};

use crate::activation::{ActivationEntry, InlineTurn};
use crate::cluster::Cluster;
use crate::config::SiloConfig;
use crate::events::{DeactivationReason, SiloEvent};
use crate::registry::Registry;
use crate::request::Request;

/// Observes every call a silo dispatches: grain, method and whether it arrived encoded.
pub type CallObserver = Arc<dyn Fn(&GrainId, MethodId, bool) + Send + Sync>;

/// What a silo's parts share.
pub(crate) struct Runtime {
    pub(crate) silo: SiloId,
    pub(crate) config: SiloConfig,
    pub(crate) registry: Registry,
    pub(crate) catalog: DashMap<GrainId, Arc<dyn ActivationEntry>, BuildGrainIdHasher>,
    /// Entries in the catalog, counted apart: `DashMap::len` locks every shard, and the
    /// activation limit is checked while one is locked.
    activations: AtomicUsize,
    pub(crate) store: Arc<dyn StateStore>,
    pub(crate) directory: Arc<dyn GrainDirectory>,
    pub(crate) tracker: TaskTracker,
    pub(crate) shutdown: CancellationToken,
    accepting: AtomicBool,
    pub(crate) events: broadcast::Sender<SiloEvent>,
    pub(crate) catalog_changed: Notify,
    /// Weak: the invoker holds the runtime strongly, and the silo holds the invoker.
    pub(crate) invoker: OnceLock<std::sync::Weak<dyn Invoker>>,
    pub(crate) observer: Option<CallObserver>,
    /// The silo's part of a cluster, if it runs in one (set once at start).
    pub(crate) cluster: OnceLock<Arc<Cluster>>,
    /// What the silo counts.
    pub(crate) metrics: crate::metrics::Metrics,
    /// Idle collection passes so far: the coarse clock of idle tracking (a call stores it in
    /// its activation; no clock is read on the call path).
    pub(crate) epoch: AtomicU64,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("silo", &self.silo)
            .field("activations", &self.catalog.len())
            .finish_non_exhaustive()
    }
}

impl Runtime {
    pub(crate) fn new(
        silo: SiloId,
        config: SiloConfig,
        registry: Registry,
        store: Arc<dyn StateStore>,
        directory: Arc<dyn GrainDirectory>,
        observer: Option<CallObserver>,
    ) -> Self {
        Self {
            silo,
            config,
            registry,
            catalog: DashMap::default(),
            activations: AtomicUsize::new(0),
            store,
            directory,
            tracker: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            accepting: AtomicBool::new(true),
            events: broadcast::channel(4096).0,
            catalog_changed: Notify::new(),
            invoker: OnceLock::new(),
            observer,
            cluster: OnceLock::new(),
            metrics: crate::metrics::Metrics::new(),
            epoch: AtomicU64::new(0),
        }
    }

    /// The current idle-collection epoch.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Relaxed)
    }

    pub(crate) fn invoker(&self) -> Arc<dyn Invoker> {
        match self.invoker.get().and_then(std::sync::Weak::upgrade) {
            Some(invoker) => invoker,
            None => Arc::new(crate::invoker::ClosedInvoker),
        }
    }

    pub(crate) fn emit(&self, event: SiloEvent) {
        let _ = self.events.send(event);
    }

    pub(crate) fn accepting(&self) -> bool {
        self.accepting.load(Ordering::Acquire)
    }

    pub(crate) fn stop_accepting(&self) {
        self.accepting.store(false, Ordering::Release);
    }

    /// Delivers `req` to its grain's activation, creating it if there is none (or, in a cluster,
    /// forwarding it to the silo known to host the grain); a request handed back by a closing
    /// activation is routed again, a bounded number of times.
    pub(crate) fn route(self: &Arc<Self>, req: Request) {
        if let Some(turn) = self.route_with(req, false) {
            self.tracker.spawn(turn);
        }
    }

    /// As [`route`](Self::route); with `inline`, a turn admitted at once is handed back for the
    /// caller to run in its own task (no spawn, no thread hop).
    pub(crate) fn route_with(
        self: &Arc<Self>,
        mut req: Request,
        inline: bool,
    ) -> Option<InlineTurn> {
        if let Some(cluster) = self.cluster.get()
            && let Err(err) = cluster.serving()
        {
            // Its lease ran out: no reads from memory that may be stale.
            req.fail(err);
            return None;
        }
        loop {
            let (entry, created) = match self.catalog.get(&req.target) {
                Some(entry) => (entry.clone(), false),
                None if let Some(cluster) = self.cluster.get()
                    && let Some(owner) = cluster.cached_elsewhere(&req.target) =>
                {
                    // Known to live on another silo: forward instead of activating here.
                    cluster.forward(self, req, owner);
                    return None;
                }
                None => match self.activation_for(&req.target) {
                    Ok(found) => found,
                    Err(err) => {
                        req.fail(err);
                        return None;
                    }
                },
            };
            let delivered = entry.clone().deliver(req, inline);
            if created {
                // Started only after the request that created it is queued in it: an activation
                // that fails at once still answers that request instead of bouncing it.
                entry.start();
            }
            match delivered {
                Ok(turn) => return turn,
                Err(back) => {
                    req = back;
                    req.attempts += 1;
                    if req.attempts > self.config.max_reroutes {
                        let err = CallError::Unavailable {
                            grain: req.target.clone(),
                            attempts: req.attempts,
                        };
                        req.fail(err);
                        return None;
                    }
                }
            }
        }
    }

    /// The activation of `id` and whether this call created it (then the caller starts it).
    /// Exactly one activation is created however many callers race here.
    fn activation_for(
        self: &Arc<Self>,
        id: &GrainId,
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
        Ok(match self.catalog.entry(id.clone()) {
            Entry::Occupied(existing) => (existing.get().clone(), false),
            Entry::Vacant(slot) => {
                let limit = self.config.max_activations;
                if self.activations.fetch_add(1, Ordering::Relaxed) >= limit {
                    self.activations.fetch_sub(1, Ordering::Relaxed);
                    self.metrics.refused(crate::metrics::Refusal::Activations);
                    tracing::debug!(grain = %id, limit, "activation refused: the silo is full");
                    return Err(CallError::TooManyActivations {
                        grain: id.clone(),
                        silo: self.silo.to_string(),
                        limit,
                    });
                }
                let activation = factory.create(id.clone(), self);
                slot.insert(activation.clone());
                (activation, true)
            }
        })
    }

    /// Removes `activation` of `id` from the catalog (if it is still the one there).
    pub(crate) fn remove(&self, id: &GrainId, activation: ActivationId) {
        if self
            .catalog
            .remove_if(id, |_, entry| entry.activation_id() == activation)
            .is_some()
        {
            self.activations.fetch_sub(1, Ordering::Relaxed);
        }
        self.catalog_changed.notify_waiters();
    }

    fn entry_of(&self, id: &GrainId, activation: ActivationId) -> Option<Arc<dyn ActivationEntry>> {
        self.catalog
            .get(id)
            .filter(|e| e.activation_id() == activation)
            .map(|e| e.clone())
    }

    /// Asks every activation to deactivate; resolves when the catalog is empty or `timeout`
    /// passed. Returns the number of activations left.
    pub(crate) async fn deactivate_all(&self, timeout: Duration) -> usize {
        let deadline = granary_core::deadline_in(timeout);
        // Each activation is asked once, and the catalog is scanned again only now and then (for
        // an activation that a re-routed call created meanwhile): asking every entry at every
        // change of the catalog made shutdown quadratic in the number of activations.
        let mut asked = std::collections::HashSet::new();
        let mut next_scan = Instant::now();
        loop {
            let notified = self.catalog_changed.notified();
            if self.catalog.is_empty() {
                return 0;
            }
            let now = Instant::now();
            if now >= deadline {
                return self.catalog.len();
            }
            if now >= next_scan {
                let fresh: Vec<_> = self
                    .catalog
                    .iter()
                    .filter(|e| !asked.contains(&e.activation_id()))
                    .map(|e| e.clone())
                    .collect();
                for entry in fresh {
                    asked.insert(entry.activation_id());
                    entry.request_deactivation(DeactivationReason::Shutdown);
                }
                next_scan = now + Duration::from_millis(100);
            }
            let _ = tokio::time::timeout_at(next_scan.min(deadline), notified).await;
        }
    }
}

impl ActivationHost for Runtime {
    fn invoker(&self) -> Arc<dyn Invoker> {
        Runtime::invoker(self)
    }

    fn store(&self) -> &dyn StateStore {
        &*self.store
    }

    fn set_timer(
        &self,
        grain: &GrainId,
        activation: ActivationId,
        name: &str,
        due: Duration,
        period: Option<Duration>,
    ) {
        if let Some(entry) = self.entry_of(grain, activation) {
            entry.set_timer(name, due, period);
        }
    }

    fn cancel_timer(&self, grain: &GrainId, activation: ActivationId, name: &str) {
        if let Some(entry) = self.entry_of(grain, activation) {
            entry.cancel_timer(name);
        }
    }

    fn deactivate(&self, grain: &GrainId, activation: ActivationId) {
        if let Some(entry) = self.entry_of(grain, activation) {
            entry.request_deactivation(DeactivationReason::Requested);
        }
    }

    fn max_event_size(&self) -> usize {
        self.config.max_event_size
    }

    fn storage_conflict(&self, grain: &GrainId, activation: ActivationId) {
        self.metrics.conflicts.inc();
        if let Some(entry) = self.entry_of(grain, activation) {
            entry.request_deactivation(DeactivationReason::StorageConflict);
        }
    }
}

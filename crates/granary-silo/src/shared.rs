//! [`Shared`]: the services every part of one silo uses (its id, configuration, storage,
//! tasks, events, metrics and idle clock), and [`Home`], the small trait through which an
//! activation reaches the layers above it (the catalog that holds it, the router that routes
//! its requests) without importing them.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use futures::future::BoxFuture;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use granary_core::provider::{GrainDirectory, StateStore};
use granary_core::{ActivationHost, ActivationId, Clock, GrainId, Invoker, SiloId};

use crate::config::SiloConfig;
use crate::events::SiloEvent;
use crate::filter::Filters;
use crate::metrics::Metrics;
use crate::observers::ObserverTable;
use crate::request::Request;

/// Where the owner of a grain's claim is, as the silo's router tells an activation that
/// found the claim held by another silo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OwnerState {
    /// A live silo of the cluster: the activation hands its calls over to it.
    Alive,
    /// Gone (dead, unknown to the cluster, or an earlier generation of this very silo): its
    /// claim may be replaced.
    Gone,
    /// Another silo this one cannot judge (a second single silo on the same store): the
    /// activation fails instead of taking the grain.
    Foreign,
}

/// What an activation asks of the silo above it. Implemented by the router, which owns the
/// catalog; an activation reaches it through [`Shared::home`].
pub(crate) trait Home: ActivationHost {
    /// Removes `activation` of `grain` from the catalog, if it is still the one there.
    fn remove(&self, grain: &GrainId, activation: ActivationId);
    /// Routes again a request that an activation queued and can no longer serve (it
    /// deactivated).
    fn reroute(&self, req: Request);
    /// Whether a claim held by `owner`, another silo, may be replaced.
    fn owner_state<'a>(&'a self, owner: &'a SiloId) -> BoxFuture<'a, OwnerState>;
    /// Sends `requests` for `grain` to `owner`, the live silo that owns it, and remembers
    /// where it lives.
    fn hand_over(&self, grain: &GrainId, owner: &SiloId, requests: Vec<Request>);
}

/// The services of one silo, shared by its activations, catalog, router, cluster part and
/// background tasks. Fixed at start, except the two links upwards set once by the silo.
pub(crate) struct Shared {
    silo: SiloId,
    config: SiloConfig,
    store: Arc<dyn StateStore>,
    directory: Arc<dyn GrainDirectory>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    events: broadcast::Sender<SiloEvent>,
    metrics: Metrics,
    /// Idle collection passes so far: the coarse clock of idle tracking (a call stores it in
    /// its activation; no clock is read on the call path).
    epoch: AtomicU64,
    /// Stateless worker activations beyond the first of each pool (the catalog counts one
    /// entry per pool): with it, the activation count stays truthful.
    extra_workers: AtomicUsize,
    /// The incoming call filters (the call observer among them), `None` without any.
    incoming: Option<Filters>,
    /// The outgoing call filters of the silo's grains and client, `None` without any.
    outgoing: Option<Filters>,
    /// The wall clock grains read (`GrainContext::now`).
    clock: Arc<dyn Clock>,
    /// Weak: the invoker holds the router, which holds this strongly.
    invoker: OnceLock<Weak<dyn Invoker>>,
    /// Weak for the same reason: the router holds this.
    home: OnceLock<Weak<dyn Home>>,
    /// The observer objects of this silo's clients.
    observers: Arc<ObserverTable>,
    /// Reminders set by commits on this silo, for its reminder service (set when it starts).
    reminder_hints: OnceLock<tokio::sync::mpsc::Sender<ReminderHint>>,
}

/// A reminder a commit on this silo set: its grain, name and next due time (ms since the Unix
/// epoch).
pub(crate) type ReminderHint = (GrainId, String, u64);

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("silo", &self.silo)
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn new(
        silo: SiloId,
        config: SiloConfig,
        store: Arc<dyn StateStore>,
        directory: Arc<dyn GrainDirectory>,
        (incoming, outgoing): (Option<Filters>, Option<Filters>),
        clock: Arc<dyn Clock>,
    ) -> Self {
        let tracker = TaskTracker::new();
        let shutdown = CancellationToken::new();
        let observers = Arc::new(ObserverTable::new(
            silo.clone(),
            tracker.clone(),
            shutdown.clone(),
        ));
        Self {
            silo,
            config,
            store,
            directory,
            tracker,
            shutdown,
            observers,
            events: broadcast::channel(4096).0,
            metrics: Metrics::new(),
            epoch: AtomicU64::new(0),
            extra_workers: AtomicUsize::new(0),
            incoming,
            outgoing,
            clock,
            invoker: OnceLock::new(),
            home: OnceLock::new(),
            reminder_hints: OnceLock::new(),
        }
    }

    /// This silo's id.
    pub(crate) fn silo(&self) -> &SiloId {
        &self.silo
    }

    /// The observer objects this silo's clients serve.
    pub(crate) fn observers(&self) -> &Arc<ObserverTable> {
        &self.observers
    }

    /// The silo's configuration.
    pub(crate) fn config(&self) -> &SiloConfig {
        &self.config
    }

    /// The state store.
    pub(crate) fn store(&self) -> &Arc<dyn StateStore> {
        &self.store
    }

    /// The grain directory (the store's claims).
    pub(crate) fn directory(&self) -> &dyn GrainDirectory {
        &*self.directory
    }

    /// The tracker of every task the silo spawns (shutdown waits for them).
    pub(crate) fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    /// Spawns `task` on the silo's tracker.
    pub(crate) fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(task);
    }

    /// Cancelled when the silo stops: background loops and timers end.
    pub(crate) fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Publishes a life-cycle event (nobody listening is fine).
    pub(crate) fn emit(&self, event: SiloEvent) {
        let _ = self.events.send(event);
    }

    /// A receiver of the events published from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<SiloEvent> {
        self.events.subscribe()
    }

    /// What the silo counts.
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The current idle-collection epoch.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Relaxed)
    }

    /// Starts the next idle-collection epoch; returns it.
    pub(crate) fn advance_epoch(&self) -> u64 {
        self.epoch.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Counts `delta` (1 or -1) stateless worker activations beyond the first of their pool.
    pub(crate) fn count_extra_workers(&self, delta: isize) {
        if delta >= 0 {
            self.extra_workers
                .fetch_add(delta.unsigned_abs(), Ordering::Relaxed);
        } else {
            self.extra_workers
                .fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
        }
    }

    /// Stateless worker activations beyond the first of each pool.
    pub(crate) fn extra_workers(&self) -> usize {
        self.extra_workers.load(Ordering::Relaxed)
    }

    /// The wall clock grains read.
    pub(crate) fn clock(&self) -> &dyn Clock {
        &*self.clock
    }

    /// The incoming call filters, if the silo has any.
    pub(crate) fn incoming_filters(&self) -> Option<&Filters> {
        self.incoming.as_ref()
    }

    /// The outgoing call filters, if the silo has any.
    pub(crate) fn outgoing_filters(&self) -> Option<&Filters> {
        self.outgoing.as_ref()
    }

    /// The silo's invoker (references deserialized in a turn bind to it), or one that fails
    /// every call once the silo is gone.
    pub(crate) fn invoker(&self) -> Arc<dyn Invoker> {
        match self.invoker.get().and_then(Weak::upgrade) {
            Some(invoker) => invoker,
            None => Arc::new(ClosedInvoker),
        }
    }

    /// Sets the invoker, once, at start.
    pub(crate) fn set_invoker(&self, invoker: Weak<dyn Invoker>) {
        if self.invoker.set(invoker).is_err() {
            tracing::error!("the silo's invoker is set once; a second one is ignored");
        }
    }

    /// Tells the reminder service that a commit set a reminder. Dropped when the service is
    /// busy (its queue is bounded): its next scan finds the reminder anyway.
    pub(crate) fn hint_reminder(&self, hint: ReminderHint) {
        if let Some(hints) = self.reminder_hints.get() {
            let _ = hints.try_send(hint);
        }
    }

    /// Connects the reminder service's hint queue, once, when it starts.
    pub(crate) fn set_reminder_hints(&self, hints: tokio::sync::mpsc::Sender<ReminderHint>) {
        if self.reminder_hints.set(hints).is_err() {
            tracing::error!("the reminder service starts once; a second one is ignored");
        }
    }

    /// The layer above the activations (catalog and router); `None` once the silo is gone.
    pub(crate) fn home(&self) -> Option<Arc<dyn Home>> {
        self.home.get().and_then(Weak::upgrade)
    }

    /// Sets the home, once, when the router is built.
    pub(crate) fn set_home(&self, home: Weak<dyn Home>) {
        if self.home.set(home).is_err() {
            tracing::error!("the silo's router is set once; a second one is ignored");
        }
    }
}

/// The invoker of a silo that is gone: every call fails with `ShuttingDown`.
#[derive(Debug)]
pub(crate) struct ClosedInvoker;

impl Invoker for ClosedInvoker {
    fn invoke(
        &self,
        _call: granary_core::OutgoingCall,
    ) -> BoxFuture<'static, Result<granary_core::Payload, granary_core::CallError>> {
        Box::pin(futures::future::ready(Err(
            granary_core::CallError::ShuttingDown,
        )))
    }

    fn send(
        &self,
        _call: granary_core::OutgoingCall,
    ) -> BoxFuture<'static, Result<(), granary_core::CallError>> {
        Box::pin(futures::future::ready(Err(
            granary_core::CallError::ShuttingDown,
        )))
    }
}

//! One activation of a grain: its admission state, its turns, its timers and its life cycle
//! (activate → serve → deactivate).
//!
//! An activation is not a task: it is a small structure in the catalog. A turn runs on a tokio
//! task spawned when the turn is admitted, and that task goes on with the next admitted request
//! when its turn ends, so an idle activation costs no task, no channel and no timer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use granary_core::provider::{Claim, GrainAddress, Loaded};
use granary_core::turn::{self, TurnKind, TurnOutcome, TurnScope};
use granary_core::{
    ActivationId, CallChain, CallError, ChainId, Grain, GrainContext, GrainId, Payload, SiloId,
    StorageError, state_codec,
};

use crate::admission::{Admission, Class, Scheduler};
use crate::events::{DeactivationReason, SiloEvent};
use crate::filter::{CallKind, FilterCall};
use crate::metrics::Refusal;
use crate::request::{ReplyRx, ReplyTx, Request, RequestKind};
use crate::shared::{OwnerState, Shared};

/// Why a claim did not make this activation the grain's owner.
enum ClaimFailure {
    /// The activation fails; its calls get this error.
    Failed(CallError),
    /// A live silo of the cluster owns the grain.
    Elsewhere(SiloId),
}

/// The type-erased face of an activation, as the catalog holds it.
pub(crate) trait ActivationEntry: Send + Sync + 'static {
    /// This activation's id.
    fn activation_id(&self) -> ActivationId;
    /// Requests waiting in its queue.
    fn queued(&self) -> usize;
    /// Claims, loads and activates (spawned once, after insertion into the catalog).
    fn start(self: Arc<Self>);
    /// Admits, queues or answers `req`; hands it back if the activation is closed. With
    /// `inline`, a turn admitted at once is handed back for the caller to run; otherwise an
    /// [inline reply](ReplyTx::Inline) gets a channel, whose receiver is handed back.
    #[allow(
        clippy::result_large_err,
        reason = "the request is handed back by value to be routed again"
    )]
    fn deliver(self: Arc<Self>, req: Request, inline: bool) -> Result<Routed, Request>;
    /// Collection epochs since the last call, if the activation is idle and active.
    fn idle_for(&self, now_epoch: u64) -> Option<u64>;
    /// Deactivates once no turn runs.
    fn request_deactivation(self: Arc<Self>, reason: DeactivationReason);
    /// Arms the timer `name`.
    fn set_timer(self: Arc<Self>, name: &str, due: Duration, period: Option<Duration>);
    /// Disarms the timer `name`.
    fn cancel_timer(&self, name: &str);
    /// Finishes an unfinished inline turn on a task of the silo.
    fn detach(&self, turn: BoxFuture<'static, TurnReply>);
    /// How many activations this entry stands for: 1, or a stateless worker pool's workers.
    fn activations(&self) -> usize {
        1
    }
    /// The activation `activation` inside this entry, if it is not the entry itself (a worker
    /// of a stateless worker pool).
    fn worker(&self, activation: ActivationId) -> Option<Arc<dyn ActivationEntry>> {
        let _ = activation;
        None
    }
    /// Deactivates what has been idle for `passes` collection epochs at epoch `now_epoch`
    /// (the idle collector; a pool collects its idle workers one by one).
    fn collect_idle(self: Arc<Self>, now_epoch: u64, passes: u64) {
        if self.idle_for(now_epoch).is_some_and(|idle| idle >= passes) {
            self.request_deactivation(DeactivationReason::Idle);
        }
    }
}

/// The stateless worker pool an activation belongs to (`crate::workers`): it leaves the pool
/// instead of the catalog when it closes.
pub(crate) trait Pool: Send + Sync + 'static {
    /// `activation` closed: it takes no more requests.
    fn leave(&self, activation: ActivationId);
}

/// What became of a routed request (see `Router::route_with`).
pub(crate) enum Routed {
    /// Queued, run, forwarded or failed: its reply, if any, goes through the channel it
    /// carries.
    Delivered,
    /// Admitted at once, for the caller to run: the turn's output is an
    /// [inline](ReplyTx::Inline) reply.
    Turn(InlineTurn),
    /// Queued, run elsewhere, forwarded or failed: its inline reply comes through this
    /// channel.
    Wait(ReplyRx),
}

impl Routed {
    /// `Wait` for a receiver, `Delivered` without one.
    pub(crate) fn waiting(rx: Option<ReplyRx>) -> Self {
        rx.map_or(Self::Delivered, Self::Wait)
    }
}

/// What an inline turn ends with: the reply of a request whose reply is
/// [inline](ReplyTx::Inline); `None` for any other (it answered through its channel, or it is
/// one-way).
pub(crate) type TurnReply = Option<Result<Payload, CallError>>;

/// An admitted turn that the caller runs itself, in its own task (see
/// [`ActivationEntry::deliver`]); its output is the reply (see [`TurnReply`]). Dropped before
/// it finished (the caller's deadline passed, or the caller gave up), it hands the rest of the
/// turn to a task of the silo: a turn is never cut short.
pub(crate) struct InlineTurn {
    turn: Option<BoxFuture<'static, TurnReply>>,
    owner: Arc<dyn ActivationEntry>,
}

impl Future for InlineTurn {
    type Output = TurnReply;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<TurnReply> {
        let Some(turn) = self.turn.as_mut() else {
            return std::task::Poll::Ready(None);
        };
        let reply = std::task::ready!(turn.as_mut().poll(cx));
        self.turn = None;
        std::task::Poll::Ready(reply)
    }
}

impl Drop for InlineTurn {
    fn drop(&mut self) {
        if let Some(turn) = self.turn.take() {
            self.owner.detach(turn);
        }
    }
}

/// What follows the end of a turn (see `Activation::end_turn`).
enum AfterTurn {
    /// Nothing to run.
    Idle,
    /// This request, admitted (exclusively, if the flag says so).
    Next(Request, bool),
    /// The deactivation, for which no turn runs any more.
    Deactivate(DeactivationReason),
}

struct Admin {
    sched: Scheduler<Request>,
    pending_reason: Option<DeactivationReason>,
    /// The armed timers. Under the admission lock rather than one of their own: few grains
    /// arm timers, and every activation would carry the second lock.
    timers: Vec<(Box<str>, CancellationToken)>,
}

pub(crate) struct Activation<G: Grain> {
    shared: Arc<Shared>,
    grain: G,
    ctx: GrainContext<G>,
    admin: Mutex<Admin>,
    last_call_epoch: AtomicU64,
    /// The metric handles of `G`'s methods, in `G::METHODS` order (shared by its activations).
    method_metrics: Arc<[crate::metrics::MethodMetrics]>,
    /// The stateless worker pool this activation is a worker of (`None`: an ordinary grain's
    /// one activation, in the catalog itself).
    pool: Option<Weak<dyn Pool>>,
}

impl<G: Grain> Activation<G> {
    pub(crate) fn new(
        grain: G,
        id: GrainId,
        activation: ActivationId,
        shared: &Arc<Shared>,
        host: Arc<dyn granary_core::ActivationHost>,
    ) -> Arc<Self> {
        Self::with_pool(grain, id, activation, shared, host, None)
    }

    /// An activation that is a worker of the stateless worker pool `pool`.
    pub(crate) fn new_worker(
        grain: G,
        id: GrainId,
        shared: &Arc<Shared>,
        host: Arc<dyn granary_core::ActivationHost>,
        pool: Weak<dyn Pool>,
    ) -> Arc<Self> {
        Self::with_pool(grain, id, ActivationId::new(), shared, host, Some(pool))
    }

    fn with_pool(
        grain: G,
        id: GrainId,
        activation: ActivationId,
        shared: &Arc<Shared>,
        host: Arc<dyn granary_core::ActivationHost>,
        pool: Option<Weak<dyn Pool>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            shared: shared.clone(),
            grain,
            ctx: GrainContext::new(id, activation, G::State::default(), 0, host),
            admin: Mutex::new(Admin {
                sched: Scheduler::new(),
                pending_reason: None,
                timers: Vec::new(),
            }),
            last_call_epoch: AtomicU64::new(shared.epoch()),
            method_metrics: shared.metrics().methods_of(G::TYPE_NAME, G::METHODS),
            pool,
        })
    }

    /// Admits `req`: runs it (inline when `inline`, with [`Routed::Turn`]), queues it, or
    /// fails it at once. With `queue_if_busy` false, a request that would have to wait (or
    /// would close a call cycle) is handed back instead, for a stateless worker pool to try
    /// its next worker; `Err` also hands it back when the activation closed.
    #[allow(
        clippy::result_large_err,
        reason = "the request is handed back by value to be routed again"
    )]
    pub(crate) fn admit_request(
        self: Arc<Self>,
        mut req: Request,
        inline: bool,
        queue_if_busy: bool,
    ) -> Result<Routed, Request> {
        let read_only = match &req.kind {
            RequestKind::Call { method, .. } => match G::method(*method) {
                // A reminder tick is an exclusive turn and counts as activity.
                None if *method == granary_core::REMINDER_METHOD.id => {
                    self.last_call_epoch
                        .store(self.shared.epoch(), Ordering::Relaxed);
                    false
                }
                Some(info) => {
                    self.last_call_epoch
                        .store(self.shared.epoch(), Ordering::Relaxed);
                    info.read_only
                }
                None => {
                    let err = CallError::UnknownMethod {
                        grain_type: G::TYPE_NAME.to_owned(),
                        method: method.0,
                    };
                    tracing::warn!(grain = %self.id(), cause = %err, "call refused");
                    let rx = req.channel();
                    req.fail(err);
                    return Ok(Routed::waiting(rx));
                }
            },
            RequestKind::Timer { .. } => false,
        };
        let mut admin = self.admin.lock();
        let class = Class {
            read_only,
            chain_id: req.chain.id,
            chain: &req.chain.grains,
        };
        match admin.sched.admit(self.id(), G::REENTRANT, class) {
            Admission::Run { exclusive } => {
                drop(admin);
                if inline {
                    let owner: Arc<dyn ActivationEntry> = self.clone();
                    let turn = Box::pin(self.run_inline(req, exclusive));
                    return Ok(Routed::Turn(InlineTurn {
                        turn: Some(turn),
                        owner,
                    }));
                }
                let rx = req.channel();
                self.spawn_run(req, exclusive, false);
                Ok(Routed::waiting(rx))
            }
            Admission::Queue | Admission::Cycle if !queue_if_busy => Err(req),
            Admission::Queue => {
                let limit = self.shared.config().max_queued_requests;
                let rx = req.channel();
                if admin.sched.queued() >= limit && !matches!(req.kind, RequestKind::Timer { .. }) {
                    // Refused at once: waiting behind a queue this long would most likely end
                    // in a timeout, with the grain still working through calls nobody awaits.
                    drop(admin);
                    self.shared.metrics().refused(Refusal::Queue);
                    tracing::debug!(grain = %self.id(), limit, "call refused: the queue is full");
                    req.fail(CallError::QueueFull {
                        grain: self.id().clone(),
                        limit,
                    });
                } else {
                    admin.sched.enqueue(req, read_only);
                }
                Ok(Routed::waiting(rx))
            }
            Admission::Cycle => {
                drop(admin);
                let mut chain = req.chain.grains.clone();
                chain.push(self.id().clone());
                let rx = req.channel();
                req.fail(CallError::Cycle {
                    grain: self.id().clone(),
                    chain,
                });
                Ok(Routed::waiting(rx))
            }
            Admission::Reroute => Err(req),
        }
    }

    /// For a stateless worker pool choosing a worker: `None` once the activation closed,
    /// else whether it serves now (active, no deactivation pending) and how many requests it
    /// runs or queues.
    pub(crate) fn load(&self) -> Option<(bool, usize)> {
        let admin = self.admin.lock();
        let sched = &admin.sched;
        let serving = match sched.phase() {
            crate::admission::Phase::Closed => return None,
            crate::admission::Phase::Active => !sched.deactivation_pending(),
            crate::admission::Phase::Activating | crate::admission::Phase::Deactivating => false,
        };
        Some((serving, sched.running() as usize + sched.queued()))
    }

    fn id(&self) -> &GrainId {
        self.ctx.id()
    }

    fn address(&self) -> GrainAddress {
        GrainAddress {
            grain: self.id().clone(),
            silo: self.shared.silo().clone(),
            activation: self.ctx.activation_id(),
        }
    }

    /// The scope of a turn on `chain`; with `bind`, references deserialized in it bind to this
    /// silo.
    fn scope(&self, chain: CallChain, bind: bool) -> TurnScope {
        TurnScope {
            grain: self.id().clone(),
            chain,
            invoker: bind.then(|| self.shared.invoker()),
        }
    }

    fn spawn_run(self: &Arc<Self>, req: Request, exclusive: bool, queued: bool) {
        self.shared.spawn(self.clone().run(req, exclusive, queued));
    }

    /// Runs admitted requests on a task of the silo: `req` first, then whatever the end of
    /// each turn admits. `queued` tells whether `req` waited in the queue (its deadline may
    /// have passed meanwhile).
    async fn run(self: Arc<Self>, mut req: Request, mut exclusive: bool, mut queued: bool) {
        loop {
            let chain = req.chain.id;
            self.turn(req, queued).await;
            match self.end_turn(exclusive, chain) {
                AfterTurn::Idle => return,
                AfterTurn::Next(next, next_exclusive) => {
                    req = next;
                    exclusive = next_exclusive;
                    queued = true;
                }
                // Boxed: the deactivation (a lifecycle turn and a directory write) is rare and
                // its future is larger than a turn's.
                AfterTurn::Deactivate(reason) => return Box::pin(self.deactivate(reason)).await,
            }
        }
    }

    /// Runs `req`, admitted at once, in the caller's task (see [`InlineTurn`]); what its end
    /// admits runs on tasks of the silo. Answers with the reply if it is
    /// [inline](ReplyTx::Inline).
    async fn run_inline(self: Arc<Self>, req: Request, exclusive: bool) -> TurnReply {
        let chain = req.chain.id;
        let reply = self.turn(req, false).await;
        match self.end_turn(exclusive, chain) {
            AfterTurn::Idle => {}
            AfterTurn::Next(next, next_exclusive) => self.spawn_run(next, next_exclusive, true),
            AfterTurn::Deactivate(reason) => {
                let shared = self.shared.clone();
                shared.spawn(self.deactivate(reason));
            }
        }
        reply
    }

    /// Counts the end of a turn started as `exclusive` on `chain`, and says what follows: the
    /// next queued request, for the task that ran the turn (other read-only requests admitted
    /// with it get tasks of their own), or the deactivation that no running turn holds up.
    fn end_turn(self: &Arc<Self>, exclusive: bool, chain: ChainId) -> AfterTurn {
        let (next, deactivate) = {
            let mut admin = self.admin.lock();
            admin.sched.finish(exclusive, chain);
            let next = admin.sched.pop_runnable(|r| r.chain.id);
            (next, Self::begin_deactivation(&mut admin))
        };
        if let Some(reason) = deactivate {
            return AfterTurn::Deactivate(reason);
        }
        let Some((first, read_only)) = next else {
            return AfterTurn::Idle;
        };
        if read_only {
            // The read-only requests queued behind it start too. Taken one at a time: the
            // usual single next request costs no allocation.
            loop {
                let more = self.admin.lock().sched.pop_runnable(|r| r.chain.id);
                let Some((other, ro)) = more else { break };
                self.spawn_run(other, !ro, true);
            }
        }
        AfterTurn::Next(first, !read_only)
    }

    /// Moves to `Deactivating` if a deactivation is pending and no turn runs.
    fn begin_deactivation(admin: &mut Admin) -> Option<DeactivationReason> {
        if admin.sched.begin_deactivation() {
            return Some(
                admin
                    .pending_reason
                    .take()
                    .unwrap_or(DeactivationReason::Requested),
            );
        }
        None
    }

    /// One turn: a call or a timer tick, answered when it ends; an
    /// [inline](ReplyTx::Inline) reply is returned instead. The silo's incoming filters, if
    /// any, run around it.
    async fn turn(&self, req: Request, queued: bool) -> TurnReply {
        let Request {
            kind,
            chain,
            deadline,
            ..
        } = req;
        match kind {
            RequestKind::Call {
                method,
                args,
                reply,
            } => {
                if reply.as_ref().is_some_and(ReplyTx::is_closed) {
                    return None; // the caller gave up before the turn started
                }
                // One scan of `G::METHODS` per turn: the method's name and its metrics slot.
                let index = G::METHODS.iter().position(|m| m.id == method);
                let reminder = method == granary_core::REMINDER_METHOD.id;
                let name = index.map_or_else(
                    || {
                        if reminder {
                            granary_core::REMINDER_METHOD.name
                        } else {
                            "?"
                        }
                    },
                    |i| G::METHODS[i].name,
                );
                if queued && deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                    let timeout = Duration::ZERO;
                    let err = CallError::Timeout {
                        grain: self.id().clone(),
                        method: name.to_owned(),
                        timeout,
                    };
                    return match reply {
                        Some(ReplyTx::Inline) => Some(Err(err)),
                        Some(reply) => {
                            let _ = reply.send(Err(err));
                            None
                        }
                        None => None,
                    };
                }
                let encoded = args.is_encoded();
                // Two-way calls are timed; one-way calls (nobody waits for them) only counted.
                let started = reply.is_some().then(Instant::now);
                // The filters' hooks around the method, unboxed: the turn awaits the method
                // in one place, with or without filters.
                let admitted = match self.shared.incoming_filters() {
                    None => Ok((chain, None)),
                    Some(filters) => {
                        let kind = match (reminder, &reply) {
                            (true, _) => CallKind::Reminder,
                            (false, Some(_)) => CallKind::Call,
                            (false, None) => CallKind::OneWay,
                        };
                        let call =
                            FilterCall::new(self.id(), name, kind, chain).arrived(method, encoded);
                        filters
                            .admit(call)
                            .await
                            .map(|passed| (passed.chain(), Some(passed)))
                    }
                };
                let result = match admitted {
                    Err(err) => Err(err),
                    Ok((chain, passed)) => {
                        let result = self.call_turn(method, args, chain, name).await;
                        if let Some(passed) = passed {
                            passed.finish(result.as_ref().map(drop));
                        }
                        result
                    }
                };
                if let Some(i) = index {
                    self.method_metrics[i].record(started.map(|t| t.elapsed()), result.is_err());
                }
                match reply {
                    Some(ReplyTx::Inline) => return Some(result),
                    Some(reply) => {
                        let _ = reply.send(result);
                    }
                    None => {
                        if let Err(err) = result {
                            tracing::warn!(grain = %self.id(), method = name, cause = %err, "one-way call failed");
                        }
                    }
                }
                None
            }
            RequestKind::Timer { name, done } => {
                let result = match self.shared.incoming_filters() {
                    None => self.timer_turn(&name, chain).await,
                    Some(filters) => {
                        let call = FilterCall::new(self.id(), &*name, CallKind::Timer, chain);
                        Box::pin(filters.around(call, |chain| self.timer_turn(&name, chain))).await
                    }
                };
                if let Err(err) = result {
                    tracing::warn!(grain = %self.id(), timer = %name, cause = %err, "timer turn failed");
                }
                let _ = done.send(());
                None
            }
        }
    }

    /// The turn of a call to `method` (called `name`) on `chain`: the method in its span.
    async fn call_turn(
        &self,
        method: granary_core::MethodId,
        args: Payload,
        chain: CallChain,
        name: &str,
    ) -> Result<Payload, CallError> {
        // One span per call: grain, method, silo and the trace it belongs to, which is the
        // same on every silo the call chain crosses.
        let span = tracing::debug_span!(
            "grain.call",
            grain = %self.id(),
            method = name,
            silo = %self.shared.silo(),
            trace = %chain.trace,
        );
        #[cfg(feature = "opentelemetry")]
        crate::otel::join_trace(&span, chain.trace);
        let encoded = args.is_encoded();
        let kind = TurnKind::Call { method, args };
        let scope = self.scope(chain, encoded);
        // Boxed on its own: in place, it would make the inline turn (boxed by the caller)
        // larger than the allocator's per-thread cache serves (1,032 bytes, glibc's tcache),
        // and that allocation would take the slow path on every call. Two small boxes cost
        // less than one large one.
        let execute = Box::pin(turn::execute(&self.grain, &self.ctx, kind, scope));
        // A disabled span (no subscriber wants it) is not entered on every poll.
        let outcome = if span.is_disabled() {
            execute.await
        } else {
            tracing::Instrument::instrument(execute, span).await
        };
        self.settle(outcome, name)
    }

    /// The turn of a tick of timer `name`.
    async fn timer_turn(&self, name: &str, chain: CallChain) -> Result<Payload, CallError> {
        // Boxed, as a call's: in place it would make every turn's future larger.
        let outcome = Box::pin(turn::execute(
            &self.grain,
            &self.ctx,
            TurnKind::Timer(name.to_owned()),
            self.scope(chain, true),
        ))
        .await;
        self.settle(outcome, name)
    }

    /// Turns an outcome into the caller's result; a panic tears the activation down.
    fn settle(&self, outcome: TurnOutcome, what: &str) -> Result<Payload, CallError> {
        match outcome {
            TurnOutcome::Done(reply) => Ok(reply),
            TurnOutcome::Failed(err) => {
                if self.ctx.has_unsaved_changes() {
                    // Its changes were never saved: the next call must not build on them.
                    tracing::debug!(grain = %self.id(), method = what, cause = %err, "turn failed with unsaved state: deactivating");
                    self.mark_for_deactivation(DeactivationReason::FailedWithUnsavedState);
                }
                Err(err)
            }
            TurnOutcome::Panicked(message) => {
                tracing::error!(grain = %self.id(), method = what, %message, "turn panicked: tearing the activation down");
                self.shared.emit(SiloEvent::TurnPanicked(self.id().clone()));
                self.mark_for_deactivation(DeactivationReason::Panicked);
                Err(CallError::GrainPanicked {
                    grain: self.id().clone(),
                    method: what.to_owned(),
                    message,
                })
            }
        }
    }

    fn mark_for_deactivation(&self, reason: DeactivationReason) {
        let mut admin = self.admin.lock();
        admin.sched.mark_deactivation();
        admin.pending_reason = Some(admin.pending_reason.map_or(reason, |r| r.max(reason)));
    }

    /// Claim and load → `on_activate` → serve what queued meanwhile.
    async fn activate(self: Arc<Self>) {
        let loaded = if G::STATELESS_WORKER.is_some() {
            // A stateless worker claims nothing and loads nothing: it is one of several
            // activations of its key, on any silo, and writes nothing to the store.
            Loaded {
                data: None,
                version: 0,
            }
        } else {
            match self.claim().await {
                Ok(loaded) => loaded,
                Err(ClaimFailure::Failed(failure)) => {
                    return self.fail_activation(failure, false).await;
                }
                Err(ClaimFailure::Elsewhere(owner)) => return self.hand_over(&owner),
            }
        };
        // Decoded inside a turn scope, so that references kept in the state bind to this silo.
        let scope = self.scope(CallChain::root(), true);
        let decoded = turn::scoped_sync(scope, || {
            loaded.data.as_deref().map(state_codec::decode::<G>)
        });
        let state = match decoded {
            None => G::State::default(),
            Some(Ok(state)) => state,
            Some(Err(problem)) => {
                let failure = CallError::Storage {
                    grain: self.id().clone(),
                    source: StorageError::Corrupt {
                        grain: self.id().clone(),
                        problem,
                    },
                };
                return self.fail_activation(failure, true).await;
            }
        };
        self.ctx.restore(state, loaded.version);
        if let Err(err) = self.lifecycle_turn(TurnKind::Activate, "on_activate").await {
            let failure = self.activation_failed(format!("on_activate failed: {err}"));
            return self.fail_activation(failure, true).await;
        }
        let (next, deactivate) = {
            let mut admin = self.admin.lock();
            (
                admin.sched.activate(|r| r.chain.id),
                Self::begin_deactivation(&mut admin),
            )
        };
        self.shared.emit(SiloEvent::Activated(self.id().clone()));
        tracing::debug!(grain = %self.id(), activation = %self.ctx.activation_id(), "activated");
        if let Some(reason) = deactivate {
            return self.deactivate(reason).await;
        }
        // The call that triggered the activation runs on in this task; others admitted with it
        // get tasks of their own.
        let mut next = next.into_iter();
        let first = next.next();
        for (req, read_only) in next {
            self.spawn_run(req, !read_only, true);
        }
        if let Some((req, read_only)) = first {
            self.run(req, !read_only, true).await;
        }
    }

    /// Runs `on_activate` or `on_deactivate` as an exclusive turn on a chain of its own (so
    /// that a call back into the grain from the hook is a cycle, not a deadlock).
    async fn lifecycle_turn(&self, kind: TurnKind, what: &str) -> Result<Payload, CallError> {
        let chain = CallChain::root();
        self.admin.lock().sched.start_lifecycle(chain.id);
        let outcome = turn::execute(
            &self.grain,
            &self.ctx,
            kind,
            self.scope(chain.clone(), true),
        )
        .await;
        self.admin.lock().sched.finish(true, chain.id);
        self.settle(outcome, what)
    }

    /// Claims the grain for this activation and loads its state, in one store operation. A claim
    /// held by a leftover of this silo, or by a silo that is dead, is replaced; one held by a
    /// live silo of the cluster sends this activation's calls there.
    async fn claim(&self) -> Result<Loaded, ClaimFailure> {
        let address = self.address();
        let mut replace: Option<GrainAddress> = None;
        for _ in 0..3 {
            let owner = match self.shared.store().claim(&address, replace.as_ref()).await {
                Ok(Claim::Won(loaded)) => return Ok(loaded),
                Ok(Claim::Owned(owner)) => owner,
                Err(source) => {
                    return Err(ClaimFailure::Failed(CallError::Storage {
                        grain: self.id().clone(),
                        source,
                    }));
                }
            };
            if owner.silo == *self.shared.silo() {
                // An entry of this silo that the catalog no longer holds: a leftover of an
                // activation that is gone. This silo creates one activation per grain at a
                // time, so it may replace it.
                replace = Some(owner);
                continue;
            }
            // The router judges the other silo: alone, an earlier generation of this silo is
            // a leftover of a process that crashed; in a cluster, the membership decides.
            let state = match self.shared.home() {
                Some(home) => home.owner_state(&owner.silo).await,
                None => OwnerState::Foreign,
            };
            match state {
                OwnerState::Alive => return Err(ClaimFailure::Elsewhere(owner.silo)),
                OwnerState::Gone => {
                    replace = Some(owner);
                    continue;
                }
                OwnerState::Foreign => {}
            }
            return Err(ClaimFailure::Failed(self.activation_failed(format!(
                "grain is owned by activation {} on silo {}",
                owner.activation, owner.silo
            ))));
        }
        Err(ClaimFailure::Failed(self.activation_failed(
            "the grain's claim kept changing hands; try again".into(),
        )))
    }

    /// Another live silo owns the grain: this activation closes without having claimed it, and
    /// its calls go to that silo.
    fn hand_over(self: Arc<Self>, owner: &SiloId) {
        let queue = self.close();
        tracing::debug!(grain = %self.id(), %owner, "grain lives on another silo: forwarding");
        let requests = queue.into_iter().map(|(req, _)| req).collect();
        match self.shared.home() {
            Some(home) => home.hand_over(self.id(), owner, requests),
            None => fail_all(requests, &CallError::ShuttingDown),
        }
    }

    fn activation_failed(&self, reason: String) -> CallError {
        CallError::ActivationFailed {
            grain: self.id().clone(),
            reason,
        }
    }

    /// Ends a failed activation: every waiting call gets `failure`, none is lost.
    async fn fail_activation(self: Arc<Self>, failure: CallError, claimed: bool) {
        tracing::error!(grain = %self.id(), %failure, "activation failed");
        if claimed
            && G::STATELESS_WORKER.is_none()
            && let Err(err) = self.shared.directory().unregister(&self.address()).await
        {
            tracing::warn!(grain = %self.id(), cause = %err, "could not unregister a failed activation");
        }
        let queue = self.close();
        self.shared
            .emit(SiloEvent::ActivationFailed(self.id().clone()));
        for (req, _) in queue {
            req.fail(failure.clone());
        }
    }

    /// Removes the activation from the catalog (or its worker pool), then closes it; returns
    /// what was queued.
    fn close(&self) -> std::collections::VecDeque<(Request, bool)> {
        match &self.pool {
            Some(pool) => {
                if let Some(pool) = pool.upgrade() {
                    pool.leave(self.ctx.activation_id());
                }
            }
            None => {
                if let Some(home) = self.shared.home() {
                    home.remove(self.id(), self.ctx.activation_id());
                }
            }
        }
        let mut admin = self.admin.lock();
        admin.sched.close()
    }

    /// `on_deactivate` (unless the state is suspect) → unregister → close → re-route the queue.
    async fn deactivate(self: Arc<Self>, reason: DeactivationReason) {
        let timers = std::mem::take(&mut self.admin.lock().timers);
        for (_, timer) in timers {
            timer.cancel();
        }
        if reason.runs_hook()
            && let Err(err) = self
                .lifecycle_turn(TurnKind::Deactivate, "on_deactivate")
                .await
        {
            tracing::warn!(grain = %self.id(), cause = %err, "on_deactivate failed");
        }
        if G::STATELESS_WORKER.is_none()
            && let Err(err) = self.shared.directory().unregister(&self.address()).await
        {
            tracing::warn!(grain = %self.id(), cause = %err, "could not unregister a deactivated activation");
        }
        let queue = self.close();
        tracing::debug!(grain = %self.id(), ?reason, rerouted = queue.len(), "deactivated");
        self.shared
            .emit(SiloEvent::Deactivated(self.id().clone(), reason));
        let home = self.shared.home();
        for (mut req, _) in queue {
            if matches!(req.kind, RequestKind::Timer { .. }) {
                continue; // timers die with their activation
            }
            req.attempts += 1;
            match &home {
                Some(home) => home.reroute(req),
                None => req.fail(CallError::ShuttingDown),
            }
        }
    }

    async fn timer_loop(
        self: Arc<Self>,
        name: Box<str>,
        due: Duration,
        period: Option<Duration>,
        stop: CancellationToken,
    ) {
        let mut next = granary_core::deadline_in(due);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep_until(next) => {}
            }
            let (done, finished) = oneshot::channel();
            let tick = Request {
                target: self.id().clone(),
                kind: RequestKind::Timer {
                    name: name.clone(),
                    done,
                },
                chain: CallChain::root(),
                deadline: None,
                attempts: 0,
                forwards: 0,
            };
            if self.clone().deliver(tick, false).is_err() {
                return;
            }
            // Wait for the tick's turn to end: a timer never overlaps itself.
            tokio::select! {
                () = stop.cancelled() => return,
                _ = finished => {}
            }
            match period {
                Some(period) => next = granary_core::deadline_in(period),
                None => return,
            }
        }
    }
}

impl<G: Grain> ActivationEntry for Activation<G> {
    fn queued(&self) -> usize {
        self.admin.lock().sched.queued()
    }

    fn activation_id(&self) -> ActivationId {
        self.ctx.activation_id()
    }

    fn start(self: Arc<Self>) {
        let shared = self.shared.clone();
        shared.spawn(self.activate());
    }

    fn deliver(self: Arc<Self>, req: Request, inline: bool) -> Result<Routed, Request> {
        self.admit_request(req, inline, true)
    }

    fn idle_for(&self, now_epoch: u64) -> Option<u64> {
        let admin = self.admin.lock();
        let idle = admin.sched.collectable();
        idle.then(|| now_epoch.saturating_sub(self.last_call_epoch.load(Ordering::Relaxed)))
    }

    fn request_deactivation(self: Arc<Self>, reason: DeactivationReason) {
        let start = {
            let mut admin = self.admin.lock();
            if !admin.sched.request_deactivation() {
                return;
            }
            admin.pending_reason = Some(admin.pending_reason.map_or(reason, |r| r.max(reason)));
            Self::begin_deactivation(&mut admin)
        };
        if let Some(reason) = start {
            let shared = self.shared.clone();
            shared.spawn(self.deactivate(reason));
        }
    }

    fn set_timer(self: Arc<Self>, name: &str, due: Duration, period: Option<Duration>) {
        let stop = self.shared.shutdown().child_token();
        {
            let timers = &mut self.admin.lock().timers;
            if let Some(i) = timers.iter().position(|(n, _)| &**n == name) {
                timers.swap_remove(i).1.cancel();
            }
            timers.push((name.into(), stop.clone()));
        }
        let shared = self.shared.clone();
        shared.spawn(self.timer_loop(name.into(), due, period, stop));
    }

    fn detach(&self, turn: BoxFuture<'static, TurnReply>) {
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                self.shared.tracker().spawn_on(turn, &handle);
            }
            Err(_) => {
                tracing::warn!(grain = %self.id(), "runtime gone: an unfinished turn is dropped")
            }
        }
    }

    fn cancel_timer(&self, name: &str) {
        let timers = &mut self.admin.lock().timers;
        if let Some(i) = timers.iter().position(|(n, _)| &**n == name) {
            timers.swap_remove(i).1.cancel();
        }
    }
}

/// Fails every request of `requests` with `err`.
fn fail_all(requests: Vec<Request>, err: &CallError) {
    for req in requests {
        req.fail(err.clone());
    }
}

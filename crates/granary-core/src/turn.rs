//! One turn of a grain: the unit of exclusive execution, shared by the silo and the test kit.
//!
//! A turn runs a method (or a lifecycle hook, or a timer) inside a task-local [`TurnScope`],
//! which is how calls made during the turn learn their call chain and how references decoded
//! during the turn bind to the runtime. A panic is caught here, at the turn boundary, and
//! nowhere else.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;

use crate::context::GrainContext;
use crate::error::CallError;
use crate::grain::Grain;
use crate::id::GrainId;
use crate::message::{CallChain, MethodId, Payload};
use crate::reference::Invoker;

/// What the running turn knows about itself, visible to code it calls.
#[derive(Clone)]
pub struct TurnScope {
    /// The grain whose turn is running.
    pub grain: GrainId,
    /// The call chain the turn runs on.
    pub chain: CallChain,
    /// The runtime that references deserialized during the turn bind to. Set where references
    /// are decoded (arguments that arrived encoded, stored state); `None` for a call whose
    /// arguments arrived as Rust values (their references are bound already), which spares
    /// every local call a reference count on the shared runtime.
    pub invoker: Option<Arc<dyn Invoker>>,
}

impl std::fmt::Debug for TurnScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnScope")
            .field("grain", &self.grain)
            .field("chain", &self.chain)
            .finish_non_exhaustive()
    }
}

tokio::task_local! {
    static TURN: TurnScope;
}

/// The chain for a call made now: the running turn's chain extended by its grain, or a new
/// root chain outside any turn.
#[must_use]
pub fn chain_for_outgoing_call() -> CallChain {
    TURN.try_with(|t| t.chain.extended(&t.grain))
        .unwrap_or_else(|_| CallChain::root())
}

/// The trace of the running turn, if any.
#[must_use]
pub fn current_trace() -> Option<crate::message::TraceId> {
    TURN.try_with(|t| t.chain.trace).ok()
}

/// The chain of a one-way call made now: a new chain, in the running turn's trace and with
/// its request context, if any.
#[must_use]
pub fn chain_for_one_way_call() -> CallChain {
    TURN.try_with(|t| {
        let mut chain = CallChain::root_in(t.chain.trace);
        chain.context = t.chain.context.clone();
        chain
    })
    .unwrap_or_else(|_| CallChain::root())
}

/// The request context of the running turn (empty outside a turn).
#[must_use]
pub fn current_context() -> crate::request_context::RequestContext {
    TURN.try_with(|t| t.chain.context.clone())
        .unwrap_or_default()
}

/// The runtime of the running turn, if any (binds deserialized references).
#[must_use]
pub fn current_invoker() -> Option<Arc<dyn Invoker>> {
    TURN.try_with(|t| t.invoker.clone()).ok().flatten()
}

/// Runs the synchronous `f` with `scope` as the current turn: references deserialized inside
/// (from stored state, say) bind to the scope's runtime.
pub fn scoped_sync<R>(scope: TurnScope, f: impl FnOnce() -> R) -> R {
    TURN.sync_scope(scope, f)
}

/// What a turn executes.
#[derive(Debug)]
pub enum TurnKind {
    /// A method call.
    Call {
        /// The method.
        method: MethodId,
        /// Its arguments.
        args: Payload,
    },
    /// A timer firing.
    Timer(String),
    /// `on_activate`.
    Activate,
    /// `on_deactivate`.
    Deactivate,
}

/// How a turn ended.
#[derive(Debug)]
pub enum TurnOutcome {
    /// The method returned a value (events committed).
    Done(Payload),
    /// The method returned an error, or committing its events failed (events discarded).
    Failed(CallError),
    /// The method panicked (events discarded); the activation must be torn down.
    Panicked(String),
}

/// Runs one turn of `grain` to completion: the method inside its scope, with panics caught,
/// then the commit of events it published but did not commit (or their discarding if it
/// failed).
pub async fn execute<G: Grain>(
    grain: &G,
    ctx: &GrainContext<G>,
    kind: TurnKind,
    scope: TurnScope,
) -> TurnOutcome {
    let fut = async {
        match kind {
            TurnKind::Call { method, args } if method == crate::grain::REMINDER_METHOD.id => {
                reminder_turn(grain, ctx, args).await
            }
            TurnKind::Call { method, args } => grain.invoke(ctx, method, args).await,
            TurnKind::Timer(name) => grain
                .on_timer(ctx, &name)
                .await
                .map(|()| Payload::local(())),
            TurnKind::Activate => grain.on_activate(ctx).await.map(|()| Payload::local(())),
            TurnKind::Deactivate => grain.on_deactivate(ctx).await.map(|()| Payload::local(())),
        }
    };
    // The scope is taken back from the finished future instead of cloned up front: a turn
    // without events to commit costs one scope, not two.
    let mut scoped = std::pin::pin!(TURN.scope(scope, AssertUnwindSafe(fut).catch_unwind()));
    let result = scoped.as_mut().await;
    match result {
        Ok(Ok(reply)) if !ctx.has_pending_events() => TurnOutcome::Done(reply),
        Ok(Ok(reply)) => {
            let scope = scoped
                .take_value()
                .expect("a finished scope gives its value back");
            // Boxed: committing events is the rare path, and its future (a store commit) would
            // make every turn's future, allocated per call, that much larger.
            match Box::pin(TURN.scope(scope, ctx.commit_pending_events())).await {
                Ok(()) => TurnOutcome::Done(reply),
                Err(e) => TurnOutcome::Failed(e),
            }
        }
        Ok(Err(e)) => {
            let dropped = ctx.discard_pending_events();
            if dropped > 0 {
                tracing::debug!(grain = %ctx.id(), dropped, "turn failed: discarding its uncommitted events");
            }
            TurnOutcome::Failed(e)
        }
        Err(panic) => {
            ctx.discard_pending_events();
            TurnOutcome::Panicked(panic_message(&*panic))
        }
    }
}

/// A reminder tick's turn: delivered once per due time (a tick older than the stored next due
/// was delivered already, and is answered with the next due), the advance to the next due
/// time committed with what the grain's `on_reminder` commits. A failing handler's own
/// changes are discarded, its tick's advance is still committed: the tick was delivered.
async fn reminder_turn<G: Grain>(
    grain: &G,
    ctx: &GrainContext<G>,
    args: Payload,
) -> Result<Payload, CallError> {
    let encoded = args.is_encoded();
    let (name, due_ms): (String, u64) = args.take("reminder tick")?;
    let tick = match ctx.begin_reminder_tick(&name, due_ms).await? {
        Ok(tick) => tick,
        Err(next) => return Payload::reply_like(encoded, next),
    };
    match grain.on_reminder(ctx, &name, tick).await {
        Ok(()) => ctx.commit_pending_events().await?,
        Err(err) => {
            ctx.discard_pending_events();
            ctx.keep_reminder_advance(&name, &tick);
            if let Err(commit) = ctx.commit_pending_events().await {
                tracing::warn!(grain = %ctx.id(), reminder = %name, cause = %commit, "could not advance a failed reminder tick");
            }
            return Err(err);
        }
    }
    Payload::reply_like(encoded, ctx.committed_next_due(&name))
}

/// The message of a caught panic.
#[must_use]
pub fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

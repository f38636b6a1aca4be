//! Call filters: code that runs around the calls a silo serves (incoming filters) and the
//! calls it or a client makes (outgoing filters), to authorize, audit, tag or time them. The
//! user's side is [`CallFilter`] (where and in which order filters run is documented there);
//! the runtime's, [`Filters::around`].
//!
//! Before/after hooks rather than an around-filter that calls `next`: the runtime keeps the
//! turn in its own hands (a filter cannot skip it, run it twice or hold it), each hook is one
//! small future whose panic is caught on its own, and a silo without filters runs none of this
//! code (one `Option` test per call).

use std::borrow::Cow;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::time::Instant;

use granary_core::turn::panic_message;
use granary_core::{CallChain, CallError, GrainId, MethodId, OutgoingCall, RequestContext};

/// What kind of turn a filtered call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CallKind {
    /// A call whose caller waits for the reply.
    Call,
    /// A one-way call: nobody waits for it.
    OneWay,
    /// A timer tick of the grain (the method is the timer's name).
    Timer,
    /// A reminder tick, sent by the silo that owns the reminder's shard.
    Reminder,
}

/// A call as a filter sees it.
#[derive(Debug)]
pub struct FilterCall<'a> {
    grain: &'a GrainId,
    method: Cow<'a, str>,
    kind: CallKind,
    chain: CallChain,
    encoded: bool,
    /// The method's id, for the call observer (`SiloBuilder::observe_calls`).
    method_id: Option<MethodId>,
}

impl<'a> FilterCall<'a> {
    pub(crate) fn new(
        grain: &'a GrainId,
        method: impl Into<Cow<'a, str>>,
        kind: CallKind,
        chain: CallChain,
    ) -> Self {
        Self {
            grain,
            method: method.into(),
            kind,
            chain,
            encoded: false,
            method_id: None,
        }
    }

    /// Marks the call as arrived encoded, with its method id (incoming calls).
    pub(crate) fn arrived(mut self, method: MethodId, encoded: bool) -> Self {
        self.method_id = Some(method);
        self.encoded = encoded;
        self
    }

    /// The grain being called.
    #[must_use]
    pub fn grain(&self) -> &GrainId {
        self.grain
    }

    /// The method's name (a timer's name for [`CallKind::Timer`]).
    #[must_use]
    pub fn method(&self) -> &str {
        &self.method
    }

    /// What kind of turn the call is.
    #[must_use]
    pub fn kind(&self) -> CallKind {
        self.kind
    }

    /// The call chain: the grains whose turns wait on this call (outermost first), the chain
    /// and trace ids, and the request context.
    #[must_use]
    pub fn chain(&self) -> &CallChain {
        &self.chain
    }

    /// The call's request context.
    #[must_use]
    pub fn context(&self) -> &RequestContext {
        &self.chain.context
    }

    /// The call's request context, to change: what an incoming filter sets here the grain
    /// reads (`ctx.request_context()`) and its calls carry on; what an outgoing filter sets
    /// travels with the call. Changes in an `after` hook are not seen by anyone.
    pub fn context_mut(&mut self) -> &mut RequestContext {
        &mut self.chain.context
    }

    /// Whether the call's arguments arrived encoded (from another silo, a client, or with
    /// `SiloConfig::wire_local_calls`); `false` for outgoing calls and timer ticks.
    #[must_use]
    pub fn encoded(&self) -> bool {
        self.encoded
    }
}

/// A filter's refusal of a call; the caller gets [`CallError::Refused`] with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    reason: String,
}

impl Refusal {
    /// A refusal saying `reason` (what the caller should know: "not the player's session").
    #[must_use]
    pub fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
        }
    }

    /// The reason.
    #[must_use]
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// A call filter: an async [`before`](Self::before) hook that sees the call (grain, method,
/// [`CallKind`], call chain, request context), may change its request context and may refuse
/// it with a [`Refusal`], and a synchronous [`after`](Self::after) hook that sees how it ended
/// and how long it took.
///
/// **Where filters run.** Incoming filters
/// ([`SiloBuilder::incoming_filter`](crate::SiloBuilder::incoming_filter)) on the silo that
/// runs the turn, inside the turn (after admission, before the method), on every path: inline
/// turns, queued turns, calls from other silos and clients, one-way calls, timer ticks
/// ([`CallKind::Timer`]) and reminder ticks ([`CallKind::Reminder`]). Outgoing filters where a
/// call is made, before it is sent: calls of the silo's grains and of its
/// [`Client`](crate::Client)
/// ([`SiloBuilder::outgoing_filter`](crate::SiloBuilder::outgoing_filter)), or of a
/// [`ClusterClient`](crate::ClusterClient)
/// ([`ClusterClient::outgoing_filter`](crate::ClusterClient::outgoing_filter)); the runtime's
/// own reminder ticks pass incoming filters only.
///
/// **Order.** Filters run in registration order; their `after` hooks in the reverse order,
/// each only if its own `before` let the call through (a refusal by a later filter is then
/// the result it sees).
///
/// A filter that panics fails the call it was looking at with [`CallError::FilterPanicked`]
/// (a panic in `after` is logged: the call has run by then); the grain and the silo carry on.
/// Filters run on the call path: keep them quick, and await only what the call must wait for.
///
/// ```
/// use granary_silo::{CallFilter, CallKind, FilterCall, Refusal};
///
/// /// Lets only calls that carry a `user` in their request context through.
/// struct NeedsUser;
///
/// impl CallFilter for NeedsUser {
///     async fn before(&self, call: &mut FilterCall<'_>) -> Result<(), Refusal> {
///         if call.kind() == CallKind::Timer || call.context().get("user").is_some() {
///             Ok(())
///         } else {
///             Err(Refusal::new("no user in the request context"))
///         }
///     }
/// }
/// ```
pub trait CallFilter: Send + Sync + 'static {
    /// The filter's name, in errors and logs. Default: the type's name.
    fn name(&self) -> &str {
        std::any::type_name::<Self>()
    }

    /// Looks at the call before it runs (incoming) or is sent (outgoing): `Ok` lets it
    /// through, a [`Refusal`] fails it with [`CallError::Refused`] and no later filter, and
    /// no method, runs. May change the call's request context. Default: lets every call
    /// through.
    fn before(
        &self,
        call: &mut FilterCall<'_>,
    ) -> impl Future<Output = Result<(), Refusal>> + Send {
        let _ = call;
        async { Ok(()) }
    }

    /// Sees how a call this filter let through ended: `Ok(())` or its error (a refusal by a
    /// later filter included), and how long the turn (incoming) or the call (outgoing) took,
    /// filters not counted. Default: nothing.
    fn after(&self, call: &FilterCall<'_>, result: Result<(), &CallError>, elapsed: Duration) {
        let _ = (call, result, elapsed);
    }
}

/// A [`CallFilter`] behind a pointer: its `before` future boxed.
trait DynFilter: Send + Sync + 'static {
    fn name(&self) -> &str;
    fn before<'a>(&'a self, call: &'a mut FilterCall<'_>) -> BoxFuture<'a, Result<(), Refusal>>;
    fn after(&self, call: &FilterCall<'_>, result: Result<(), &CallError>, elapsed: Duration);
}

impl<F: CallFilter> DynFilter for F {
    fn name(&self) -> &str {
        CallFilter::name(self)
    }

    fn before<'a>(&'a self, call: &'a mut FilterCall<'_>) -> BoxFuture<'a, Result<(), Refusal>> {
        Box::pin(CallFilter::before(self, call))
    }

    fn after(&self, call: &FilterCall<'_>, result: Result<(), &CallError>, elapsed: Duration) {
        CallFilter::after(self, call, result, elapsed);
    }
}

/// Observes every call a silo dispatches: grain, method and whether it arrived encoded (see
/// `SiloBuilder::observe_calls`).
pub type CallObserver = Arc<dyn Fn(&GrainId, MethodId, bool) + Send + Sync>;

/// `SiloBuilder::observe_calls`: an incoming filter that only looks.
struct Observe(CallObserver);

impl CallFilter for Observe {
    fn name(&self) -> &str {
        "observe_calls"
    }

    fn before(
        &self,
        call: &mut FilterCall<'_>,
    ) -> impl Future<Output = Result<(), Refusal>> + Send {
        if let Some(method) = call.method_id {
            (self.0)(call.grain, method, call.encoded);
        }
        std::future::ready(Ok(()))
    }
}

/// The filters of one direction, in registration order, as a silo or client is built.
#[derive(Default, Clone)]
pub(crate) struct FilterList(Vec<Arc<dyn DynFilter>>);

impl FilterList {
    pub(crate) fn push(&mut self, filter: impl CallFilter) {
        self.0.push(Arc::new(filter));
    }

    pub(crate) fn observe(&mut self, observer: CallObserver) {
        self.push(Observe(observer));
    }

    /// The chain to run, `None` without filters (the call path then runs none of this).
    pub(crate) fn build(&self) -> Option<Filters> {
        (!self.0.is_empty()).then(|| Filters(self.0.iter().cloned().collect()))
    }
}

impl fmt::Debug for FilterList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|x| x.name()))
            .finish()
    }
}

/// Runs the outgoing `filters` around `send`, which sends the call (with the request context
/// the filters left it).
pub(crate) async fn outgoing<T, F>(
    filters: Filters,
    call: OutgoingCall,
    kind: CallKind,
    send: impl FnOnce(OutgoingCall) -> F,
) -> Result<T, CallError>
where
    F: Future<Output = Result<T, CallError>>,
{
    let OutgoingCall {
        target,
        method,
        args,
        chain,
        timeout,
    } = call;
    let seen = FilterCall::new(&target, method.name, kind, chain);
    filters
        .around(seen, |chain| {
            send(OutgoingCall {
                target: target.clone(),
                method,
                args,
                chain,
                timeout,
            })
        })
        .await
}

/// A non-empty chain of filters, ready to run around calls.
#[derive(Clone)]
pub(crate) struct Filters(Arc<[Arc<dyn DynFilter>]>);

impl fmt::Debug for Filters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|x| x.name()))
            .finish()
    }
}

impl Filters {
    /// Runs `run` (the turn, or the sending of the call) between the filters' hooks: every
    /// `before` in order (a refusal or a panic ends the call there), the context's bounds
    /// checked again (a filter may have grown it), then `run` with the call's chain, then the
    /// `after` hooks of the filters that let the call through, last first.
    pub(crate) async fn around<T, F>(
        &self,
        call: FilterCall<'_>,
        run: impl FnOnce(CallChain) -> F,
    ) -> Result<T, CallError>
    where
        F: Future<Output = Result<T, CallError>>,
    {
        let passed = self.admit(call).await?;
        let result = run(passed.chain()).await;
        passed.finish(result.as_ref().map(drop));
        result
    }

    /// The first half of [`around`](Self::around), for a caller that runs the call itself
    /// (a turn, whose future should not grow by the filters' when there are none): every
    /// `before` in order (a refusal or a panic ends the call there, after the `after` hooks of
    /// the filters that let it through), then the context's bounds checked again (a filter may
    /// have grown it). The call runs with [`Passed::chain`], then ends with
    /// [`Passed::finish`].
    pub(crate) async fn admit<'a>(
        &'a self,
        mut call: FilterCall<'a>,
    ) -> Result<Passed<'a>, CallError> {
        if let Err((passed, err)) = self.before(&mut call).await {
            self.after(passed, &call, Err(&err), Duration::ZERO);
            return Err(err);
        }
        if let Err(err) = call.chain.context.check() {
            self.after(self.0.len(), &call, Err(&err), Duration::ZERO);
            return Err(err);
        }
        Ok(Passed {
            filters: self,
            call,
            started: Instant::now(),
        })
    }

    /// Every filter's `before`, in order, until one refuses or panics: that error, with how
    /// many filters let the call through before it.
    async fn before(&self, call: &mut FilterCall<'_>) -> Result<(), (usize, CallError)> {
        for (passed, filter) in self.0.iter().enumerate() {
            // Made inside the caught future: a filter may panic making its future as well as
            // polling it.
            let verdict = AssertUnwindSafe(async { filter.before(call).await })
                .catch_unwind()
                .await;
            let err = match verdict {
                Ok(Ok(())) => continue,
                Ok(Err(refusal)) => CallError::Refused {
                    grain: call.grain.clone(),
                    method: call.method.clone().into_owned(),
                    filter: filter.name().to_owned(),
                    reason: refusal.reason,
                },
                Err(panic) => {
                    let message = panic_message(&*panic);
                    tracing::error!(grain = %call.grain, method = %call.method, filter = filter.name(), %message, "call filter panicked: the call fails");
                    CallError::FilterPanicked {
                        grain: call.grain.clone(),
                        method: call.method.clone().into_owned(),
                        filter: filter.name().to_owned(),
                        message,
                    }
                }
            };
            return Err((passed, err));
        }
        Ok(())
    }

    /// The `after` hooks of the first `passed` filters, last first; a panic is logged.
    fn after(
        &self,
        passed: usize,
        call: &FilterCall<'_>,
        result: Result<(), &CallError>,
        elapsed: Duration,
    ) {
        for filter in self.0[..passed].iter().rev() {
            let hook = AssertUnwindSafe(|| filter.after(call, result, elapsed));
            if let Err(panic) = std::panic::catch_unwind(hook) {
                let message = panic_message(&*panic);
                tracing::error!(grain = %call.grain, method = %call.method, filter = filter.name(), %message, "call filter panicked after the call");
            }
        }
    }
}

/// A call every filter let through ([`Filters::admit`]), running: its `after` hooks run when
/// it [finishes](Self::finish).
pub(crate) struct Passed<'a> {
    filters: &'a Filters,
    call: FilterCall<'a>,
    started: Instant,
}

impl Passed<'_> {
    /// The call chain to run the call with, with the request context the filters left it.
    pub(crate) fn chain(&self) -> CallChain {
        self.call.chain.clone()
    }

    /// Runs every filter's `after` hook with how the call ended and how long it ran.
    pub(crate) fn finish(self, result: Result<(), &CallError>) {
        let elapsed = self.started.elapsed();
        self.filters
            .after(self.filters.0.len(), &self.call, result, elapsed);
    }
}

#[cfg(test)]
mod tests;

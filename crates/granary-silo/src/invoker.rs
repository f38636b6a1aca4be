//! The silo's [`Invoker`]: what references created in or for this silo call through. It sets
//! the deadline, asks the [`Router`] where the call goes and waits for the reply; in wire mode it sends every call
//! through the wire codec exactly as the cluster transport does.

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;

use granary_core::{
    CallError, Envelope, GrainId, Invoked, Invoker, MethodId, ObserverAddress, ObserverKey,
    OutgoingCall, Payload, SiloId, codec, deadline_in,
};

use crate::activation::{InlineTurn, Routed};
use crate::cluster::{Cluster, ClusterHost, client_peer};
use crate::filter::{self, CallKind, Filters};
use crate::metrics::Refusal;
use crate::request::{
    RemoteCall, ReplyRx, ReplyTx, Request, RequestKind, envelope_of, remote_call,
};
use crate::retry::{Backoff, certainly_not_run};
use crate::router::{Destination, Origin, Router};

/// Calls into one silo. Holds the router strongly, so that a call takes no reference count on
/// it (the silo's services hold the invoker weakly; the [`Silo`](crate::Silo) holds it
/// strongly).
#[derive(Debug)]
pub(crate) struct SiloInvoker {
    router: Arc<Router>,
}

impl SiloInvoker {
    pub(crate) fn new(router: Arc<Router>) -> Self {
        Self { router }
    }
}

impl Invoker for SiloInvoker {
    fn invoke(&self, call: OutgoingCall) -> BoxFuture<'static, Result<Payload, CallError>> {
        match self.invoke_now(call) {
            Invoked::Ready(reply) => futures::future::ready(reply).boxed(),
            Invoked::Pending(reply) => reply,
        }
    }

    fn invoke_now(&self, call: OutgoingCall) -> Invoked<Payload> {
        if let Some(filters) = outgoing_filters(&self.router, &call) {
            let invoker = Self::new(self.router.clone());
            return Invoked::Pending(
                filter::outgoing(filters, call, CallKind::Call, move |call| {
                    match invoker.invoke_unfiltered(call) {
                        Invoked::Ready(reply) => futures::future::ready(reply).boxed(),
                        Invoked::Pending(reply) => reply,
                    }
                })
                .boxed(),
            );
        }
        self.invoke_unfiltered(call)
    }

    fn send(&self, call: OutgoingCall) -> BoxFuture<'static, Result<(), CallError>> {
        match self.send_now(call) {
            Invoked::Ready(accepted) => futures::future::ready(accepted).boxed(),
            Invoked::Pending(accepted) => accepted,
        }
    }

    fn send_now(&self, call: OutgoingCall) -> Invoked<()> {
        if let Some(filters) = outgoing_filters(&self.router, &call) {
            let invoker = Self::new(self.router.clone());
            return Invoked::Pending(
                filter::outgoing(filters, call, CallKind::OneWay, move |call| {
                    match invoker.send_unfiltered(call) {
                        Invoked::Ready(accepted) => futures::future::ready(accepted).boxed(),
                        Invoked::Pending(accepted) => accepted,
                    }
                })
                .boxed(),
            );
        }
        self.send_unfiltered(call)
    }
}

/// The silo's outgoing filters, if it has any and `call` is not a reminder tick (the
/// runtime's own: it passes the incoming filters only).
fn outgoing_filters(router: &Router, call: &OutgoingCall) -> Option<Filters> {
    let filters = router.shared().outgoing_filters()?;
    (call.method.id != granary_core::REMINDER_METHOD.id).then(|| filters.clone())
}

impl SiloInvoker {
    /// A call, past the outgoing filters.
    fn invoke_unfiltered(&self, call: OutgoingCall) -> Invoked<Payload> {
        let router = &self.router;
        let timeout = call
            .timeout
            .unwrap_or(router.shared().config().call_timeout);
        if ObserverAddress::is_observer(&call.target) {
            return Invoked::Pending(to_observer(router, call, timeout, false));
        }
        let (cluster, away) = match leaving(router.destination(&call.target, Origin::Call)) {
            Ok(Some(away)) => away,
            Ok(None) => return invoke_here(router, call, timeout),
            Err(err) => return Invoked::Ready(Err(err)),
        };
        let router = router.clone();
        Invoked::Pending(
            async move {
                let Some(to) = away.silo(&cluster).await else {
                    return match invoke_here(&router, call, timeout) {
                        Invoked::Ready(reply) => reply,
                        Invoked::Pending(reply) => reply.await,
                    };
                };
                call_away(&router, &cluster, to, remote_call(call, timeout, false)?).await
            }
            .boxed(),
        )
    }

    /// A one-way call, past the outgoing filters.
    fn send_unfiltered(&self, call: OutgoingCall) -> Invoked<()> {
        let router = &self.router;
        let timeout = router.shared().config().call_timeout;
        if ObserverAddress::is_observer(&call.target) {
            let sent = to_observer(router, call, timeout, true);
            return Invoked::Pending(async move { sent.await.map(drop) }.boxed());
        }
        let (cluster, away) = match leaving(router.destination(&call.target, Origin::Call)) {
            Ok(Some(away)) => away,
            Ok(None) => return Invoked::Ready(send_here(router, call)),
            Err(err) => return Invoked::Ready(Err(err)),
        };
        let router = router.clone();
        Invoked::Pending(
            async move {
                match away.silo(&cluster).await {
                    Some(to) => cluster.send(&to, remote_call(call, timeout, true)?).await,
                    None => send_here(&router, call),
                }
            }
            .boxed(),
        )
    }
}

/// Sends `call` to the silo `to` and waits for the reply. A refusal that says the call did
/// not run there ([`certainly_not_run`]: the silo is shutting down and its grains are moving)
/// places the call afresh and sends it again after a pause, until its deadline, as a
/// [`ClusterClient`](crate::ClusterClient) does: a grain calling a grain on a silo that leaves
/// gracefully does not see the refusal.
async fn call_away(
    router: &Arc<Router>,
    cluster: &Arc<Cluster>,
    mut to: SiloId,
    mut call: RemoteCall,
) -> Result<Payload, CallError> {
    let mut backoff = Backoff::new(call.timeout);
    loop {
        let refused = match cluster.call(&to, &call).await {
            Err(err) if certainly_not_run(&err) => err,
            reply => return reply,
        };
        tracing::debug!(grain = %call.target, silo = %to, cause = %refused, "call refused without running; placing it again");
        if !backoff.pause(router.shared().shutdown()).await {
            return Err(refused);
        }
        router.shared().metrics().retried();
        call.timeout = backoff.left();
        let away = match leaving(router.destination(&call.target, Origin::Call)) {
            Ok(Some((_, away))) => away.silo(cluster).await,
            Ok(None) => None,
            Err(err) => return Err(err),
        };
        match away {
            Some(next) => to = next,
            // Placed here now: run as a call that arrived from another silo.
            None => return run_call(router, call).await.map(Payload::Encoded),
        }
    }
}

/// A call to an observer: run by this silo's observer table when the observer's client is
/// connected here; otherwise sent to the gateway silo its reference names, which holds the
/// client's connection. A one-way call never waits on the client.
fn to_observer(
    router: &Arc<Router>,
    call: OutgoingCall,
    timeout: std::time::Duration,
    one_way: bool,
) -> BoxFuture<'static, Result<Payload, CallError>> {
    let shared = router.shared();
    let Some(address) = ObserverKey::of(&call.target) else {
        let gone = CallError::ObserverGone {
            observer: call.target,
            reason: "its reference does not name a gateway".into(),
        };
        return futures::future::ready(Err(gone)).boxed();
    };
    if address.gateway_is(shared.silo()) {
        let cluster = match router.cluster() {
            Some(cluster) if !shared.observers().contains(&address) => cluster.clone(),
            _ => return shared.observers().call(call, timeout, one_way),
        };
        // A client connected to this silo from outside: over its connection.
        let client = client_peer(address.client);
        let call = match remote_call(call, timeout, one_way) {
            Ok(call) => call,
            Err(err) => return futures::future::ready(Err(err)).boxed(),
        };
        if one_way {
            let pushed = cluster.push_to_client(&client, call);
            return futures::future::ready(pushed.map(|()| Payload::local(()))).boxed();
        }
        return async move { cluster.call_client(&client, call).await }.boxed();
    }
    let gateway = SiloId::new(address.gateway_name, address.generation);
    let Some(cluster) = router.cluster().cloned() else {
        let gone = CallError::ObserverGone {
            observer: call.target,
            reason: format!("its gateway {gateway} is not this silo"),
        };
        return futures::future::ready(Err(gone)).boxed();
    };
    if cluster.address_of(&gateway).is_none() {
        // The gateway left the cluster (or never was in it): its clients' connections went
        // with it, and they come back through another gateway with new references.
        let gone = CallError::ObserverGone {
            observer: call.target,
            reason: format!("its gateway {gateway} is not an active silo"),
        };
        return futures::future::ready(Err(gone)).boxed();
    }
    // A one-way call goes as a request too: the gateway answers as soon as it queued the
    // push for the client (never waiting on the client), so that the caller learns when the
    // observer is gone.
    async move {
        let reply = cluster
            .call(&gateway, &remote_call(call, timeout, one_way)?)
            .await?;
        Ok(if one_way { Payload::local(()) } else { reply })
    }
    .boxed()
}

/// Where a call that may leave this silo goes.
enum Away {
    /// To this silo.
    Silo(SiloId),
    /// To the silo of this co-location partner, if it is active on another silo.
    Partner(GrainId),
}

impl Away {
    /// The silo the call goes to; `None`: it stays here after all.
    async fn silo(self, cluster: &Cluster) -> Option<SiloId> {
        match self {
            Self::Silo(to) => Some(to),
            Self::Partner(partner) => cluster.locate(&partner).await,
        }
    }
}

/// The cluster and the way off this silo of a call whose destination is not `Local`; the
/// error of a call that has nowhere to go.
fn leaving(destination: Destination<'_>) -> Result<Option<(Arc<Cluster>, Away)>, CallError> {
    match destination {
        Destination::Local => Ok(None),
        Destination::Remote(cluster, to) => Ok(Some((cluster.clone(), Away::Silo(to)))),
        Destination::NextTo(cluster, partner) => {
            Ok(Some((cluster.clone(), Away::Partner(partner))))
        }
        Destination::Nowhere(err) => Err(err),
    }
}

impl ClusterHost for SiloInvoker {
    fn dispatch(&self, call: RemoteCall) -> BoxFuture<'static, Result<Vec<u8>, CallError>> {
        let router = self.router.clone();
        async move { run_call(&router, call).await }.boxed()
    }

    fn static_names(
        &self,
        type_name: &str,
        method: MethodId,
    ) -> Option<(&'static str, Option<&'static str>)> {
        self.router.catalog().static_names(type_name, method)
    }

    fn hosts(&self, grain: &GrainId) -> bool {
        self.router.catalog().contains(grain)
    }

    fn activations_by_type(&self) -> Vec<(String, u64)> {
        self.router.catalog().activations_by_type()
    }

    fn stop(&self) {
        self.router.catalog().stop_accepting();
        let router = self.router.clone();
        self.router.shared().spawn(async move {
            let timeout = router.shared().config().shutdown_timeout;
            router.catalog().deactivate_all(timeout).await;
        });
    }
}

/// A call to a grain active (or to be activated) on this silo.
fn invoke_here(
    router: &Arc<Router>,
    call: OutgoingCall,
    timeout: std::time::Duration,
) -> Invoked<Payload> {
    if router.shared().config().wire_local_calls {
        let router = router.clone();
        return Invoked::Pending(
            async move { call_over_wire(&router, call, timeout).await }.boxed(),
        );
    }
    let deadline = deadline_in(timeout);
    let OutgoingCall {
        target,
        method,
        args,
        chain,
        ..
    } = call;
    let kind = RequestKind::Call {
        method: method.id,
        args,
        reply: Some(ReplyTx::Inline),
    };
    let request = Request {
        target: target.clone(),
        kind,
        chain,
        deadline: Some(deadline),
        attempts: 0,
        forwards: 0,
    };
    let failed = |err| Invoked::Ready(Err(err));
    let unavailable = |grain| CallError::Unavailable { grain, attempts: 0 };
    let timed_out = move |grain| CallError::Timeout {
        grain,
        method: method.name.to_owned(),
        timeout,
    };
    // Routed now, with the router borrowed: the call's future owns no handle on it. A turn
    // admitted at once comes back to run right here, in the caller's task: no spawn, no
    // thread hop, and its reply is the turn's output, with no channel.
    match router.route_with(request, true) {
        Routed::Turn(mut turn) => {
            // Polled once at once: a turn that waits on nothing ends here, and its call needs
            // no future, no timer and no task wake-up. Whatever the turn waits on has its
            // waker registered again when the future below polls it.
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            match std::pin::Pin::new(&mut turn).poll(&mut cx) {
                std::task::Poll::Ready(Some(reply)) => Invoked::Ready(reply),
                std::task::Poll::Ready(None) => failed(unavailable(target)),
                std::task::Poll::Pending => Invoked::Pending(
                    async move {
                        match tokio::time::timeout_at(deadline, turn).await {
                            Ok(Some(reply)) => reply,
                            Ok(None) => Err(unavailable(target)),
                            Err(_) => Err(timed_out(target)),
                        }
                    }
                    .boxed(),
                ),
            }
        }
        Routed::Wait(rx) => Invoked::Pending(
            async move {
                match tokio::time::timeout_at(deadline, rx).await {
                    Ok(Ok(reply)) => reply,
                    Ok(Err(_)) => Err(unavailable(target)),
                    Err(_) => Err(timed_out(target)),
                }
            }
            .boxed(),
        ),
        // Not reached: a request with an inline reply is run or given a channel.
        Routed::Delivered => failed(unavailable(target)),
    }
}

/// A one-way call to a grain active (or to be activated) on this silo.
fn send_here(router: &Arc<Router>, call: OutgoingCall) -> Result<(), CallError> {
    let args = if router.shared().config().wire_local_calls {
        Payload::Encoded(call.args.into_bytes(call.method.name)?)
    } else {
        call.args
    };
    let kind = RequestKind::Call {
        method: call.method.id,
        args,
        reply: None,
    };
    let request = Request {
        target: call.target,
        kind,
        chain: call.chain,
        deadline: None,
        attempts: 0,
        forwards: 0,
    };
    router.route(request);
    Ok(())
}

/// Encodes the call into an envelope, dispatches the bytes, decodes the reply bytes.
async fn call_over_wire(
    router: &Arc<Router>,
    call: OutgoingCall,
    timeout: std::time::Duration,
) -> Result<Payload, CallError> {
    let bytes = envelope_of(call, timeout, false)?.encode()?;
    let reply = dispatch_wire(router, &bytes).await;
    let reply: Result<Vec<u8>, CallError> =
        codec::decode(&reply).map_err(|e| CallError::Codec {
            what: "reply".into(),
            reason: e.to_string(),
        })?;
    reply.map(Payload::Encoded)
}

/// Dispatches an encoded envelope and answers with the encoded `Result<Vec<u8>, CallError>`:
/// the entry point of calls that arrive over the wire.
pub(crate) async fn dispatch_wire(router: &Arc<Router>, bytes: &[u8]) -> Vec<u8> {
    let result = dispatch_envelope(router, bytes).await;
    codec::encode(&result).unwrap_or_else(|err| {
        // The reply itself is too large or unencodable: say so instead.
        let fallback: Result<Vec<u8>, CallError> = Err(CallError::Codec {
            what: "reply".into(),
            reason: err.to_string(),
        });
        codec::encode(&fallback).expect("a short error always encodes")
    })
}

/// Runs an encoded call: here, or forwarded when this silo knows its grain lives on another
/// silo. Answers with the encoded reply (empty for a one-way call).
async fn dispatch_envelope(router: &Arc<Router>, bytes: &[u8]) -> Result<Vec<u8>, CallError> {
    match Envelope::decode(bytes) {
        Ok(envelope) => run_call(router, envelope.into()).await,
        Err(err @ CallError::InvalidKey { .. }) => {
            router.shared().metrics().refused(Refusal::Key);
            tracing::debug!(cause = %err, "call envelope refused");
            Err(err)
        }
        Err(err) => {
            tracing::warn!(cause = %err, "malformed call envelope");
            Err(err)
        }
    }
}

/// Runs a decoded call: see `dispatch_envelope`.
async fn run_call(router: &Arc<Router>, call: RemoteCall) -> Result<Vec<u8>, CallError> {
    // Decoded from another silo's or a client's bytes: the keys (the target's and those of
    // the grains on its call chain, which this silo keeps while the call runs) have not been
    // checked yet.
    let checked = call.target.check_key().and_then(|()| {
        call.chain
            .grains
            .iter()
            .try_for_each(granary_core::GrainId::check_key)
    });
    if let Err(err) = checked {
        router.shared().metrics().refused(Refusal::Key);
        tracing::debug!(cause = %err, "call envelope refused");
        return Err(err);
    }
    if ObserverAddress::is_observer(&call.target) {
        return observer_call_here(router, call).await;
    }
    // The timeout came from the wire: `deadline_in` never overflows, whatever it says.
    let deadline = deadline_in(call.timeout);
    let RemoteCall {
        target,
        method,
        method_name,
        args,
        timeout,
        chain,
        one_way,
        forwards,
    } = call;
    let request = Request {
        target: target.clone(),
        kind: RequestKind::Call {
            method,
            args: Payload::Encoded(args),
            reply: (!one_way).then_some(ReplyTx::Inline),
        },
        chain,
        deadline: (!one_way).then_some(deadline),
        attempts: 0,
        forwards,
    };
    // A turn admitted at once runs in this task (no second spawn).
    let routed = router.route_with(request, true);
    if one_way {
        if let Routed::Turn(turn) = routed {
            router.shared().spawn(async move {
                turn.await;
            });
        }
        return Ok(Vec::new());
    }
    let reply = match routed {
        Routed::Turn(turn) => wait_for(deadline, TurnOrChannel::Turn(turn)).await,
        Routed::Wait(rx) => wait_for(deadline, TurnOrChannel::Channel(rx)).await,
        Routed::Delivered => Some(None),
    };
    match reply {
        Some(Some(result)) => result?.into_bytes(&method_name),
        Some(None) => Err(CallError::Unavailable {
            grain: target,
            attempts: 0,
        }),
        None => Err(CallError::Timeout {
            grain: target,
            method: method_name.into_owned(),
            timeout,
        }),
    }
}

/// A call to an observer that arrived from another silo: this silo is the gateway its
/// reference names, or the observer is gone (a reference is never forwarded further).
async fn observer_call_here(router: &Arc<Router>, call: RemoteCall) -> Result<Vec<u8>, CallError> {
    let shared = router.shared();
    let Some(address) = ObserverKey::of(&call.target).filter(|a| a.gateway_is(shared.silo()))
    else {
        return Err(CallError::ObserverGone {
            observer: call.target,
            reason: format!("silo {} is not its gateway", shared.silo()),
        });
    };
    let table = shared.observers();
    if let Some(cluster) = router.cluster()
        && !table.contains(&address)
    {
        let client = client_peer(address.client);
        if call.one_way {
            cluster.push_to_client(&client, call)?;
            return Ok(Vec::new());
        }
        let name = call.method_name.clone();
        return cluster.call_client(&client, call).await?.into_bytes(&name);
    }
    if call.one_way {
        table.send(call.target, call.method, Payload::Encoded(call.args))?;
        return Ok(Vec::new());
    }
    let name = call.method_name.clone();
    let reply = table
        .invoke(
            call.target,
            call.method_name,
            call.method,
            Payload::Encoded(call.args),
            call.timeout,
        )
        .await?;
    reply.into_bytes(&name)
}

/// Where the reply of a routed call comes from.
enum TurnOrChannel {
    /// The output of the turn, run here.
    Turn(InlineTurn),
    /// A channel.
    Channel(ReplyRx),
}

/// Waits for a reply until `deadline`: `None` if it passed, `Some(None)` if the reply was
/// lost (its channel dropped: the activation closed without answering).
async fn wait_for(
    deadline: tokio::time::Instant,
    from: TurnOrChannel,
) -> Option<Option<Result<Payload, CallError>>> {
    let reply = async move {
        match from {
            TurnOrChannel::Turn(turn) => turn.await,
            TurnOrChannel::Channel(rx) => rx.await.ok(),
        }
    };
    tokio::time::timeout_at(deadline, reply).await.ok()
}

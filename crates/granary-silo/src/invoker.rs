//! The silo's [`Invoker`]: what references created in or for this silo call through. It sets
//! the deadline, asks the [`Router`] where the call goes and waits for the reply; in wire mode it sends every call
//! through the wire codec exactly as the cluster transport does.

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::oneshot;

use granary_core::{
    CallError, Envelope, GrainId, Invoker, OutgoingCall, Payload, SiloId, codec, deadline_in,
};

use crate::cluster::{Cluster, ClusterHost};
use crate::metrics::Refusal;
use crate::request::{Request, RequestKind, envelope_of};
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
        let router = &self.router;
        let timeout = call
            .timeout
            .unwrap_or(router.shared().config().call_timeout);
        let (cluster, away) = match leaving(router.destination(&call.target, Origin::Call)) {
            Ok(Some(away)) => away,
            Ok(None) => return invoke_here(router, call, timeout),
            Err(err) => return futures::future::ready(Err(err)).boxed(),
        };
        let router = router.clone();
        async move {
            match away.silo(&cluster).await {
                Some(to) => cluster.call(&to, envelope_of(call, timeout, false)?).await,
                None => invoke_here(&router, call, timeout).await,
            }
        }
        .boxed()
    }

    fn send(&self, call: OutgoingCall) -> BoxFuture<'static, Result<(), CallError>> {
        let router = &self.router;
        let timeout = router.shared().config().call_timeout;
        let (cluster, away) = match leaving(router.destination(&call.target, Origin::Call)) {
            Ok(Some(away)) => away,
            Ok(None) => return futures::future::ready(send_here(router, call)).boxed(),
            Err(err) => return futures::future::ready(Err(err)).boxed(),
        };
        let router = router.clone();
        async move {
            match away.silo(&cluster).await {
                Some(to) => cluster.send(&to, envelope_of(call, timeout, true)?).await,
                None => send_here(&router, call),
            }
        }
        .boxed()
    }
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
    fn dispatch(&self, envelope: Envelope) -> BoxFuture<'static, Result<Vec<u8>, CallError>> {
        let router = self.router.clone();
        async move { run_envelope(&router, envelope).await }.boxed()
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
) -> BoxFuture<'static, Result<Payload, CallError>> {
    if router.shared().config().wire_local_calls {
        let router = router.clone();
        return async move { call_over_wire(&router, call, timeout).await }.boxed();
    }
    let deadline = deadline_in(timeout);
    let (reply, mut rx) = oneshot::channel();
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
        reply: Some(reply),
    };
    let request = Request {
        target: target.clone(),
        kind,
        chain,
        deadline: Some(deadline),
        attempts: 0,
        forwards: 0,
    };
    // Routed now, with the router borrowed: the call's future owns no handle on it. A turn
    // admitted at once comes back to run right here, in the caller's task: no spawn, no
    // thread hop, and (when it does not wait on anything) no timer either.
    let mut inline = router.route_with(request, true);
    async move {
        if let Some(turn) = inline.as_mut()
            && futures::poll!(turn).is_ready()
        {
            // The turn finished without waiting on anything: its reply is there, and no
            // deadline timer was ever needed.
            inline = None;
            if let Ok(result) = rx.try_recv() {
                // A loop of such calls touches no tokio resource: spend cooperative budget
                // so that it still yields to the other tasks of its worker now and then.
                tokio::task::coop::consume_budget().await;
                return result;
            }
        }
        let wait = async move {
            if let Some(turn) = inline {
                turn.await;
            }
            rx.await
        };
        match tokio::time::timeout_at(deadline, wait).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(CallError::Unavailable {
                grain: target,
                attempts: 0,
            }),
            Err(_) => Err(CallError::Timeout {
                grain: target,
                method: method.name.to_owned(),
                timeout,
            }),
        }
    }
    .boxed()
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
    router.route(Request {
        target: call.target,
        kind,
        chain: call.chain,
        deadline: None,
        attempts: 0,
        forwards: 0,
    });
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
        Ok(envelope) => run_envelope(router, envelope).await,
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
async fn run_envelope(router: &Arc<Router>, envelope: Envelope) -> Result<Vec<u8>, CallError> {
    // Decoded from another silo's or a client's bytes: the key has not been checked yet.
    if let Err(err) = envelope.target.check_key() {
        router.shared().metrics().refused(Refusal::Key);
        tracing::debug!(cause = %err, "call envelope refused");
        return Err(err);
    }
    // The timeout came from the wire: `deadline_in` never overflows, whatever it says.
    let deadline = deadline_in(envelope.timeout);
    let Envelope {
        target,
        method,
        method_name,
        args,
        timeout,
        chain,
        one_way,
        forwards,
    } = envelope;
    let (reply, rx) = if one_way {
        (None, None)
    } else {
        let (tx, rx) = oneshot::channel();
        (Some(tx), Some(rx))
    };
    let request = Request {
        target: target.clone(),
        kind: RequestKind::Call {
            method,
            args: Payload::Encoded(args),
            reply,
        },
        chain,
        deadline: (!one_way).then_some(deadline),
        attempts: 0,
        forwards,
    };
    // A turn admitted at once runs in this task (no second spawn).
    let inline = router.route_with(request, true);
    let Some(rx) = rx else {
        if let Some(turn) = inline {
            router.shared().spawn(turn);
        }
        return Ok(Vec::new());
    };
    let wait = async move {
        if let Some(turn) = inline {
            turn.await;
        }
        rx.await
    };
    match tokio::time::timeout_at(deadline, wait).await {
        Ok(Ok(result)) => result?.into_bytes(&method_name),
        Ok(Err(_)) => Err(CallError::Unavailable {
            grain: target,
            attempts: 0,
        }),
        Err(_) => Err(CallError::Timeout {
            grain: target,
            method: method_name,
            timeout,
        }),
    }
}

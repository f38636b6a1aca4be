//! A call or timer tick on its way to an activation.

use tokio::sync::oneshot;
use tokio::time::Instant;

use granary_core::{CallChain, CallError, Envelope, GrainId, MethodId, OutgoingCall, Payload};

/// Where a call's reply goes.
pub(crate) type ReplyTx = oneshot::Sender<Result<Payload, CallError>>;

/// One unit of work for an activation.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) target: GrainId,
    pub(crate) kind: RequestKind,
    pub(crate) chain: CallChain,
    /// When the caller stops waiting; a queued request past it is answered with a timeout
    /// instead of run. `None` for one-way calls and timer ticks: nobody waits for them, and they
    /// run whenever their turn comes.
    pub(crate) deadline: Option<Instant>,
    /// How many times the request was handed back by a closing activation and routed again.
    pub(crate) attempts: u32,
    /// How many times silos forwarded it towards the grain's owner.
    pub(crate) forwards: u32,
}

#[derive(Debug)]
pub(crate) enum RequestKind {
    /// A method call; `reply` is `None` for one-way calls.
    Call {
        method: MethodId,
        args: Payload,
        reply: Option<ReplyTx>,
    },
    /// A timer tick; `done` fires when its turn has finished.
    Timer {
        name: Box<str>,
        done: oneshot::Sender<()>,
    },
}

impl Request {
    /// Answers the request with an error (a no-op for one-way calls and timers, which log).
    pub(crate) fn fail(self, err: CallError) {
        match self.kind {
            RequestKind::Call {
                reply: Some(reply), ..
            } => {
                let _ = reply.send(Err(err));
            }
            RequestKind::Call {
                reply: None,
                method,
                ..
            } => {
                tracing::warn!(grain = %self.target, ?method, cause = %err, "one-way call failed");
            }
            RequestKind::Timer { name, .. } => {
                tracing::debug!(grain = %self.target, timer = %name, cause = %err, "timer tick dropped");
            }
        }
    }
}

/// The envelope of an outgoing call: what crosses silos.
pub(crate) fn envelope_of(
    call: OutgoingCall,
    timeout: std::time::Duration,
    one_way: bool,
) -> Result<Envelope, CallError> {
    Ok(Envelope {
        args: call.args.into_bytes(call.method.name)?,
        target: call.target,
        method: call.method.id,
        method_name: call.method.name.to_owned(),
        timeout,
        chain: call.chain,
        one_way,
        forwards: 0,
    })
}

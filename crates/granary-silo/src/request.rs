//! A call or timer tick on its way to an activation.

use std::borrow::Cow;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use granary_core::{CallChain, CallError, Envelope, GrainId, MethodId, OutgoingCall, Payload};

/// What waits for a call's reply, on a channel.
pub(crate) type ReplyRx = oneshot::Receiver<Result<Payload, CallError>>;

/// Where a call's reply goes.
#[derive(Debug)]
pub(crate) enum ReplyTx {
    /// Into a channel the caller waits on.
    Channel(oneshot::Sender<Result<Payload, CallError>>),
    /// Back to a caller that routes the request to run its turn itself: the reply is the
    /// output of that [`InlineTurn`](crate::activation::InlineTurn), and needs no channel. A
    /// request that is not admitted at once gets a channel first ([`Request::channel`]): only
    /// the router and the activation's admission ever hold a request with this reply.
    Inline,
}

impl ReplyTx {
    /// Sends the reply; hands it back if nobody waits for it any more.
    pub(crate) fn send(
        self,
        result: Result<Payload, CallError>,
    ) -> Result<(), Result<Payload, CallError>> {
        match self {
            Self::Channel(tx) => tx.send(result),
            Self::Inline => {
                debug_assert!(false, "an inline reply is the turn's output, never sent");
                Err(result)
            }
        }
    }

    /// Whether the caller gave up waiting.
    pub(crate) fn is_closed(&self) -> bool {
        match self {
            Self::Channel(tx) => tx.is_closed(),
            Self::Inline => false,
        }
    }
}

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
    /// Gives an [inline](ReplyTx::Inline) reply a channel, for a request that is queued,
    /// forwarded or failed instead of run by its caller; returns the channel's receiving end,
    /// for the caller to wait on. `None` (nothing changed) for any other request.
    pub(crate) fn channel(&mut self) -> Option<ReplyRx> {
        match &mut self.kind {
            RequestKind::Call {
                reply: Some(reply @ ReplyTx::Inline),
                ..
            } => {
                let (tx, rx) = oneshot::channel();
                *reply = ReplyTx::Channel(tx);
                Some(rx)
            }
            _ => None,
        }
    }

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

/// A call on its way to another silo, or arrived from one: what crosses silos (written with
/// the layout of [`Envelope`], see `cluster::wire`).
#[derive(Debug)]
pub(crate) struct RemoteCall {
    /// The grain being called.
    pub(crate) target: GrainId,
    /// The method being called.
    pub(crate) method: MethodId,
    /// The method's name, for errors and traces: static when the grain type is known here.
    pub(crate) method_name: Cow<'static, str>,
    /// The encoded argument tuple.
    pub(crate) args: Vec<u8>,
    /// Time left until the caller's deadline.
    pub(crate) timeout: Duration,
    /// The logical call chain.
    pub(crate) chain: CallChain,
    /// Whether the caller expects no reply.
    pub(crate) one_way: bool,
    /// How many times silos have forwarded the call.
    pub(crate) forwards: u32,
}

impl From<Envelope> for RemoteCall {
    fn from(envelope: Envelope) -> Self {
        Self {
            target: envelope.target,
            method: envelope.method,
            method_name: Cow::Owned(envelope.method_name),
            args: envelope.args,
            timeout: envelope.timeout,
            chain: envelope.chain,
            one_way: envelope.one_way,
            forwards: envelope.forwards,
        }
    }
}

/// The outgoing call `call`, to send to another silo.
pub(crate) fn remote_call(
    call: OutgoingCall,
    timeout: Duration,
    one_way: bool,
) -> Result<RemoteCall, CallError> {
    Ok(RemoteCall {
        args: call.args.into_bytes(call.method.name)?,
        target: call.target,
        method: call.method.id,
        method_name: Cow::Borrowed(call.method.name),
        timeout,
        chain: call.chain,
        one_way,
        forwards: 0,
    })
}

/// The envelope of an outgoing call (the wire path of `wire_local_calls`).
pub(crate) fn envelope_of(
    call: OutgoingCall,
    timeout: Duration,
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

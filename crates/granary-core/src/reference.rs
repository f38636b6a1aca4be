//! Grain references: [`GrainRef`] (untyped, what travels) and the typed references the macro
//! generates around it, plus the [`Invoker`] a reference calls through.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::CallError;
use crate::grain::{GrainInterface, MethodInfo};
use crate::id::{GrainId, GrainKey};
use crate::message::{CallChain, Payload};
use crate::request_context::RequestContext;
use crate::turn;

/// One outgoing call, as a reference hands it to its [`Invoker`].
#[derive(Debug)]
pub struct OutgoingCall {
    /// The grain being called.
    pub target: GrainId,
    /// The method being called.
    pub method: &'static MethodInfo,
    /// The argument tuple.
    pub args: Payload,
    /// The chain the call belongs to.
    pub chain: CallChain,
    /// The caller's timeout for this call, if it overrides the runtime's default.
    pub timeout: Option<Duration>,
}

/// What a reference calls through: the silo, an external client or the test kit.
pub trait Invoker: Send + Sync + 'static {
    /// Delivers a call and resolves to its reply.
    fn invoke(&self, call: OutgoingCall) -> BoxFuture<'static, Result<Payload, CallError>>;

    /// Delivers a one-way call; resolves once the call is accepted for delivery.
    fn send(&self, call: OutgoingCall) -> BoxFuture<'static, Result<(), CallError>>;

    /// As [`invoke`](Self::invoke), but a call that completes while it is made (a turn in
    /// this process that waits on nothing) answers at once, with no future to allocate. What
    /// references call; the default hands [`invoke`](Self::invoke)'s future back.
    fn invoke_now(&self, call: OutgoingCall) -> Invoked<Payload> {
        Invoked::Pending(self.invoke(call))
    }

    /// As [`send`](Self::send), but a call accepted for delivery while it is made answers at
    /// once, with no future to allocate. What references call; the default hands
    /// [`send`](Self::send)'s future back.
    fn send_now(&self, call: OutgoingCall) -> Invoked<()> {
        Invoked::Pending(self.send(call))
    }
}

/// A call's reply, when the call completed while it was made, or the future that resolves to
/// it (see [`Invoker::invoke_now`] and [`Invoker::send_now`]).
pub enum Invoked<T> {
    /// The call completed at once.
    Ready(Result<T, CallError>),
    /// The call is under way; the future resolves to its reply.
    Pending(BoxFuture<'static, Result<T, CallError>>),
}

impl<T: fmt::Debug> fmt::Debug for Invoked<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ready(reply) => f.debug_tuple("Ready").field(reply).finish(),
            Self::Pending(_) => f.write_str("Pending(..)"),
        }
    }
}

/// Per-reference call options.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallOptions {
    /// Overrides the runtime's default call timeout.
    pub timeout: Option<Duration>,
}

/// An untyped grain reference: a grain id plus the runtime to call it through.
///
/// Cheap to clone, `Send + Sync`. It serializes as its grain id only; deserialized inside a
/// silo (as an argument, say) it binds to that silo. Typed references (`PlayerRef`) wrap it.
///
/// Making a reference never fails. A reference whose key is longer than
/// [`MAX_KEY_LEN`](crate::MAX_KEY_LEN) carries that fact: every call through it fails at once
/// with [`CallError::InvalidKey`], before anything is sent or activated.
#[derive(Clone)]
pub struct GrainRef {
    id: GrainId,
    invoker: Option<Arc<dyn Invoker>>,
    options: CallOptions,
    /// Set on the context of every call made through the reference.
    context: RequestContext,
}

impl GrainRef {
    /// A reference to `id` that calls through `invoker`.
    #[must_use]
    pub fn new(id: GrainId, invoker: Arc<dyn Invoker>) -> Self {
        Self {
            id,
            invoker: Some(invoker),
            options: CallOptions::default(),
            context: RequestContext::new(),
        }
    }

    /// A reference that is bound to no runtime; calling it fails with [`CallError::Unbound`].
    #[must_use]
    pub fn unbound(id: GrainId) -> Self {
        Self {
            id,
            invoker: None,
            options: CallOptions::default(),
            context: RequestContext::new(),
        }
    }

    /// The grain this reference points at.
    #[must_use]
    pub fn id(&self) -> &GrainId {
        &self.id
    }

    /// The same reference with another call timeout.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.options.timeout = Some(timeout);
        self
    }

    /// The same reference with `key` set to `value` in the request context of the calls made
    /// through it (over the context the caller already has: a turn's incoming context, or
    /// the client's). Bounds are checked when a call is made: see [`RequestContext`].
    #[must_use]
    pub fn with_context(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.context.insert(key, value);
        self
    }

    /// The same reference with the entries of `context` set on the request context of the
    /// calls made through it (see [`with_context`](Self::with_context)).
    #[must_use]
    pub fn with_request_context(mut self, context: &RequestContext) -> Self {
        self.context = self.context.merged(context);
        self
    }

    /// The request context this reference sets on its calls (empty unless set).
    #[must_use]
    pub fn request_context(&self) -> &RequestContext {
        &self.context
    }

    /// Calls `method` with `args` and decodes the reply. Used by generated references.
    ///
    /// # Errors
    /// Whatever the call produced; see [`CallError`]. [`CallError::InvalidKey`] at once when
    /// the reference's key is too long; [`CallError::ContextTooLarge`] at once when the call's
    /// request context is over its bounds.
    ///
    /// # Cancel safety
    /// Dropping the future abandons the wait, not the call: the grain may still run it.
    pub async fn call<R: DeserializeOwned + 'static>(
        &self,
        method: &'static MethodInfo,
        args: impl Serialize + Send + 'static,
    ) -> Result<R, CallError> {
        let invoker = self.invoker()?;
        let chain = turn::chain_for_outgoing_call().with_context(&self.context);
        chain.context.check()?;
        let call = self.outgoing(method, Payload::local(args), chain);
        let reply = match invoker.invoke_now(call) {
            Invoked::Ready(reply) => {
                // A loop of such calls touches no tokio resource: spend cooperative budget so
                // that it still yields to the other tasks of its worker now and then.
                tokio::task::coop::consume_budget().await;
                reply
            }
            Invoked::Pending(reply) => reply.await,
        }?;
        reply.take(method.name)
    }

    /// Sends a one-way call to `method`. Used by generated references.
    ///
    /// A one-way call starts a call chain of its own: nobody waits for it, so it cannot
    /// deadlock, and it waits its turn even at a grain whose turn is waiting on the sender.
    ///
    /// # Errors
    /// Only delivery failures: the method's own outcome is not reported.
    /// [`CallError::InvalidKey`] at once when the reference's key is too long;
    /// [`CallError::ContextTooLarge`] at once when the call's request context is over its
    /// bounds.
    pub async fn send(
        &self,
        method: &'static MethodInfo,
        args: impl Serialize + Send + 'static,
    ) -> Result<(), CallError> {
        let invoker = self.invoker()?;
        let chain = turn::chain_for_one_way_call().with_context(&self.context);
        chain.context.check()?;
        let call = self.outgoing(method, Payload::local(args), chain);
        match invoker.send_now(call) {
            Invoked::Ready(accepted) => accepted,
            Invoked::Pending(accepted) => accepted.await,
        }
    }

    /// The invoker to call through, once the key is known to be acceptable.
    fn invoker(&self) -> Result<&Arc<dyn Invoker>, CallError> {
        self.id.check_key()?;
        self.invoker.as_ref().ok_or_else(|| CallError::Unbound {
            grain: self.id.clone(),
        })
    }

    fn outgoing(
        &self,
        method: &'static MethodInfo,
        args: Payload,
        chain: CallChain,
    ) -> OutgoingCall {
        OutgoingCall {
            target: self.id.clone(),
            method,
            args,
            chain,
            timeout: self.options.timeout,
        }
    }
}

impl fmt::Debug for GrainRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrainRef")
            .field("id", &self.id)
            .field("bound", &self.invoker.is_some())
            .field("context", &self.context)
            .finish()
    }
}

impl PartialEq for GrainRef {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}
impl Eq for GrainRef {}

impl Serialize for GrainRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.id.serialize(s)
    }
}

impl<'de> Deserialize<'de> for GrainRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let id = GrainId::deserialize(d)?;
        Ok(match turn::current_invoker() {
            Some(invoker) => Self::new(id, invoker),
            None => Self::unbound(id),
        })
    }
}

/// A typed grain reference, as generated by `#[grain]` (`PlayerRef` for `PlayerGrain`) or
/// `#[grain_interface]` (`PlayerRef` for the trait `Player`).
pub trait TypedRef: From<GrainRef> + Clone + Send + Sync + fmt::Debug + 'static {
    /// The untyped reference inside.
    fn grain_ref(&self) -> &GrainRef;
}

/// Builds the typed reference of grain type (or interface) `G` for `key`.
#[must_use]
pub fn typed_ref<G: GrainInterface>(key: impl Into<GrainKey>, invoker: Arc<dyn Invoker>) -> G::Ref {
    G::Ref::from(GrainRef::new(GrainId::new(G::TYPE_NAME, key), invoker))
}

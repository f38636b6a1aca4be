//! What a call carries: the method id, the arguments or reply ([`Payload`]), the logical call
//! chain ([`CallChain`]) and, on the wire, the [`Envelope`].

use std::any::Any;
use std::fmt;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec::{self, CodecError};
use crate::error::CallError;
use crate::id::GrainId;
use crate::request_context::RequestContext;

/// A method's stable id within its grain type: the 32-bit FNV-1a hash of the method's name.
///
/// Ids are derived from names, not positions, so reordering or adding methods keeps the ids of
/// the others; the `#[grain]` macro refuses two methods whose ids collide.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MethodId(pub u32);

impl MethodId {
    /// The id of the method called `name`.
    #[must_use]
    pub const fn of(name: &str) -> Self {
        let bytes = name.as_bytes();
        let mut hash: u32 = 0x811c_9dc5;
        let mut i = 0;
        while i < bytes.len() {
            hash ^= bytes[i] as u32;
            hash = hash.wrapping_mul(0x0100_0193);
            i += 1;
        }
        Self(hash)
    }
}

impl fmt::Debug for MethodId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MethodId({:#010x})", self.0)
    }
}

/// A value that can travel as a call's arguments or reply: any `Serialize + Send` type.
/// Kept as a Rust value on the local path and encoded only when it leaves the process.
pub trait Message: Any + Send {
    /// Encodes the value with the wire codec.
    ///
    /// # Errors
    /// See [`codec::encode`].
    fn encode(&self) -> Result<Vec<u8>, CodecError>;
    /// Unboxes to `Any` for a downcast on the local path.
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send>;
}

impl<T: Serialize + Send + 'static> Message for T {
    fn encode(&self) -> Result<Vec<u8>, CodecError> {
        codec::encode(self)
    }
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }
}

/// Arguments or a reply: a Rust value on the local path, bytes when it came over the wire.
pub enum Payload {
    /// A value passed by move inside one process.
    Local(Box<dyn Message>),
    /// The wire encoding of a value.
    Encoded(Vec<u8>),
}

impl Payload {
    /// Wraps a value for the local path.
    #[must_use]
    pub fn local<T: Serialize + Send + 'static>(value: T) -> Self {
        Self::Local(Box::new(value))
    }

    /// A payload of the same kind as `self` holding `value`: encoded if `self` arrived encoded,
    /// so that a reply travels back the way its request came.
    ///
    /// # Errors
    /// [`CallError::Codec`] if the value cannot be encoded.
    pub fn reply_like<T: Serialize + Send + 'static>(
        encoded: bool,
        value: T,
    ) -> Result<Self, CallError> {
        if encoded {
            codec::encode(&value)
                .map(Self::Encoded)
                .map_err(|e| CallError::codec("reply", &e))
        } else {
            Ok(Self::local(value))
        }
    }

    /// Whether the payload arrived as bytes.
    #[must_use]
    pub fn is_encoded(&self) -> bool {
        matches!(self, Self::Encoded(_))
    }

    /// Extracts the value: a downcast on the local path, a bounded decode otherwise.
    ///
    /// # Errors
    /// [`CallError::Codec`] if the bytes do not decode as `T` or the local value is of another
    /// type (caller and callee disagree on the method's signature).
    pub fn take<T: DeserializeOwned + 'static>(self, what: &str) -> Result<T, CallError> {
        match self {
            Self::Local(value) => {
                value
                    .into_any()
                    .downcast::<T>()
                    .map(|b| *b)
                    .map_err(|_| CallError::Codec {
                        what: what.to_owned(),
                        reason: format!("local value is not a {}", std::any::type_name::<T>()),
                    })
            }
            Self::Encoded(bytes) => codec::decode(&bytes).map_err(|e| CallError::codec(what, &e)),
        }
    }

    /// The wire form of the payload.
    ///
    /// # Errors
    /// [`CallError::Codec`] if the value cannot be encoded or is too large.
    pub fn into_bytes(self, what: &str) -> Result<Vec<u8>, CallError> {
        match self {
            Self::Local(value) => value.encode().map_err(|e| CallError::codec(what, &e)),
            Self::Encoded(bytes) => Ok(bytes),
        }
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local(_) => f.write_str("Payload::Local(..)"),
            Self::Encoded(b) => write!(f, "Payload::Encoded({} bytes)", b.len()),
        }
    }
}

/// The id of one logical call chain: a call from outside any grain starts a chain, and every
/// call a turn makes continues it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChainId(pub u128);

impl ChainId {
    /// A fresh chain id: a random 64-bit prefix per thread and a per-thread counter, so that a
    /// new chain costs no clock read, lock or shared counter.
    #[must_use]
    pub fn new() -> Self {
        thread_local! {
            static NEXT: std::cell::Cell<(u64, u64)> = std::cell::Cell::new((thread_prefix(), 0));
        }
        NEXT.with(|next| {
            let (prefix, n) = next.get();
            next.set((prefix, n.wrapping_add(1)));
            Self((u128::from(prefix) << 64) | u128::from(n))
        })
    }
}

/// 64 random bits (from a UUID v7's random part) to tell threads and processes apart.
fn thread_prefix() -> u64 {
    let bits = uuid::Uuid::now_v7().as_u128();
    // The low 62 bits of a v7 UUID are random; fold the timestamp in as well.
    (bits as u64) ^ ((bits >> 64) as u64).rotate_left(17)
}

impl Default for ChainId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChainId({:032x})", self.0)
    }
}

/// The logical call chain a call belongs to: its id and the grains whose turns are waiting on
/// it, outermost first. Used for call-chain reentrancy and for failing cycles fast.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallChain {
    /// The chain's id.
    pub id: ChainId,
    /// The grains whose turns wait on this call, outermost first.
    pub grains: Vec<GrainId>,
    /// The trace the call belongs to: the same across every silo the chain crosses, and in
    /// the events its turns publish.
    pub trace: TraceId,
    /// The request context the chain carries (inherited by every call its turns make,
    /// one-way calls included); empty unless a client, a grain or a filter set some.
    pub context: RequestContext,
}

/// The id of one logical operation across calls, silos and events (a W3C trace id: 16 bytes,
/// written as 32 hex digits).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TraceId(pub u128);

impl TraceId {
    /// A fresh trace id.
    #[must_use]
    pub fn new() -> Self {
        Self(uuid::Uuid::new_v4().as_u128())
    }
}

impl Default for TraceId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({self})")
    }
}

impl CallChain {
    /// A new chain, in a new trace, for a call made from outside any grain.
    #[must_use]
    pub fn root() -> Self {
        Self::root_in(TraceId::new())
    }

    /// A new chain in an existing trace (a one-way call made by a turn: a chain of its own, so
    /// that it can neither deadlock nor reenter, in the trace of the turn that made it).
    #[must_use]
    pub fn root_in(trace: TraceId) -> Self {
        Self {
            id: ChainId::new(),
            grains: Vec::new(),
            trace,
            context: RequestContext::new(),
        }
    }

    /// This chain with `context` set on its context (the entries of `context` win). An empty
    /// `context` costs nothing.
    #[must_use]
    pub fn with_context(mut self, context: &RequestContext) -> Self {
        if !context.is_empty() {
            self.context = self.context.merged(context);
        }
        self
    }

    /// The chain of a call made by a turn of `caller` that runs on this chain.
    #[must_use]
    pub fn extended(&self, caller: &GrainId) -> Self {
        let mut grains = Vec::with_capacity(self.grains.len() + 1);
        grains.extend_from_slice(&self.grains);
        grains.push(caller.clone());
        Self {
            id: self.id,
            grains,
            trace: self.trace,
            context: self.context.clone(),
        }
    }

    /// Whether `grain` has a turn waiting on this chain.
    #[must_use]
    pub fn contains(&self, grain: &GrainId) -> bool {
        self.grains.iter().any(|g| g == grain)
    }
}

/// A call in its wire form: what the transport sends and the encoded dispatch path decodes.
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope {
    /// The grain being called.
    pub target: GrainId,
    /// The method being called.
    pub method: MethodId,
    /// The method's name, for errors and traces.
    pub method_name: String,
    /// The encoded argument tuple.
    pub args: Vec<u8>,
    /// Time left until the caller's deadline, measured when the envelope was built (clocks of
    /// two machines are not comparable, durations are).
    pub timeout: Duration,
    /// The logical call chain.
    pub chain: CallChain,
    /// Whether the caller expects no reply.
    pub one_way: bool,
    /// How many times silos have forwarded the call (to the grain's current owner); bounded.
    pub forwards: u32,
}

impl Envelope {
    /// Encodes the envelope with the wire codec.
    ///
    /// # Errors
    /// [`CallError::Codec`] when the envelope is over the size limit.
    pub fn encode(&self) -> Result<Vec<u8>, CallError> {
        codec::encode(self).map_err(|e| CallError::codec("call envelope", &e))
    }

    /// Decodes an envelope with the wire codec's size limit.
    ///
    /// # Errors
    /// [`CallError::Codec`] when the bytes are not an envelope; [`CallError::InvalidKey`] when
    /// its target's key is longer than [`MAX_KEY_LEN`](crate::MAX_KEY_LEN).
    pub fn decode(bytes: &[u8]) -> Result<Self, CallError> {
        let envelope: Self =
            codec::decode(bytes).map_err(|e| CallError::codec("call envelope", &e))?;
        envelope.target.check_key()?;
        Ok(envelope)
    }
}

//! What silos (and clients) say to each other over the transport: the messages, the call and
//! the reply, and how each is written and read.
//!
//! A call is written with the layout of [`Envelope`] (field for field, so anything that
//! encodes an `Envelope` is understood) and read back borrowed from the frame: the type name,
//! the method name and the arguments are slices of the received bytes, and a call for a
//! registered grain type takes the type's and method's static names, so that no string is
//! allocated. Byte fields are written and read as one slice, not byte by byte.
//!
//! Protocol 3 (transport [`PROTOCOL_VERSION`](granary_transport::PROTOCOL_VERSION)): a reply
//! names the silo that served the call as [`Served`], which is one byte when that is the
//! silo that answered (version 2 sent the silo's id with every reply). Protocol 4: the call
//! chain carries the request context ([`RequestContext`](granary_core::RequestContext): a
//! sequence of key–value pairs, one byte when empty), refused while it is read when it is
//! over its bounds; a call's error may be `CallError::ObserverGone`, and a gateway sends calls
//! for a client's observers to the client over the client's connection (the same `Call`
//! message, answered as a reply).

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::Duration;

use granary_core::{CallChain, CallError, Envelope, GrainId, GrainKey, MethodId, SiloId, codec};
use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize, Serializer};

use crate::request::RemoteCall;

/// What one silo asks another. `C` is the call: [`CallOut`] when writing, [`CallIn`] when
/// reading.
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum ClusterMessage<C> {
    /// A grain call.
    Call(C),
    /// A probe of the silo it names: answered at once with a
    /// [`ProbeReply`](super::ProbeReply). An address may change hands (a silo killed and
    /// restarted on the same port is a new generation there), so the probe names the silo it
    /// is meant for, and only that silo says it is here.
    Ping(SiloId),
    /// A joining silo checks two-way connectivity: if the receiver is `target`, it probes the
    /// asker back at `asker` (and checks it is the silo that asked); answered with one byte,
    /// 1 if it reached it.
    ProbeBack {
        /// The silo the question is meant for.
        target: SiloId,
        /// Where the asker listens.
        asker: SocketAddr,
    },
    /// The active silos and their addresses (clients refresh their gateways with it).
    Members,
    /// The silo's view of the table: answered with a [`MembersView`](super::MembersView)
    /// (clients learn which gateways are dead from it).
    View,
}

/// A message to write.
pub(super) type Outgoing<'a> = ClusterMessage<CallOut<'a>>;
/// A message read, borrowing from the frame.
pub(super) type Incoming<'a> = ClusterMessage<CallIn<'a>>;

/// A call to write: [`Envelope`]'s fields, borrowed from the call being sent.
#[derive(Debug, Serialize)]
pub(super) struct CallOut<'a> {
    target: (&'a str, &'a GrainKey),
    method: MethodId,
    method_name: &'a str,
    #[serde(serialize_with = "as_bytes")]
    args: &'a [u8],
    timeout: Duration,
    chain: &'a CallChain,
    one_way: bool,
    forwards: u32,
}

impl<'a> CallOut<'a> {
    /// The call `call`, to write.
    pub(super) fn of(call: &'a RemoteCall) -> Self {
        Self {
            target: (call.target.type_name(), call.target.key()),
            method: call.method,
            method_name: &call.method_name,
            args: &call.args,
            timeout: call.timeout,
            chain: &call.chain,
            one_way: call.one_way,
            forwards: call.forwards,
        }
    }

    /// The envelope `envelope`, to write.
    pub(super) fn of_envelope(envelope: &'a Envelope) -> Self {
        Self {
            target: (envelope.target.type_name(), envelope.target.key()),
            method: envelope.method,
            method_name: &envelope.method_name,
            args: &envelope.args,
            timeout: envelope.timeout,
            chain: &envelope.chain,
            one_way: envelope.one_way,
            forwards: envelope.forwards,
        }
    }
}

/// A call read: [`Envelope`]'s fields, the strings and arguments borrowed from the frame.
#[derive(Debug, Deserialize)]
pub(super) struct CallIn<'a> {
    #[serde(borrow)]
    target: (&'a str, GrainKey),
    method: MethodId,
    method_name: &'a str,
    args: &'a [u8],
    timeout: Duration,
    chain: CallChain,
    one_way: bool,
    forwards: u32,
}

impl CallIn<'_> {
    /// The call, owned. `names` gives the static type name and method name of a registered
    /// grain type (`None`: not registered here; the names are then copied from the frame).
    pub(super) fn into_call(
        self,
        names: impl FnOnce(&str, MethodId) -> Option<(&'static str, Option<&'static str>)>,
    ) -> RemoteCall {
        let (type_name, key) = self.target;
        let (target, method_name) = match names(type_name, self.method) {
            Some((type_name, method_name)) => {
                (GrainId::new(type_name, key), method_name.map(Cow::Borrowed))
            }
            None => (GrainId::new(type_name.to_owned(), key), None),
        };
        RemoteCall {
            target,
            method: self.method,
            method_name: method_name.unwrap_or_else(|| Cow::Owned(self.method_name.to_owned())),
            args: self.args.to_vec(),
            timeout: self.timeout,
            chain: self.chain,
            one_way: self.one_way,
            forwards: self.forwards,
        }
    }
}

/// Which silo served a call, for the caller's directory cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum Served {
    /// Not known (the call failed before reaching a grain, or the silo does not know).
    Unknown,
    /// The silo that answered: it hosts the grain.
    Responder,
    /// Another silo, to which the answering silo forwarded the call.
    Other(SiloId),
}

/// The answer to a call that crossed silos, as read: the result (its bytes borrowed from the
/// frame) and the silo that served it.
#[derive(Debug, Deserialize)]
pub(super) struct ReplyIn<'a> {
    #[serde(borrow)]
    pub(super) result: Result<&'a [u8], CallError>,
    pub(super) host: Served,
}

impl<'a> ReplyIn<'a> {
    /// Reads a reply.
    ///
    /// # Errors
    /// [`CallError::Codec`] when the bytes are not a reply.
    pub(super) fn decode(bytes: &'a [u8]) -> Result<Self, CallError> {
        codec::decode_borrowed(bytes).map_err(|e| CallError::Codec {
            what: "remote reply".into(),
            reason: e.to_string(),
        })
    }
}

/// Writes the reply of a call: `result` and the silo that served it, in one buffer of the
/// right size. A reply that cannot be encoded (over the size limit) becomes a `Codec` error.
pub(super) fn encode_reply(result: Result<&[u8], &CallError>, host: &Served) -> Vec<u8> {
    let size = result.map_or(64, <[u8]>::len) + 16;
    let mut out = Vec::with_capacity(size);
    match codec::encode_into(&ReplyOut { result, host }, &mut out) {
        Ok(_) => out,
        Err(err) => {
            let fallback = CallError::Codec {
                what: "reply".into(),
                reason: err.to_string(),
            };
            codec::encode(&ReplyOut {
                result: Err(&fallback),
                host,
            })
            .expect("a short error always encodes")
        }
    }
}

/// The reply to write: the layout of [`ReplyIn`], borrowed.
struct ReplyOut<'a> {
    result: Result<&'a [u8], &'a CallError>,
    host: &'a Served,
}

impl Serialize for ReplyOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        /// `Result<bytes, CallError>` as serde writes a `Result`, the bytes as one slice.
        struct Out<'a>(Result<&'a [u8], &'a CallError>);
        impl Serialize for Out<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                match self.0 {
                    Ok(bytes) => s.serialize_newtype_variant("Result", 0, "Ok", &Bytes(bytes)),
                    Err(err) => s.serialize_newtype_variant("Result", 1, "Err", err),
                }
            }
        }
        let mut reply = s.serialize_struct("RemoteReply", 2)?;
        reply.serialize_field("result", &Out(self.result))?;
        reply.serialize_field("host", self.host)?;
        reply.end()
    }
}

/// A byte slice written as one (what `Vec<u8>` and `&[u8]` read back), not element by element.
struct Bytes<'a>(&'a [u8]);

impl Serialize for Bytes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

/// `serialize_with` of a byte slice field: written as one slice.
fn as_bytes<S: Serializer>(bytes: &&[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bytes(bytes)
}

#[cfg(test)]
mod tests;

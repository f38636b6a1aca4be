//! Granary core: the vocabulary every other crate speaks.
//!
//! This crate holds what a grain author and a provider author need and nothing that runs:
//! grain identity ([`GrainId`]), the grain programming model ([`Grain`], [`GrainContext`],
//! [`GrainRef`]), the encodable call envelope ([`Envelope`]), the one flat call error
//! ([`CallError`]) and the provider traits (state store, directory, membership, outbox).
//! It knows nothing about actors engines, Redis or sockets: the silo runtime
//! (`granary-silo`) and the providers depend on it, never the other way round.
//!
//! Grain code is written with the `#[grain]` attribute of `granary-macros`, re-exported by
//! the `granary` facade; see that crate for a runnable example.

mod clock;
pub mod codec;
mod context;
mod deadline;
mod error;
mod event;
mod grain;
mod id;
mod log_limit;
mod message;
mod mock;
mod observer;
pub mod provider;
mod reference;
mod request_context;
pub mod state_codec;
pub mod turn;

pub use clock::{Clock, SystemClock};
pub use context::{ActivationHost, DEFAULT_MAX_EVENT_SIZE, GrainContext, StateGuard};
pub use deadline::deadline_in;
pub use error::{CallError, ReminderError, StorageError};
pub use event::{Event, PublishedEvent};
pub use grain::{
    Grain, GrainInterface, GrainState, IdleAfter, MethodInfo, REMINDER_METHOD, StatelessWorker,
};
pub use id::{
    ActivationId, BuildGrainIdHasher, FnvHasher, GrainId, GrainIdHasher, GrainKey, MAX_KEY_LEN,
    SiloId,
};
pub use log_limit::LogLimit;
pub use message::{CallChain, ChainId, Envelope, Message, MethodId, Payload, TraceId};
pub use mock::{GrainMock, MockKeys, MockResponder, MockScope, MockSink};
pub use observer::{
    Notified, OBSERVER_PREFIX, ObserverAddress, ObserverDispatch, ObserverInterface, ObserverKey,
    ObserverObject, ObserverSet,
};
pub use provider::ReminderTick;
pub use reference::{CallOptions, GrainRef, Invoked, Invoker, OutgoingCall, TypedRef, typed_ref};
pub use request_context::{MAX_CONTEXT_BYTES, MAX_CONTEXT_ENTRIES, RequestContext};

/// The result of a grain call: the method's value, or what went wrong.
pub type Result<T, E = CallError> = std::result::Result<T, E>;

#[doc(hidden)]
pub mod __private {
    //! Items the `#[grain]` macro expands to. Not a public API.
    pub use futures::future::BoxFuture;
    pub use serde;

    pub use crate::grain::declares_flags;
}

//! Granary: Orleans-style virtual actors ("grains") for game servers. The crate documentation
//! below is the project README, whose examples are compiled and run as doc tests.
#![doc = include_str!("../../../README.md")]

pub use granary_core::{
    ActivationId, CallChain, CallError, CallOptions, Clock, Event, Grain, GrainContext, GrainId,
    GrainInterface, GrainKey, GrainMock, GrainRef, GrainState, IdleAfter, MAX_CONTEXT_BYTES,
    MAX_CONTEXT_ENTRIES, MAX_KEY_LEN, MethodId, MethodInfo, Notified, ObserverAddress,
    ObserverInterface, ObserverObject, ObserverSet, PublishedEvent, REMINDER_METHOD, ReminderError,
    ReminderTick, RequestContext, Result, SiloId, StateGuard, StatelessWorker, StorageError,
    SystemClock, TraceId, TypedRef,
};
pub use granary_macros::{grain, grain_interface, observer};
pub use granary_silo::observers::OBSERVER_QUEUE;
pub use granary_silo::{
    CallFilter, CallKind, Client, ClientConfig, ClusterClient, ClusterConfig,
    ConnectError as ClientConnectError, DeactivationReason, FilterCall, NotReady, ObserverHandle,
    Placement, Refusal, ShutdownError, Silo, SiloBuilder, SiloConfig, SiloEvent, SiloEvents,
    SiloHealth, SiloMetrics, StartError, WaitTimeout,
};
pub use granary_silo::{TlsBuilder, TlsConfig, TlsError};

pub mod provider {
    //! Provider traits (where state, events, grain locations and silos are kept) and the
    //! in-memory implementations.
    pub use granary_core::provider::*;
    pub use granary_silo::memory::{MemoryMembership, MemoryStore};
}

pub mod codec {
    //! The wire codec (bincode with a size limit) and the stored-state codec (named MessagePack).
    pub use granary_core::Envelope;
    pub use granary_core::codec::{CodecError, MAX_MESSAGE_BYTES, decode, encode};
    pub use granary_core::state_codec;
}

#[doc(hidden)]
pub mod __private {
    //! What `#[grain]` expands to. Not a public API.
    pub use granary_core as core;
    pub use granary_core::__private::*;
}

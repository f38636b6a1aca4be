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
pub use granary_events::{AppliedEvents, Delivery};
pub use granary_macros::{grain, grain_interface, observer};
pub use granary_silo::Subscription;
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

pub mod subscriptions {
    //! Events to grains: a grain subscribes to an event type, with a key function choosing the
    //! receiving grain, and the event relay delivers each committed event to it, at least once,
    //! in commit order per source grain; the grain applies each once by committing the
    //! event's [`Delivery`] in an [`AppliedEvents`] of its state with its change. See
    //! `docs/writing-grains.md`, "Subscriptions (events to grains)".
    //!
    //! ```
    //! use std::sync::Arc;
    //! use granary::{AppliedEvents, Delivery, Event, GrainContext, GrainKey, Result, Silo};
    //! use granary::{Subscription, grain, provider::MemoryStore};
    //! use serde::{Deserialize, Serialize};
    //!
    //! #[derive(Clone, Serialize, Deserialize)]
    //! pub struct MatchEnded { pub winner: String }
    //! impl Event for MatchEnded { const TYPE_NAME: &'static str = "match.ended"; }
    //!
    //! #[derive(Default)]
    //! pub struct MatchGrain;
    //! #[grain(name = "match", state = ())]
    //! impl MatchGrain {
    //!     pub async fn end(&self, ctx: &GrainContext<Self>, winner: String) -> Result<()> {
    //!         ctx.publish(&MatchEnded { winner }) // commits with the turn
    //!     }
    //! }
    //!
    //! #[derive(Default, Serialize, Deserialize)]
    //! pub struct Board { applied: AppliedEvents, wins: u32 }
    //! #[derive(Default)]
    //! pub struct LeaderboardGrain;
    //! #[grain(name = "leaderboard", state = Board)]
    //! impl LeaderboardGrain {
    //!     pub async fn record(&self, ctx: &GrainContext<Self>, _ended: MatchEnded, at: Delivery) -> Result<()> {
    //!         {
    //!             let mut board = ctx.state();
    //!             if !board.applied.first_time(&at) {
    //!                 return Ok(()); // a redelivery: applied already
    //!             }
    //!             board.wins += 1;
    //!         }
    //!         ctx.write_state().await // the dedupe marker commits with the count
    //!     }
    //!     #[read_only]
    //!     pub async fn wins(&self, ctx: &GrainContext<Self>) -> Result<u32> {
    //!         Ok(ctx.state().wins)
    //!     }
    //! }
    //!
    //! # #[tokio::main(flavor = "current_thread")]
    //! # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    //! let store = Arc::new(MemoryStore::new());
    //! let silo = Silo::builder()
    //!     .storage(store.clone())
    //!     .register::<MatchGrain>()
    //!     .register::<LeaderboardGrain>()
    //!     .subscribe(Subscription::<MatchEnded, LeaderboardGrain>::new(
    //!         |_ended| Ok(GrainKey::from("global")), // which board counts it
    //!         |board, ended, at| async move { board.record(ended, at).await },
    //!     ))
    //!     .start()
    //!     .await?;
    //! // The relay of the silo's outbox shards, with its subscriptions (a silo process does this).
    //! let relay = silo
    //!     .deliver_subscriptions(granary_events::Relay::builder(store).owner(silo.shard_owner()))
    //!     .start();
    //! let client = silo.client();
    //! client.grain::<MatchGrain>(1).end("alice".into()).await?;
    //! client.grain::<MatchGrain>(2).end("bob".into()).await?;
    //! relay.delivered_at_least(2).await; // both applied: the relay acknowledges after the call
    //! assert_eq!(client.grain::<LeaderboardGrain>("global").wins().await?, 2);
    //! relay.stop().await;
    //! silo.shutdown().await?;
    //! # Ok(())
    //! # }
    //! ```
    pub use granary_events::{AppliedEvents, Delivery};
    pub use granary_silo::Subscription;
}

#[doc(hidden)]
pub mod __private {
    //! What `#[grain]` expands to. Not a public API.
    pub use granary_core as core;
    pub use granary_core::__private::*;
}

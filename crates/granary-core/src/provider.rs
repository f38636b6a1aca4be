//! Provider traits: where grain state, events, locations and silos are kept.
//!
//! The silo runtime only talks to these traits. `granary-silo` ships in-memory
//! implementations (unit tests and the zero-setup default); `granary-redis` implements them on
//! Redis. A state write and the events of its turn are one [`Commit`], so a provider can make
//! them atomic.

mod directory;
mod membership;
mod state;

pub use directory::{GrainAddress, GrainDirectory};
pub use membership::{
    Heartbeat, MembershipEntry, MembershipSnapshot, MembershipTable, SiloStatus, Suspicion,
};
pub use state::{
    Claim, Commit, DeadLetter, EventId, Loaded, Outbox, OutboxEntry, OutboxPosition, StateChange,
    StateStore,
};

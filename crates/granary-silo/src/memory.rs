//! In-memory providers: the zero-setup default and the state of unit tests.
//!
//! [`MemoryStore`] is state store, outbox and grain directory in one, because the directory
//! entry is the ownership fence every commit checks. [`MemoryMembership`] is a versioned
//! membership table. Nothing survives the process.

mod membership;
mod store;

pub use membership::MemoryMembership;
pub use store::MemoryStore;

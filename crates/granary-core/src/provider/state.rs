//! The versioned state store and its transactional outbox.

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::error::StorageError;
use crate::event::PublishedEvent;
use crate::id::{ActivationId, GrainId};

/// What a commit does to the stored state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateChange {
    /// Replace the stored state.
    Write(Vec<u8>),
    /// Delete the stored state (the version still advances, so event ids stay unique).
    Clear,
    /// Leave the state as it is; commit only the events.
    Unchanged,
}

/// One atomic commit of a turn: a state change and the events published with it.
///
/// A store applies it only if `expected_version` equals the stored version **and**
/// `activation` still owns the grain; otherwise nothing is written and it returns
/// [`StorageError::Conflict`] or [`StorageError::NotOwner`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// The grain being committed.
    pub grain: GrainId,
    /// The activation committing: the ownership fence.
    pub activation: ActivationId,
    /// The version this activation loaded or last committed.
    pub expected_version: u64,
    /// The state change.
    pub change: StateChange,
    /// The turn's events, committed with the change or not at all.
    pub events: Vec<PublishedEvent>,
}

/// The stable id of a committed event: `(grain, version, index)`. A consumer that has seen an
/// id has seen the event.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EventId {
    /// The grain that published the event.
    pub grain: GrainId,
    /// The version of the commit that carried it.
    pub version: u64,
    /// Its position among that commit's events.
    pub index: u32,
}

/// A committed event waiting in the outbox for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// The event's stable id.
    pub id: EventId,
    /// The event.
    pub event: PublishedEvent,
}

/// Versioned, fenced grain state with a transactional outbox.
pub trait StateStore: Send + Sync + 'static {
    /// Loads the state of `grain` for `activation`, which must own the grain (see
    /// [`GrainDirectory`](crate::provider::GrainDirectory)).
    ///
    /// # Errors
    /// [`StorageError::NotOwner`] if another activation owns the grain,
    /// [`StorageError::Unavailable`] if the backend cannot be reached.
    fn load(
        &self,
        grain: &GrainId,
        activation: ActivationId,
    ) -> BoxFuture<'_, Result<Loaded, StorageError>>;

    /// Applies a commit atomically; returns the new version.
    ///
    /// # Errors
    /// [`StorageError::Conflict`] or [`StorageError::NotOwner`] when the fence fails (nothing
    /// was written), [`StorageError::Unavailable`] when the backend cannot be reached.
    fn commit(&self, commit: Commit) -> BoxFuture<'_, Result<u64, StorageError>>;
}

/// What [`StateStore::load`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// The stored state, if any.
    pub data: Option<Vec<u8>>,
    /// The version to commit against (0 for a grain never committed).
    pub version: u64,
}

/// Read side of the outbox, for the relay that delivers events to queues.
pub trait Outbox: Send + Sync + 'static {
    /// Up to `max` committed events not yet acknowledged, in commit order per grain.
    fn pending(&self, max: usize) -> BoxFuture<'_, Result<Vec<OutboxEntry>, StorageError>>;

    /// Removes delivered events from the outbox.
    fn ack(&self, ids: &[EventId]) -> BoxFuture<'_, Result<(), StorageError>>;
}

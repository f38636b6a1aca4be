//! The versioned state store and its transactional outbox.

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::error::StorageError;
use crate::event::PublishedEvent;
use crate::id::{ActivationId, GrainId};
use crate::provider::GrainAddress;

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
    /// The turn's reminder changes, in order, committed with the change or not at all. A
    /// store without a [`ReminderTable`](crate::provider::ReminderTable) refuses a commit that
    /// carries any with [`StorageError::Malformed`].
    pub reminders: Vec<crate::provider::ReminderChange>,
}

/// The stable id of a committed event: `(origin, grain, version, index)`. A consumer that has
/// seen an id has seen the event.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EventId {
    /// The store the event was committed to: the cluster and the epoch of its stored data
    /// (for Redis `<cluster>.<epoch>`). Two clusters sharing a queue, or one cluster started
    /// afresh on an empty store, never reuse an id.
    pub origin: std::sync::Arc<str>,
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
    /// Where the store keeps it: what [`Outbox::ack`] removes.
    pub position: OutboxPosition,
    /// When it was committed, in milliseconds since the Unix epoch (the store's clock).
    pub committed_ms: u64,
}

/// Where a store keeps an outbox entry: the outbox shard (a store may split its outbox so that
/// one commit touches one shard) and the entry's id in it, opaque to everyone but the store.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OutboxPosition {
    /// The outbox shard.
    pub shard: u32,
    /// The store's id of the entry within the shard.
    pub entry: String,
}

/// Versioned, fenced grain state with a transactional outbox.
///
/// The store also owns each grain's ownership entry (its directory entry, see
/// [`GrainDirectory`](crate::provider::GrainDirectory)): an activation claims the grain and
/// loads its state in one step, and every commit checks that claim.
pub trait StateStore: Send + Sync + 'static {
    /// Claims `address.grain` for `address` and loads its state, atomically: the claim succeeds
    /// if the grain has no owner or its owner equals `replace` (an entry the caller knows to be
    /// dead). On success the state is loaded in the same step; otherwise the current owner is
    /// returned and nothing changes.
    ///
    /// # Errors
    /// [`StorageError::Unavailable`] if the backend cannot be reached,
    /// [`StorageError::DataLost`] if it no longer holds the cluster's data.
    fn claim(
        &self,
        address: &GrainAddress,
        replace: Option<&GrainAddress>,
    ) -> BoxFuture<'_, Result<Claim, StorageError>>;

    /// Applies a commit atomically; returns the new version.
    ///
    /// # Errors
    /// [`StorageError::Conflict`] or [`StorageError::NotOwner`] when the fence fails (nothing
    /// was written), [`StorageError::Unavailable`] when the backend cannot be reached,
    /// [`StorageError::DataLost`] if it no longer holds the cluster's data.
    fn commit(&self, commit: Commit) -> BoxFuture<'_, Result<u64, StorageError>>;

    /// The store's reminder table, if it keeps reminders (the memory and Redis stores do).
    /// Reminder changes are written by [`commit`](Self::commit). The default keeps none.
    fn reminders(&self) -> Option<&dyn crate::provider::ReminderTable> {
        None
    }
}

/// What [`StateStore::claim`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The claim succeeded; the grain's state as stored.
    Won(Loaded),
    /// Another activation owns the grain.
    Owned(GrainAddress),
}

/// A grain's stored state, as [`StateStore::claim`] loaded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// The stored state, if any.
    pub data: Option<Vec<u8>>,
    /// The version to commit against (0 for a grain never committed).
    pub version: u64,
}

/// Read side of the outbox, for the relay that delivers events to queues.
///
/// The outbox is split into shards (one per hash tag in Redis); all events of one grain are in
/// one shard, in commit order, so a relay that owns a shard delivers them in order.
pub trait Outbox: Send + Sync + 'static {
    /// Up to `max` committed events not yet acknowledged, in commit order per grain.
    fn pending(&self, max: usize) -> BoxFuture<'_, Result<Vec<OutboxEntry>, StorageError>>;

    /// The number of shards.
    fn shards(&self) -> u32;

    /// Up to `max` events of `shard` not yet acknowledged, oldest first.
    fn pending_in(
        &self,
        shard: u32,
        max: usize,
    ) -> BoxFuture<'_, Result<Vec<OutboxEntry>, StorageError>>;

    /// Up to `max` events of `shard` not yet acknowledged, oldest first, after the entries
    /// `held`: the shard's oldest pending entries, as an earlier read returned them, which the
    /// caller already holds (a relay reads its next batch while it delivers the one before).
    /// Entries of `held` acknowledged meanwhile are simply not there.
    ///
    /// The default reads [`pending_in`](Self::pending_in) `held.len() + max` entries and
    /// leaves `held` out; a store that can start a read after a given entry reads only what
    /// comes after the last of `held`.
    fn pending_in_after<'a>(
        &'a self,
        shard: u32,
        held: &'a [OutboxPosition],
        max: usize,
    ) -> BoxFuture<'a, Result<Vec<OutboxEntry>, StorageError>> {
        Box::pin(async move {
            let read = self
                .pending_in(shard, held.len().saturating_add(max))
                .await?;
            if held.is_empty() {
                return Ok(read);
            }
            let held: std::collections::HashSet<&OutboxPosition> = held.iter().collect();
            Ok(read
                .into_iter()
                .filter(|e| !held.contains(&e.position))
                .take(max)
                .collect())
        })
    }

    /// Reads several shards at once: per [`ShardRead`], in the same order, what
    /// [`pending_in_after`](Self::pending_in_after) returns for it. A relay reads every shard
    /// it owns this way, so that a read costs one round trip to the store, not one per shard.
    ///
    /// The default reads the shards one after the other; a store that can send several reads
    /// together (Redis: one pipeline) does.
    ///
    /// # Errors
    /// As [`pending_in_after`](Self::pending_in_after); nothing is returned if one read fails.
    fn pending_in_each<'a>(
        &'a self,
        reads: &'a [ShardRead<'a>],
    ) -> BoxFuture<'a, Result<Vec<Vec<OutboxEntry>>, StorageError>> {
        Box::pin(async move {
            let mut each = Vec::with_capacity(reads.len());
            for read in reads {
                each.push(
                    self.pending_in_after(read.shard, read.held, read.max)
                        .await?,
                );
            }
            Ok(each)
        })
    }

    /// Waits until one of `shards` may have new entries, or `timeout` passed. A relay with
    /// nothing to do calls it instead of sleeping, so that a commit is delivered at once. The
    /// default just waits `timeout`.
    fn wait_for_entries<'a>(
        &'a self,
        shards: &'a [u32],
        timeout: std::time::Duration,
    ) -> BoxFuture<'a, ()> {
        let _ = shards;
        Box::pin(tokio::time::sleep(timeout))
    }

    /// Removes delivered entries from the outbox.
    fn ack(&self, entries: &[OutboxPosition]) -> BoxFuture<'_, Result<(), StorageError>>;

    /// Moves outbox entries, each with the reason it cannot be delivered, to their shard's
    /// dead-letter stream: per entry atomically (it is in the outbox or in the dead-letter
    /// stream, never in both or neither). An entry no longer in the outbox is skipped. The
    /// relay calls it for an event its sinks refused too often and for an entry that cannot be
    /// decoded, so that the shard goes on.
    ///
    /// # Errors
    /// [`StorageError::Unavailable`] if the backend cannot be reached (nothing or some of the
    /// entries moved; calling again moves the rest).
    fn dead_letter<'a>(
        &'a self,
        entries: &'a [(OutboxPosition, String)],
    ) -> BoxFuture<'a, Result<(), StorageError>>;

    /// Up to `max` dead letters of `shard`, oldest first.
    ///
    /// # Errors
    /// [`StorageError::Unavailable`] if the backend cannot be reached.
    fn dead_letters(
        &self,
        shard: u32,
        max: usize,
    ) -> BoxFuture<'_, Result<Vec<DeadLetter>, StorageError>>;

    /// Moves dead letters (their [`DeadLetter::position`]) back to the end of their shard's
    /// outbox, each atomically, so that the relay delivers them again with their event ids;
    /// returns how many moved (one no longer in the dead-letter stream is skipped). They go
    /// after the events committed since: a consumer sees a re-driven event after later events
    /// of its grain.
    ///
    /// # Errors
    /// [`StorageError::Unavailable`] if the backend cannot be reached.
    fn redrive<'a>(
        &'a self,
        dead: &'a [OutboxPosition],
    ) -> BoxFuture<'a, Result<usize, StorageError>>;
}

/// One shard's part of an [`Outbox::pending_in_each`] read: up to `max` entries of `shard`
/// after the entries `held` (as for [`Outbox::pending_in_after`]).
#[derive(Debug, Clone, Copy)]
pub struct ShardRead<'a> {
    /// The shard to read.
    pub shard: u32,
    /// The shard's oldest pending entries, which the reader already holds: read past them.
    pub held: &'a [OutboxPosition],
    /// How many entries at most.
    pub max: usize,
}

/// An outbox entry set aside in its shard's dead-letter stream by [`Outbox::dead_letter`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Its shard and its id in the shard's dead-letter stream: what [`Outbox::redrive`] takes.
    pub position: OutboxPosition,
    /// Why it was set aside (which sink refused it and what it said, or why it cannot be
    /// decoded).
    pub reason: String,
    /// When it was set aside, in milliseconds since the Unix epoch (the store's clock).
    pub dead_ms: u64,
    /// The event's id, when the entry could be read.
    pub id: Option<EventId>,
    /// The event's type name, when the entry could be read.
    pub type_name: Option<String>,
}

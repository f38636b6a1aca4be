//! Durable reminders: what a store keeps of them, and the table a silo reads to fire them.
//!
//! A reminder is written only through a grain's fenced [`Commit`](crate::provider::Commit)
//! (its [`ReminderChange`]s ride with the state change and the events), so registering,
//! removing and advancing a reminder are as atomic as the grain's state. The silos read the
//! [`ReminderTable`] by shard to know what is due.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::error::StorageError;
use crate::id::GrainId;

/// The longest reminder name, in bytes.
pub const MAX_REMINDER_NAME_LEN: usize = 128;

/// The shortest reminder period.
pub const MIN_REMINDER_PERIOD: Duration = Duration::from_secs(1);

/// The most reminders one grain may have registered at once.
pub const MAX_REMINDERS_PER_GRAIN: usize = 256;

/// One stored reminder of a grain.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Reminder {
    /// The reminder's name, unique per grain.
    pub name: String,
    /// Its period in milliseconds (at least [`MIN_REMINDER_PERIOD`]).
    pub period_ms: u64,
    /// When it is next due, in milliseconds since the Unix epoch.
    pub next_due_ms: u64,
}

impl Reminder {
    /// Its period.
    #[must_use]
    pub fn period(&self) -> Duration {
        Duration::from_millis(self.period_ms)
    }

    /// When it is next due.
    #[must_use]
    pub fn next_due(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.next_due_ms)
    }
}

/// A change to a grain's reminders, carried by a [`Commit`](crate::provider::Commit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReminderChange {
    /// Registers the reminder, or replaces the one of the same name (period and next due).
    Set(Reminder),
    /// Removes the reminder of this name, if any.
    Remove(String),
}

/// A reminder due at some time, as a silo reads it from its shards.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DueReminder {
    /// The grain to remind.
    pub grain: GrainId,
    /// The reminder's name.
    pub name: String,
    /// When it is due, in milliseconds since the Unix epoch.
    pub due_ms: u64,
}

/// The read side of the reminders a state store keeps.
///
/// The reminders of a grain are kept with the grain (written only by its fenced commits) and
/// indexed per shard by next due time, so that the silo owning a shard reads what is due
/// without a task or a timer per reminder.
pub trait ReminderTable: Send + Sync + 'static {
    /// The number of reminder shards (the same shards as the outbox's).
    fn reminder_shards(&self) -> u32;

    /// The shard `grain`'s reminders are indexed in.
    fn reminder_shard_of(&self, grain: &GrainId) -> u32;

    /// The reminders of `grain`, by name.
    ///
    /// # Errors
    /// [`StorageError::Unavailable`] if the backend cannot be reached,
    /// [`StorageError::Malformed`] if a stored entry cannot be read.
    fn reminders_of<'a>(
        &'a self,
        grain: &'a GrainId,
    ) -> BoxFuture<'a, Result<Vec<Reminder>, StorageError>>;

    /// Up to `max` reminders of `shard` due at or before `until_ms`, earliest first, skipping
    /// the first `offset` of them (for paging through a large window).
    ///
    /// # Errors
    /// [`StorageError::Unavailable`] if the backend cannot be reached,
    /// [`StorageError::Malformed`] if a stored entry cannot be read.
    fn due(
        &self,
        shard: u32,
        until_ms: u64,
        offset: usize,
        max: usize,
    ) -> BoxFuture<'_, Result<Vec<DueReminder>, StorageError>>;
}

/// One firing of a reminder, as the grain's `#[on_reminder]` method receives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReminderTick {
    /// When this tick was due.
    pub due: SystemTime,
    /// When it was delivered to the grain (the silo's clock).
    pub fired_at: SystemTime,
    /// How many whole periods passed after `due` before the tick could be delivered (the
    /// cluster was down, say): those ticks are not delivered one by one, this count reports
    /// them. The next tick is due one period after the last missed one.
    pub missed: u64,
}

/// Milliseconds since the Unix epoch of `time` (0 before the epoch, saturating far after).
#[must_use]
pub fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

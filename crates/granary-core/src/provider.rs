//! Provider traits: where grain state, events, locations and silos are kept.
//!
//! The silo runtime only talks to these traits. `granary-silo` ships in-memory
//! implementations (unit tests and the zero-setup default); `granary-redis` implements them on
//! Redis. A state write and the events of its turn are one [`Commit`], so a provider can make
//! them atomic, and so are the grain's reminder changes ([`ReminderChange`]).

mod directory;
mod membership;
mod reminder;
mod state;

pub use directory::{GrainAddress, GrainDirectory};
pub use membership::{
    Heartbeat, MembershipEntry, MembershipSnapshot, MembershipTable, SiloStatus, Suspicion,
};
pub use reminder::{
    DueReminder, MAX_REMINDER_NAME_LEN, MAX_REMINDERS_PER_GRAIN, MIN_REMINDER_PERIOD, Reminder,
    ReminderChange, ReminderTable, ReminderTick, unix_ms,
};
pub use state::{
    Claim, Commit, DeadLetter, EventId, Loaded, Outbox, OutboxEntry, OutboxPosition, ShardRead,
    StateChange, StateStore,
};

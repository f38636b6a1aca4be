//! The one flat error of a grain call, and the error of the storage providers.
//!
//! Both travel between silos, so both are serializable: a remote failure reaches the caller as
//! the same variant it would have been locally.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec::CodecError;
use crate::id::GrainId;
use crate::state_codec::StateError;

/// Everything that can go wrong with a grain call. Each variant says what happened; see
/// [`CallError::is_retryable`] for the ones worth retrying.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum CallError {
    /// No reply arrived before the call's deadline. The outcome is **unknown**: the method may
    /// have run, may still run, or may never run. Retry only idempotent calls.
    #[error("call {method} on {grain} timed out after {timeout:?}; the outcome is unknown")]
    Timeout {
        /// The grain that was called.
        grain: GrainId,
        /// The method's name.
        method: String,
        /// The deadline the call had.
        timeout: Duration,
    },
    /// The method panicked. Its turn was abandoned, nothing it had not yet committed was
    /// kept, and the activation was torn down; the next call activates the grain afresh.
    #[error("grain {grain} panicked in {method}: {message}")]
    GrainPanicked {
        /// The grain whose turn panicked.
        grain: GrainId,
        /// The method that panicked.
        method: String,
        /// The panic message.
        message: String,
    },
    /// The grain could not be activated (its state failed to load, or `on_activate` failed).
    /// The call did not run. Fix the cause (see `reason`); the next call tries again.
    #[error("activation of {grain} failed: {reason}")]
    ActivationFailed {
        /// The grain that failed to activate.
        grain: GrainId,
        /// Why.
        reason: String,
    },
    /// The state store rejected a commit because this activation's view is stale (another
    /// activation committed, or this one lost ownership). Nothing was written and the
    /// activation is being deactivated; calling again reloads the current state.
    #[error("storage conflict on {grain}: expected version {expected}, store has moved on")]
    StorageConflict {
        /// The grain whose commit was refused.
        grain: GrainId,
        /// The version the activation had loaded.
        expected: u64,
    },
    /// The state store failed (unreachable, corrupt data, ...). See the source for details.
    #[error("state store failed for {grain}: {source}")]
    Storage {
        /// The grain being loaded or committed.
        grain: GrainId,
        /// The provider's error.
        #[source]
        source: StorageError,
    },
    /// Completing the call would deadlock: the call chain reenters a non-reentrant grain that
    /// is waiting on the chain itself. Mark the grain `reentrant` or restructure the calls.
    #[error("call cycle {}: {grain} is not reentrant", display_chain(chain))]
    Cycle {
        /// The grain that would have been reentered.
        grain: GrainId,
        /// The grains of the chain, outermost first, ending with the reentered grain.
        chain: Vec<GrainId>,
    },
    /// The grain type has no method with this id: caller and callee run different versions of
    /// the grain interface.
    #[error("grain type {grain_type} has no method with id {method:#010x}")]
    UnknownMethod {
        /// The grain type.
        grain_type: String,
        /// The method id that was asked for.
        method: u32,
    },
    /// No grain type with this name is registered on the silo. Register it with
    /// `SiloBuilder::register`.
    #[error("grain type {grain_type} is not registered on this silo")]
    UnknownGrainType {
        /// The type name that was asked for.
        grain_type: String,
    },
    /// Arguments, a reply or an envelope could not be encoded or decoded (version skew between
    /// caller and callee, corrupt bytes or a message over the size limit).
    #[error("codec error in {what}: {reason}")]
    Codec {
        /// What was being encoded or decoded.
        what: String,
        /// What went wrong.
        reason: String,
    },
    /// `ctx.publish` refused an event larger than the silo's `max_event_size` (JSON bytes;
    /// default 1 MiB): queues refuse such messages. Publish a reference to the data instead
    /// (a key or URL of where it is stored), or split it into smaller events; raise
    /// `SiloConfig::max_event_size` only if every queue the event is routed to takes it.
    #[error("event {type_name} of {grain} is {size} bytes; events may be at most {limit}")]
    EventTooLarge {
        /// The publishing grain.
        grain: GrainId,
        /// The event's type name.
        type_name: String,
        /// Its size as JSON, in bytes.
        size: usize,
        /// The cap.
        limit: usize,
    },
    /// The method refused the call (an application-level error returned by grain code).
    #[error("{grain} rejected the call: {reason}")]
    Rejected {
        /// The grain that refused.
        grain: GrainId,
        /// The reason the grain gave.
        reason: String,
    },
    /// The silo is shutting down and admits no new calls. Retry on another silo or later.
    #[error("silo is shutting down")]
    ShuttingDown,
    /// The reference was deserialized outside any silo or client, so it has no runtime to call
    /// through. Obtain references from `Client::grain` or `GrainContext::grain`.
    #[error("grain reference {grain} is not bound to a runtime")]
    Unbound {
        /// The grain the reference points at.
        grain: GrainId,
    },
    /// The silo hosting the grain could not be reached, or its connection broke. With
    /// `outcome_unknown` false the call was never sent (retrying is safe); with it true the
    /// connection broke while the call was in flight, so it may have run.
    #[error("silo {silo} is unavailable: {reason}")]
    SiloUnavailable {
        /// The silo (or its address).
        silo: String,
        /// What failed.
        reason: String,
        /// Whether the call may have run.
        outcome_unknown: bool,
    },
    /// The call could not be delivered after being re-routed `attempts` times (the grain kept
    /// deactivating as calls arrived). Retrying is safe: the method did not run.
    #[error("could not deliver call to {grain} after {attempts} attempts")]
    Unavailable {
        /// The grain that could not be reached.
        grain: GrainId,
        /// How many deliveries were tried.
        attempts: u32,
    },
    /// The silo holds as many activations as it may (`SiloConfig::max_activations`), so it
    /// refused to activate another grain; the grains already active keep working. The call did
    /// not run: retry after a backoff (idle grains are deactivated meanwhile), spread the load
    /// over more silos, or raise the limit if the machine has the memory.
    #[error("silo {silo} refused to activate {grain}: it holds its maximum of {limit} activations")]
    TooManyActivations {
        /// The grain that was not activated.
        grain: GrainId,
        /// The silo that refused.
        silo: String,
        /// The silo's limit.
        limit: usize,
    },
    /// The grain's queue of requests waiting for their turn is full
    /// (`SiloConfig::max_queued_requests`): the grain cannot keep up with its callers. The call
    /// did not run: retry after a backoff, or spread the work over more grains.
    #[error("{grain} refused the call: {limit} requests are already waiting for their turn")]
    QueueFull {
        /// The grain whose queue is full.
        grain: GrainId,
        /// The queue's bound.
        limit: usize,
    },
    /// The grain key is longer than [`MAX_KEY_LEN`](crate::MAX_KEY_LEN) bytes: refused where it
    /// entered (a reference's first call, or a call envelope arriving over the wire), before
    /// anything was stored or activated. Retrying does not help: use a shorter key (a hash of
    /// a long natural key, say).
    #[error("grain key of type {grain_type} is {len} bytes long; keys may have at most {limit}")]
    InvalidKey {
        /// The grain type the key was meant for.
        grain_type: String,
        /// The key's length in bytes.
        len: usize,
        /// The longest key allowed.
        limit: usize,
    },
    /// The method returned its own error type: it is declared `-> Result<T, E>` with a domain
    /// error `E` of the grain's crate (`GuildError`), and `payload` is that error, encoded. The
    /// generated reference decodes it back, so its caller gets the `E` itself; code that holds
    /// a `CallError` reads it with [`domain`](Self::domain). Like `Rejected`, the turn failed:
    /// its uncommitted events were discarded. Not retryable: the same call meets the same
    /// refusal.
    #[error("{grain} failed with a domain error ({type_name})")]
    Domain {
        /// The grain whose method failed.
        grain: GrainId,
        /// The Rust name of the error type, for messages only (not stable across builds).
        type_name: String,
        /// The error, encoded with the wire codec.
        payload: Vec<u8>,
    },
    /// `register_reminder` or `unregister_reminder` was refused (see the source for why):
    /// nothing was registered or removed. Retrying the same request is refused again.
    #[error("reminder {name:?} of {grain} refused: {source}")]
    Reminder {
        /// The grain whose reminder it is.
        grain: GrainId,
        /// The reminder's name (cut to its first 128 bytes, at a character boundary).
        name: String,
        /// Why it was refused.
        #[source]
        source: ReminderError,
    },
    /// No active silo of the cluster hosts this grain type (or has the role the type asks
    /// for), so a new activation has nowhere to go: the call failed at once, without running.
    /// Start a silo that registers the type (and has the role), or check the silos' hosted
    /// types and roles (`granary status` lists them). Not retryable as such: retry once such
    /// a silo has joined.
    #[error("no active silo hosts grain type {grain_type}{}", role_suffix(role.as_deref()))]
    NoHost {
        /// The grain type that has no host.
        grain_type: String,
        /// The role the type asks for, if any.
        role: Option<String>,
    },
    /// A stateless worker (`#[grain(stateless_worker)]`) tried something only a grain with a
    /// stored identity can do: write or clear state, publish an event, or use reminders.
    /// Stateless workers write nothing to the store; give the work to an ordinary grain (call
    /// it from the worker) instead. Not retryable: the same call meets the same refusal.
    #[error("{grain} is a stateless worker and cannot {operation}; call an ordinary grain for it")]
    StatelessWorker {
        /// The stateless worker.
        grain: GrainId,
        /// What it tried (`write_state`, `clear_state`, `publish`, `register_reminder`, ...).
        operation: String,
    },
    /// A call filter refused the call (an authorization check, say): the method did not run.
    /// `reason` is the filter's. Not retryable as such: the same call is refused again until
    /// what the filter checks changes (log in, fix the request context).
    #[error("call filter {filter} refused {method} on {grain}: {reason}")]
    Refused {
        /// The grain that was called.
        grain: GrainId,
        /// The method (a timer's name for a timer tick).
        method: String,
        /// The filter's name (`CallFilter::name`).
        filter: String,
        /// Why, as the filter said.
        reason: String,
    },
    /// A call filter panicked while it looked at the call: the method did not run, and only
    /// this call failed (the filter, the grain and the silo carry on). A bug in the filter:
    /// see `message`.
    #[error("call filter {filter} panicked on {method} of {grain}: {message}")]
    FilterPanicked {
        /// The grain that was called.
        grain: GrainId,
        /// The method (a timer's name for a timer tick).
        method: String,
        /// The filter's name (`CallFilter::name`).
        filter: String,
        /// The panic message.
        message: String,
    },
    /// The call's request context is over its bounds
    /// ([`MAX_CONTEXT_ENTRIES`](crate::MAX_CONTEXT_ENTRIES) entries,
    /// [`MAX_CONTEXT_BYTES`](crate::MAX_CONTEXT_BYTES) bytes of keys and values): the call was
    /// not sent. Keep the context to small identifiers (a user id, a region) and pass data as
    /// arguments.
    #[error(
        "request context of {entries} entries and {bytes} bytes is over the limit ({} entries, {} bytes)",
        crate::MAX_CONTEXT_ENTRIES,
        crate::MAX_CONTEXT_BYTES
    )]
    ContextTooLarge {
        /// The entries the context had.
        entries: usize,
        /// The bytes of its keys and values.
        bytes: usize,
    },
    /// The observer the call was for is gone: its client disconnected or dropped the
    /// observer object, or the gateway that held the client's connection no longer knows it.
    /// The call did not run. Drop the reference (an [`ObserverSet`](crate::ObserverSet) does
    /// so on its own); the client subscribes again with a new one.
    #[error("observer {observer} is gone: {reason}")]
    ObserverGone {
        /// The observer's reference id.
        observer: GrainId,
        /// Why it is known to be gone.
        reason: String,
    },
}

/// Why a reminder was refused (in [`CallError::Reminder`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ReminderError {
    /// The period is shorter than the minimum (1 s). Reminders are for durable, coarse
    /// schedules; use a timer (`ctx.set_timer`) for anything faster.
    #[error("period {period:?} is shorter than the minimum {min:?}")]
    PeriodTooShort {
        /// The period asked for.
        period: Duration,
        /// The shortest period allowed.
        min: Duration,
    },
    /// The name is empty or longer than the limit (in bytes). Use a short, stable name.
    #[error("name is {len} bytes long; names must have 1 to {max} bytes")]
    InvalidName {
        /// The name's length in bytes.
        len: usize,
        /// The longest name allowed.
        max: usize,
    },
    /// The grain already has the most reminders it may have; unregister one first, or keep
    /// several schedules in one reminder and tell them apart in the grain's state.
    #[error("the grain already has {limit} reminders, the most it may have")]
    TooMany {
        /// The limit per grain.
        limit: usize,
    },
    /// The first due time or the period is too far in the future to be stored.
    #[error("due time out of range")]
    OutOfRange,
    /// The silo's state store keeps no reminders (it has no reminder table). Use the memory
    /// store or the Redis store, which do.
    #[error("the state store does not support reminders")]
    Unsupported,
}

fn role_suffix(role: Option<&str>) -> String {
    role.map(|r| format!(" with role {r:?}"))
        .unwrap_or_default()
}

fn display_chain(chain: &[GrainId]) -> String {
    chain
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" -> ")
}

impl CallError {
    /// Whether retrying the same call is safe and may succeed: the call certainly did not run
    /// (`ShuttingDown`, `Unavailable`, and the limits `TooManyActivations` and `QueueFull`,
    /// best retried after a backoff) or failed on a stale view that the retry reloads
    /// (`StorageConflict`), or its silo could not be reached before it was sent
    /// (`SiloUnavailable` without `outcome_unknown`). A `Timeout` is not retryable: its outcome
    /// is unknown. Nor is `InvalidKey`: the same key is refused again.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::ShuttingDown
                | Self::Unavailable { .. }
                | Self::TooManyActivations { .. }
                | Self::QueueFull { .. }
                | Self::StorageConflict { .. }
                | Self::SiloUnavailable {
                    outcome_unknown: false,
                    ..
                }
        )
    }

    /// Whether the call may have run although it failed: a `Timeout`, or a
    /// `SiloUnavailable` with `outcome_unknown` (the silo died while the call was in flight).
    /// Retrying such a call is safe only if the method is idempotent.
    #[must_use]
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self,
            Self::Timeout { .. }
                | Self::SiloUnavailable {
                    outcome_unknown: true,
                    ..
                }
        )
    }

    /// Whether the call went to an observer that is gone ([`ObserverGone`](Self::ObserverGone)):
    /// the reference will never work again and should be dropped.
    #[must_use]
    pub fn is_gone(&self) -> bool {
        matches!(self, Self::ObserverGone { .. })
    }

    /// An application-level refusal, for grain code: `return Err(CallError::rejected(ctx.id(), "match is full"))`.
    #[must_use]
    pub fn rejected(grain: &GrainId, reason: impl Into<String>) -> Self {
        Self::Rejected {
            grain: grain.clone(),
            reason: reason.into(),
        }
    }

    /// `error`, a grain method's domain error, as the `CallError` that carries it to the
    /// caller ([`Domain`](Self::Domain)). The code `#[grain]` generates uses it; so does a
    /// test kit reply that stands in for a grain failing with its domain error
    /// (`Err(CallError::domain_error(&id, &GuildError::Full { limit: 50 }))`). An error that
    /// does not encode becomes a [`Codec`](Self::Codec) error.
    #[must_use]
    pub fn domain_error<E: Serialize>(grain: &GrainId, error: &E) -> Self {
        let type_name = std::any::type_name::<E>();
        match crate::codec::encode(error) {
            Ok(payload) => Self::Domain {
                grain: grain.clone(),
                type_name: type_name.to_owned(),
                payload,
            },
            Err(err) => Self::codec(format!("domain error {type_name} of {grain}"), &err),
        }
    }

    /// The domain error of type `E` this error carries, if it is a [`Domain`](Self::Domain)
    /// error that decodes as `E`. The references `#[grain]` generates do this for their
    /// callers; this is for code that holds a `CallError` (a test kit reply, a client that
    /// called through an untyped `GrainRef`).
    #[must_use]
    pub fn domain<E: DeserializeOwned>(&self) -> Option<E> {
        match self {
            Self::Domain { payload, .. } => crate::codec::decode(payload).ok(),
            _ => None,
        }
    }

    /// This error as the caller of a method with domain error `E` sees it: the `E` a
    /// [`Domain`](Self::Domain) error carries, or this error converted with `E::from`. A domain
    /// error that does not decode as `E` (the caller's build does not match the grain's)
    /// becomes a [`Codec`](Self::Codec) error, converted likewise. For the code `#[grain]`
    /// generates.
    #[doc(hidden)]
    #[must_use]
    pub fn into_domain<E: DeserializeOwned + From<CallError>>(self) -> E {
        match self {
            Self::Domain {
                grain,
                type_name,
                payload,
            } => crate::codec::decode(&payload).unwrap_or_else(|err| {
                E::from(Self::codec(
                    format!("domain error {type_name} of {grain}"),
                    &err,
                ))
            }),
            other => E::from(other),
        }
    }

    pub(crate) fn codec(what: impl Into<String>, err: &CodecError) -> Self {
        Self::Codec {
            what: what.into(),
            reason: err.to_string(),
        }
    }
}

/// What went wrong in a storage provider (state store, outbox, directory).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum StorageError {
    /// The commit's expected version or ownership fence did not match: another activation
    /// committed or owns the grain. Nothing was written.
    #[error("version conflict: expected {expected}, found {actual}")]
    Conflict {
        /// The version the writer had loaded.
        expected: u64,
        /// The version in the store (or `expected` when the fence, not the version, failed).
        actual: u64,
    },
    /// The writer's activation no longer owns the grain; another activation has claimed it.
    #[error("activation no longer owns the grain")]
    NotOwner,
    /// The stored state of `grain` could not be read. The stored data was left as it is (never
    /// replaced by default state): fix the data, deploy the grain code that knows its schema
    /// version, or register an upgrade step.
    #[error("stored state of {grain} is unreadable: {problem}")]
    Corrupt {
        /// The grain whose state it is.
        grain: GrainId,
        /// What is wrong with it.
        problem: StateError,
    },
    /// The store no longer holds this cluster's data (it restarted empty, or was flushed): the
    /// cluster epoch recorded at bootstrap is missing or different. Writes and activations are
    /// refused so that no grain is re-created with default state. Restore the data and restart
    /// the silos, or, if losing it was intended, start the cluster again with a new epoch.
    #[error(
        "the store lost this cluster's data ({0}); refusing to activate or write grains. Restore the data and restart the silos, or start the cluster afresh if the loss was intended"
    )]
    DataLost(String),
    /// The caller was fenced out: e.g. a silo declared dead, whose row can never become active
    /// again. A restarted process joins under a new generation.
    #[error("fenced out: {0}")]
    Fenced(String),
    /// The store holds data this build cannot read (an outbox entry or directory entry of an
    /// unknown shape): written by another version, or damaged. It was left as it is.
    #[error("the store holds data this build cannot read: {0}")]
    Malformed(String),
    /// The state could not be serialized for storage.
    #[error("cannot serialize state: {0}")]
    Serialize(String),
    /// The backing service is unreachable or failed; the operation may be retried later.
    #[error("storage backend unavailable: {0}")]
    Unavailable(String),
    /// The commit was applied by the store's primary, but fewer of its replicas than the
    /// store requires confirmed it in time: if the primary fails before they catch up, the
    /// commit may be lost. Its outcome is unknown: the activation is deactivated and the next
    /// call loads what the store holds.
    #[error(
        "the commit was confirmed by {acked} of the {wanted} replicas required within {timeout_ms} ms, and may be lost if the primary fails; check that the replicas are up and in sync"
    )]
    NotReplicated {
        /// Replicas required.
        wanted: u32,
        /// Replicas that confirmed in time.
        acked: u32,
        /// How long the commit waited, in milliseconds.
        timeout_ms: u64,
    },
}

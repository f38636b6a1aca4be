//! [`GrainContext`]: what a grain's methods see of the runtime.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::error::ReminderError;
use crate::error::{CallError, StorageError};
use crate::event::{Event, PublishedEvent};
use crate::grain::{Grain, GrainInterface};
use crate::id::{ActivationId, GrainId, GrainKey};
use crate::provider::{
    Commit, MAX_REMINDER_NAME_LEN, MAX_REMINDERS_PER_GRAIN, MIN_REMINDER_PERIOD, Reminder,
    ReminderChange, StateChange, StateStore,
};
use crate::reference::{Invoker, typed_ref};
use crate::state_codec;

/// A lock on a grain's state, from [`GrainContext::state`].
///
/// The guard is not `Send`, and grain futures must be: holding it across an `.await` is a
/// compile error ("future cannot be sent between threads safely"). Take what you need, drop the
/// guard, then await.
///
/// Changing the state through the guard marks it unsaved until the next
/// [`write_state`](GrainContext::write_state): a turn that fails with unsaved changes ends its
/// activation, so that the next call reloads the committed state instead of building on
/// changes that were never saved.
pub struct StateGuard<'a, S> {
    guard: parking_lot::MutexGuard<'a, S>,
    unsaved: &'a AtomicBool,
}

impl<S> Deref for StateGuard<'_, S> {
    type Target = S;

    fn deref(&self) -> &S {
        &self.guard
    }
}

impl<S> DerefMut for StateGuard<'_, S> {
    fn deref_mut(&mut self) -> &mut S {
        self.unsaved.store(true, Ordering::Relaxed);
        &mut self.guard
    }
}

impl<S: fmt::Debug> fmt::Debug for StateGuard<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.guard, f)
    }
}

/// What hosts an activation: the silo, or the test kit. Grain code never calls it directly.
pub trait ActivationHost: Send + Sync + 'static {
    /// The invoker references created by the grain call through.
    fn invoker(&self) -> Arc<dyn Invoker>;
    /// The state store commits go to.
    fn store(&self) -> &dyn StateStore;
    /// Arms (or re-arms) the activation's timer `name`.
    fn set_timer(
        &self,
        grain: &GrainId,
        activation: ActivationId,
        name: &str,
        due: Duration,
        period: Option<Duration>,
    );
    /// Disarms the activation's timer `name`, if armed.
    fn cancel_timer(&self, grain: &GrainId, activation: ActivationId, name: &str);
    /// Deactivates the activation once its running turns have finished.
    fn deactivate(&self, grain: &GrainId, activation: ActivationId);
    /// A commit of the activation was refused as stale or failed with an unknown outcome:
    /// deactivate it without running `on_deactivate` (its state cannot be trusted), so that the
    /// next call reloads.
    fn storage_conflict(&self, grain: &GrainId, activation: ActivationId);
    /// A commit of `grain` set `reminder` (registered it, changed it or advanced it): the
    /// silo's reminder service may schedule it at once instead of at its next scan. Default:
    /// nothing.
    fn reminder_set(&self, grain: &GrainId, reminder: &Reminder) {
        let _ = (grain, reminder);
    }
    /// The largest event, in bytes of its JSON payload, that
    /// [`GrainContext::publish`] accepts. Default [`DEFAULT_MAX_EVENT_SIZE`].
    fn max_event_size(&self) -> usize {
        DEFAULT_MAX_EVENT_SIZE
    }
    /// The wall-clock time grains see ([`GrainContext::now`]), and what reminder due times are
    /// judged by (the test kit drives it from its virtual clock). Default: the system clock.
    fn now(&self) -> std::time::SystemTime {
        std::time::SystemTime::now()
    }
}

/// The default cap on one event's size at [`GrainContext::publish`]: 1 MiB of JSON. Queues
/// refuse larger messages (SQS takes 256 KiB, Kafka 1 MB by default, NATS 1 MiB), and a relay
/// then sets such an event aside in the dead-letter stream; refusing it at publish tells the
/// grain at once.
pub const DEFAULT_MAX_EVENT_SIZE: usize = 1024 * 1024;

/// The runtime as one activation of grain `G` sees it: its identity, its persisted state, event
/// publishing, references to other grains, timers and deactivation.
///
/// Turns of an activation run one at a time (interleaving only where declared), so the state
/// lock is never contended by other grains; it exists so that the borrow checker, not a
/// convention, keeps a turn from holding state across an `.await`.
pub struct GrainContext<G: Grain> {
    id: GrainId,
    activation: ActivationId,
    state: parking_lot::Mutex<G::State>,
    /// Whether the state changed since it was loaded or last saved.
    unsaved: AtomicBool,
    version: AtomicU64,
    /// What the running turn commits with its next commit: events, and reminder changes.
    pending: parking_lot::Mutex<Pending>,
    commit_lock: tokio::sync::Mutex<()>,
    host: Arc<dyn ActivationHost>,
}

/// What a turn commits with its next commit. One lock for both: the end of every turn asks
/// whether anything is pending.
#[derive(Default)]
struct Pending {
    events: Vec<PublishedEvent>,
    /// Boxed and allocated on first use: most activations never touch a reminder, and each
    /// one carries this context (a million idle activations pay for every byte here).
    reminders: Option<Box<Reminders>>,
}

/// An activation's reminders.
#[derive(Default)]
struct Reminders {
    /// Changes made by the running turn, committed with its next commit.
    changes: Vec<ReminderChange>,
    /// As committed, loaded on first use (this activation is their only writer while it owns
    /// the grain).
    loaded: Option<BTreeMap<String, Reminder>>,
}

impl Pending {
    /// The reminders, allocated if this is their first use.
    fn reminders(&mut self) -> &mut Reminders {
        self.reminders.get_or_insert_with(Box::default)
    }

    /// The committed reminder `name`, if the reminders are loaded and it exists.
    fn loaded_reminder(&self, name: &str) -> Option<&Reminder> {
        self.reminders.as_ref()?.loaded.as_ref()?.get(name)
    }
}

impl<G: Grain> GrainContext<G> {
    /// A context for a freshly loaded activation. For runtimes (silo, test kit), not grain code.
    #[doc(hidden)]
    pub fn new(
        id: GrainId,
        activation: ActivationId,
        state: G::State,
        version: u64,
        host: Arc<dyn ActivationHost>,
    ) -> Self {
        Self {
            id,
            activation,
            state: parking_lot::Mutex::new(state),
            unsaved: AtomicBool::new(false),
            version: AtomicU64::new(version),
            pending: parking_lot::Mutex::new(Pending::default()),
            commit_lock: tokio::sync::Mutex::const_new(()),
            host,
        }
    }

    /// Installs the state loaded from the store. For runtimes, before the first turn.
    #[doc(hidden)]
    pub fn restore(&self, state: G::State, version: u64) {
        *self.state.lock() = state;
        self.unsaved.store(false, Ordering::Relaxed);
        self.version.store(version, Ordering::Release);
    }

    /// Whether the state was changed since it was loaded or last saved. For runtimes: a turn
    /// that fails with unsaved changes ends the activation.
    #[doc(hidden)]
    #[must_use]
    pub fn has_unsaved_changes(&self) -> bool {
        self.unsaved.load(Ordering::Relaxed)
    }

    /// This grain's id.
    #[must_use]
    pub fn id(&self) -> &GrainId {
        &self.id
    }

    /// This grain's key.
    #[must_use]
    pub fn key(&self) -> &GrainKey {
        self.id.key()
    }

    /// This activation's id.
    #[must_use]
    pub fn activation_id(&self) -> ActivationId {
        self.activation
    }

    /// The trace of the running turn: the same for every call of one logical operation, across
    /// silos, and recorded in the events the turn publishes.
    ///
    /// # Panics
    /// Outside a turn of this grain.
    #[must_use]
    pub fn trace_id(&self) -> crate::message::TraceId {
        crate::turn::current_trace().expect("trace_id is called inside a turn")
    }

    /// The request context of the running turn: what the caller (a client, another grain,
    /// an incoming call filter) set on the call chain. Calls this turn makes carry it on,
    /// one-way calls included; add to it for one call with `ctx.grain::<T>(key)
    /// .with_context(..)`. Empty outside a turn, for timer ticks and for reminder ticks.
    #[must_use]
    pub fn request_context(&self) -> crate::RequestContext {
        crate::turn::current_context()
    }

    /// The current wall-clock time: the system clock in a silo (or the [`Clock`](crate::Clock)
    /// given to its builder), the virtual clock in the test kit, which tests move forward.
    ///
    /// This is the grain's clock for game time that passes while it is not active (energy that
    /// refills, a daily reset): store the time with the state, and on activation catch up on
    /// what the time since then is worth. Wall time is not monotonic (clock adjustments, and
    /// the next activation may run on another silo's clock): compute elapsed time with
    /// `ctx.now().duration_since(stored).unwrap_or_default()`, never a panicking subtraction.
    #[must_use]
    pub fn now(&self) -> std::time::SystemTime {
        self.host.now()
    }

    /// The version of the state as last loaded or committed (0: never committed).
    #[must_use]
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// The grain's state, locked for reading and writing. Changes are in memory until
    /// [`write_state`](Self::write_state).
    pub fn state(&self) -> StateGuard<'_, G::State> {
        StateGuard {
            guard: self.state.lock(),
            unsaved: &self.unsaved,
        }
    }

    /// Buffers a domain event. It is committed atomically with the turn's next
    /// [`write_state`](Self::write_state) or [`clear_state`](Self::clear_state); a turn that
    /// succeeds without writing commits its remaining events on their own at its end, and a
    /// turn that fails discards them.
    ///
    /// # Errors
    /// [`CallError::Codec`] if the event cannot be encoded as JSON;
    /// [`CallError::EventTooLarge`] if its JSON is larger than the silo's `max_event_size`
    /// (default [`DEFAULT_MAX_EVENT_SIZE`]). Nothing is buffered then.
    /// [`CallError::StatelessWorker`] from a stateless worker: it has no outbox.
    pub fn publish<E: Event>(&self, event: &E) -> Result<(), CallError> {
        self.refuse_if_stateless("publish")?;
        let event = PublishedEvent::encode(event).map_err(|e| CallError::Codec {
            what: format!("event {}", E::TYPE_NAME),
            reason: e.to_string(),
        })?;
        let limit = self.host.max_event_size();
        if event.payload.len() > limit {
            return Err(CallError::EventTooLarge {
                grain: self.id.clone(),
                type_name: E::TYPE_NAME.to_owned(),
                size: event.payload.len(),
                limit,
            });
        }
        self.pending.lock().events.push(event);
        Ok(())
    }

    /// Persists the current state together with the events published so far, as one atomic
    /// commit conditional on the version this activation loaded and on its ownership.
    ///
    /// # Errors
    /// [`CallError::StorageConflict`] if another activation committed or owns the grain: the
    /// activation is then deactivated and the next call reloads. [`CallError::Storage`] if the
    /// store failed. The turn's buffered events are discarded in both cases.
    /// [`CallError::StatelessWorker`] from a stateless worker, which has no stored state.
    ///
    /// # Cancel safety
    /// Not cancel safe: dropping the future after the store received the commit leaves this
    /// activation's version behind, and its next commit fails with a conflict.
    pub async fn write_state(&self) -> Result<(), CallError> {
        self.refuse_if_stateless("write_state")?;
        let _serial = self.commit_lock.lock().await;
        let data = {
            let state = self.state.lock();
            // Cleared before the commit: a change made while it is in flight (a reentrant
            // turn) marks the state unsaved again.
            self.unsaved.store(false, Ordering::Relaxed);
            state_codec::encode::<G>(&state)
        }
        .map_err(|e| self.storage_error(StorageError::Serialize(e.to_string())));
        let result = match data {
            Ok(data) => self.commit(StateChange::Write(data)).await,
            Err(err) => Err(err),
        };
        if result.is_err() {
            self.unsaved.store(true, Ordering::Relaxed);
        }
        result
    }

    /// Deletes the stored state (with the events published so far, atomically) and resets the
    /// in-memory state to its default.
    ///
    /// # Errors
    /// As [`write_state`](Self::write_state).
    pub async fn clear_state(&self) -> Result<(), CallError> {
        self.refuse_if_stateless("clear_state")?;
        let _serial = self.commit_lock.lock().await;
        self.commit(StateChange::Clear).await?;
        *self.state.lock() = G::State::default();
        self.unsaved.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// Commits events published but not yet committed, with no state change. The runtime calls
    /// this at the end of a successful turn.
    ///
    /// # Errors
    /// As [`write_state`](Self::write_state).
    #[doc(hidden)]
    pub async fn commit_pending_events(&self) -> Result<(), CallError> {
        if !self.has_pending_events() {
            return Ok(());
        }
        let _serial = self.commit_lock.lock().await;
        self.commit(StateChange::Unchanged).await
    }

    /// Whether events were published, or reminders changed, and not committed yet.
    #[doc(hidden)]
    pub fn has_pending_events(&self) -> bool {
        let pending = self.pending.lock();
        !pending.events.is_empty()
            || pending
                .reminders
                .as_ref()
                .is_some_and(|r| !r.changes.is_empty())
    }

    /// Drops events published and reminder changes made but not committed. The runtime calls
    /// this when a turn fails: a reminder registered or removed by a failed turn is not.
    #[doc(hidden)]
    pub fn discard_pending_events(&self) -> usize {
        let mut pending = self.pending.lock();
        if let Some(reminders) = pending.reminders.as_mut() {
            reminders.changes.clear();
        }
        let n = pending.events.len();
        pending.events.clear();
        n
    }

    async fn commit(&self, change: StateChange) -> Result<(), CallError> {
        let (events, reminders) = {
            let mut pending = self.pending.lock();
            let changes = pending
                .reminders
                .as_mut()
                .map(|r| std::mem::take(&mut r.changes))
                .unwrap_or_default();
            (std::mem::take(&mut pending.events), changes)
        };
        let expected_version = self.version();
        let applied = (!reminders.is_empty()).then(|| reminders.clone());
        let commit = Commit {
            grain: self.id.clone(),
            activation: self.activation,
            expected_version,
            change,
            events,
            reminders,
        };
        match self.host.store().commit(commit).await {
            Ok(version) => {
                self.version.store(version, Ordering::Release);
                if let Some(changes) = applied {
                    self.apply_reminder_changes(&changes);
                }
                Ok(())
            }
            Err(StorageError::Conflict { .. } | StorageError::NotOwner) => {
                tracing::warn!(grain = %self.id, expected_version, "storage conflict: deactivating");
                self.host.storage_conflict(&self.id, self.activation);
                Err(CallError::StorageConflict {
                    grain: self.id.clone(),
                    expected: expected_version,
                })
            }
            Err(source @ StorageError::Serialize(_)) => Err(self.storage_error(source)),
            Err(source) => {
                // The outcome is unknown (Redis down, reply lost) or nothing can be committed
                // any more (data lost): the state in memory may hold changes that were never
                // stored. Deactivate, so that the next call starts from what the store holds
                // instead of committing this turn's change later behind its caller's back.
                tracing::warn!(grain = %self.id, cause = %source, "commit failed: deactivating");
                self.host.storage_conflict(&self.id, self.activation);
                Err(self.storage_error(source))
            }
        }
    }

    /// Records committed reminder changes in the loaded view, and tells the host.
    fn apply_reminder_changes(&self, changes: &[ReminderChange]) {
        let mut pending = self.pending.lock();
        let mut loaded = pending.reminders().loaded.as_mut();
        for change in changes {
            match change {
                ReminderChange::Set(reminder) => {
                    self.host.reminder_set(&self.id, reminder);
                    if let Some(map) = loaded.as_mut() {
                        map.insert(reminder.name.clone(), reminder.clone());
                    }
                }
                ReminderChange::Remove(name) => {
                    if let Some(map) = loaded.as_mut() {
                        map.remove(name);
                    }
                }
            }
        }
    }

    /// Loads the grain's committed reminders, once per activation.
    async fn load_reminders(&self) -> Result<(), CallError> {
        if self
            .pending
            .lock()
            .reminders
            .as_ref()
            .is_some_and(|r| r.loaded.is_some())
        {
            return Ok(());
        }
        let table = self
            .host
            .store()
            .reminders()
            .ok_or_else(|| self.reminder_error("", ReminderError::Unsupported))?;
        let stored = table
            .reminders_of(&self.id)
            .await
            .map_err(|e| self.storage_error(e))?;
        let mut pending = self.pending.lock();
        let loaded = &mut pending.reminders().loaded;
        if loaded.is_none() {
            *loaded = Some(stored.into_iter().map(|r| (r.name.clone(), r)).collect());
        }
        Ok(())
    }

    /// The committed reminders with this turn's uncommitted changes applied.
    fn effective_reminders(&self) -> BTreeMap<String, Reminder> {
        let mut pending = self.pending.lock();
        let reminders = pending.reminders();
        let mut map = reminders.loaded.clone().unwrap_or_default();
        for change in &reminders.changes {
            match change {
                ReminderChange::Set(r) => {
                    map.insert(r.name.clone(), r.clone());
                }
                ReminderChange::Remove(name) => {
                    map.remove(name);
                }
            }
        }
        map
    }

    fn reminder_error(&self, name: &str, source: ReminderError) -> CallError {
        let mut end = name.len().min(MAX_REMINDER_NAME_LEN);
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        CallError::Reminder {
            grain: self.id.clone(),
            name: name[..end].to_owned(),
            source,
        }
    }

    /// Registers (or replaces) the durable reminder `name`: the grain's
    /// [`on_reminder`](Grain::on_reminder) method runs `first_due` from now, then every
    /// `period`, whether or not the grain is active at the time, until it is unregistered.
    /// Unlike a timer, a reminder is stored: it survives the activation, silo crashes and
    /// restarts of the whole cluster, and reports the ticks it missed meanwhile.
    ///
    /// The registration commits with the turn: with its next
    /// [`write_state`](Self::write_state) (atomically with the state), or on its own at the
    /// end of a turn that succeeds without writing. A turn that fails registers nothing.
    ///
    /// # Errors
    /// [`CallError::Reminder`] when the period is under 1 s
    /// ([`MIN_REMINDER_PERIOD`]), the name is empty or over [`MAX_REMINDER_NAME_LEN`] bytes,
    /// the grain already has [`MAX_REMINDERS_PER_GRAIN`] reminders, or the store keeps no
    /// reminders; [`CallError::Storage`] if the grain's reminders could not be loaded;
    /// [`CallError::StatelessWorker`] from a stateless worker: it has no stable identity for a
    /// reminder to fire to (use a timer, which lives with one of its activations).
    pub async fn register_reminder(
        &self,
        name: &str,
        first_due: Duration,
        period: Duration,
    ) -> Result<(), CallError> {
        self.refuse_if_stateless("register_reminder")?;
        if name.is_empty() || name.len() > MAX_REMINDER_NAME_LEN {
            return Err(self.reminder_error(
                name,
                ReminderError::InvalidName {
                    len: name.len(),
                    max: MAX_REMINDER_NAME_LEN,
                },
            ));
        }
        if period < MIN_REMINDER_PERIOD {
            return Err(self.reminder_error(
                name,
                ReminderError::PeriodTooShort {
                    period,
                    min: MIN_REMINDER_PERIOD,
                },
            ));
        }
        let period_ms = u64::try_from(period.as_millis())
            .ok()
            .filter(|p| *p < 1 << 52)
            .ok_or_else(|| self.reminder_error(name, ReminderError::OutOfRange))?;
        let next_due_ms = u64::try_from(first_due.as_millis())
            .ok()
            .and_then(|d| d.checked_add(crate::provider::unix_ms(self.host.now())))
            // Scores are doubles in Redis: stay where every millisecond is exact.
            .filter(|d| *d < 1 << 52)
            .ok_or_else(|| self.reminder_error(name, ReminderError::OutOfRange))?;
        self.load_reminders().await?;
        let current = self.effective_reminders();
        if !current.contains_key(name) && current.len() >= MAX_REMINDERS_PER_GRAIN {
            return Err(self.reminder_error(
                name,
                ReminderError::TooMany {
                    limit: MAX_REMINDERS_PER_GRAIN,
                },
            ));
        }
        self.pending
            .lock()
            .reminders()
            .changes
            .push(ReminderChange::Set(Reminder {
                name: name.to_owned(),
                period_ms,
                next_due_ms,
            }));
        Ok(())
    }

    /// Unregisters the reminder `name` (nothing happens if there is none). Like a
    /// registration, the removal commits with the turn, and a turn that fails removes nothing.
    ///
    /// # Errors
    /// [`CallError::Reminder`] if the store keeps no reminders; [`CallError::Storage`] if the
    /// grain's reminders could not be loaded; [`CallError::StatelessWorker`] from a stateless
    /// worker.
    pub async fn unregister_reminder(&self, name: &str) -> Result<(), CallError> {
        self.refuse_if_stateless("unregister_reminder")?;
        self.load_reminders().await?;
        if self.effective_reminders().contains_key(name) {
            self.pending
                .lock()
                .reminders()
                .changes
                .push(ReminderChange::Remove(name.to_owned()));
        }
        Ok(())
    }

    /// The grain's reminders, by name, including this turn's uncommitted changes.
    ///
    /// # Errors
    /// As [`unregister_reminder`](Self::unregister_reminder).
    pub async fn reminders(&self) -> Result<Vec<Reminder>, CallError> {
        self.refuse_if_stateless("read reminders")?;
        self.load_reminders().await?;
        Ok(self.effective_reminders().into_values().collect())
    }

    /// Judges a reminder tick due at `due_ms`: `Ok(Err(next))` when it is not to be delivered
    /// (`next`: the reminder's committed next due, `None` if it is gone), or `Ok(Ok(..))` with
    /// the reminder's name, its tick, and its advance buffered for the turn's commit. For the
    /// runtime: a tick older than the stored next due was delivered already (by this or an
    /// earlier owner of the shard), so each due time is delivered once.
    #[doc(hidden)]
    pub async fn begin_reminder_tick(
        &self,
        name: &str,
        due_ms: u64,
    ) -> Result<Result<crate::provider::ReminderTick, Option<u64>>, CallError> {
        self.load_reminders().await?;
        let Some(stored) = self.pending.lock().loaded_reminder(name).cloned() else {
            return Ok(Err(None));
        };
        if stored.next_due_ms > due_ms {
            return Ok(Err(Some(stored.next_due_ms)));
        }
        let clock = self.host.now();
        let now = crate::provider::unix_ms(clock).max(stored.next_due_ms);
        let period = stored.period_ms.max(1);
        let missed = (now - stored.next_due_ms) / period;
        let next_due_ms = stored
            .next_due_ms
            .saturating_add(missed.saturating_add(1).saturating_mul(period));
        self.pending
            .lock()
            .reminders()
            .changes
            .push(ReminderChange::Set(Reminder {
                next_due_ms,
                ..stored.clone()
            }));
        let at = |ms: u64| std::time::UNIX_EPOCH + Duration::from_millis(ms);
        let due = at(stored.next_due_ms);
        Ok(Ok(crate::provider::ReminderTick {
            due,
            // The clock as read, not cut to the millisecond the due times are kept in.
            fired_at: clock.max(due),
            missed,
        }))
    }

    /// Re-buffers the advance of a tick whose handler failed (its own changes were discarded):
    /// the tick was delivered, so the next one is due after it.
    #[doc(hidden)]
    pub fn keep_reminder_advance(&self, name: &str, tick: &crate::provider::ReminderTick) {
        let Some(stored) = self.pending.lock().loaded_reminder(name).cloned() else {
            return;
        };
        let due = crate::provider::unix_ms(tick.due);
        let next_due_ms = due.saturating_add(
            tick.missed
                .saturating_add(1)
                .saturating_mul(stored.period_ms.max(1)),
        );
        self.pending
            .lock()
            .reminders()
            .changes
            .push(ReminderChange::Set(Reminder {
                next_due_ms,
                ..stored
            }));
    }

    /// The committed next due time of reminder `name` (`None`: no such reminder). For the
    /// runtime, after a tick's turn.
    #[doc(hidden)]
    #[must_use]
    pub fn committed_next_due(&self, name: &str) -> Option<u64> {
        self.pending
            .lock()
            .loaded_reminder(name)
            .map(|r| r.next_due_ms)
    }

    /// Refuses `operation` for a stateless worker, which writes nothing to the store.
    fn refuse_if_stateless(&self, operation: &str) -> Result<(), CallError> {
        if G::STATELESS_WORKER.is_some() {
            return Err(CallError::StatelessWorker {
                grain: self.id.clone(),
                operation: operation.to_owned(),
            });
        }
        Ok(())
    }

    fn storage_error(&self, source: StorageError) -> CallError {
        CallError::Storage {
            grain: self.id.clone(),
            source,
        }
    }

    /// A reference to the grain of type `T` with `key` (`T` a grain type or the reference of a
    /// grain interface, see [`GrainInterface`]); calls made through it from this turn continue
    /// this turn's call chain.
    pub fn grain<T: GrainInterface>(&self, key: impl Into<GrainKey>) -> T::Ref {
        typed_ref::<T>(key, self.host.invoker())
    }

    /// A reference to this grain itself.
    #[must_use]
    pub fn this(&self) -> G::Ref {
        typed_ref::<G>(self.id.key().clone(), self.host.invoker())
    }

    /// Arms the timer `name`: the grain's `#[on_timer]` method runs `due` from now, then every
    /// `period` after the previous run finished (so runs never overlap), as an ordinary turn.
    /// Re-arming an armed timer replaces it. Timers die with the activation. A stateless
    /// worker's timer belongs to the one activation that set it: each of a key's activations
    /// has timers of its own.
    pub fn set_timer(&self, name: &str, due: Duration, period: Option<Duration>) {
        self.host
            .set_timer(&self.id, self.activation, name, due, period);
    }

    /// Disarms the timer `name`.
    pub fn cancel_timer(&self, name: &str) {
        self.host.cancel_timer(&self.id, self.activation, name);
    }

    /// Asks the runtime to deactivate this activation once its running turns are done. The
    /// next call activates the grain again from its stored state.
    pub fn deactivate_on_idle(&self) {
        self.host.deactivate(&self.id, self.activation);
    }
}

impl<G: Grain> fmt::Debug for GrainContext<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrainContext")
            .field("id", &self.id)
            .field("activation", &self.activation)
            .field("version", &self.version())
            .finish_non_exhaustive()
    }
}

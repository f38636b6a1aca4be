//! [`GrainContext`]: what a grain's methods see of the runtime.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::error::{CallError, StorageError};
use crate::event::{Event, PublishedEvent};
use crate::grain::Grain;
use crate::id::{ActivationId, GrainId, GrainKey};
use crate::provider::{Commit, StateChange, StateStore};
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
    /// The largest event, in bytes of its JSON payload, that
    /// [`GrainContext::publish`] accepts. Default [`DEFAULT_MAX_EVENT_SIZE`].
    fn max_event_size(&self) -> usize {
        DEFAULT_MAX_EVENT_SIZE
    }
    /// The wall-clock time grains see ([`GrainContext::now`]). Default: the system clock.
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
    events: parking_lot::Mutex<Vec<PublishedEvent>>,
    commit_lock: tokio::sync::Mutex<()>,
    host: Arc<dyn ActivationHost>,
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
            events: parking_lot::Mutex::new(Vec::new()),
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
    pub fn publish<E: Event>(&self, event: &E) -> Result<(), CallError> {
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
        self.events.lock().push(event);
        Ok(())
    }

    /// Persists the current state together with the events published so far, as one atomic
    /// commit conditional on the version this activation loaded and on its ownership.
    ///
    /// # Errors
    /// [`CallError::StorageConflict`] if another activation committed or owns the grain: the
    /// activation is then deactivated and the next call reloads. [`CallError::Storage`] if the
    /// store failed. The turn's buffered events are discarded in both cases.
    ///
    /// # Cancel safety
    /// Not cancel safe: dropping the future after the store received the commit leaves this
    /// activation's version behind, and its next commit fails with a conflict.
    pub async fn write_state(&self) -> Result<(), CallError> {
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
        if self.events.lock().is_empty() {
            return Ok(());
        }
        let _serial = self.commit_lock.lock().await;
        self.commit(StateChange::Unchanged).await
    }

    /// Whether events were published and not committed yet.
    #[doc(hidden)]
    pub fn has_pending_events(&self) -> bool {
        !self.events.lock().is_empty()
    }

    /// Drops events published but not committed. The runtime calls this when a turn fails.
    #[doc(hidden)]
    pub fn discard_pending_events(&self) -> usize {
        let mut events = self.events.lock();
        let n = events.len();
        events.clear();
        n
    }

    async fn commit(&self, change: StateChange) -> Result<(), CallError> {
        let events = std::mem::take(&mut *self.events.lock());
        let expected_version = self.version();
        let commit = Commit {
            grain: self.id.clone(),
            activation: self.activation,
            expected_version,
            change,
            events,
        };
        match self.host.store().commit(commit).await {
            Ok(version) => {
                self.version.store(version, Ordering::Release);
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

    fn storage_error(&self, source: StorageError) -> CallError {
        CallError::Storage {
            grain: self.id.clone(),
            source,
        }
    }

    /// A reference to the grain of type `T` with `key`; calls made through it from this turn
    /// continue this turn's call chain.
    pub fn grain<T: Grain>(&self, key: impl Into<GrainKey>) -> T::Ref {
        typed_ref::<T>(key, self.host.invoker())
    }

    /// A reference to this grain itself.
    #[must_use]
    pub fn this(&self) -> G::Ref {
        typed_ref::<G>(self.id.key().clone(), self.host.invoker())
    }

    /// Arms the timer `name`: the grain's `#[on_timer]` method runs `due` from now, then every
    /// `period` after the previous run finished (so runs never overlap), as an ordinary turn.
    /// Re-arming an armed timer replaces it. Timers die with the activation.
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

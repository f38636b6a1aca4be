//! [`GrainTest`]: one grain, in memory, on a virtual clock.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use serde::de::DeserializeOwned;

use granary_core::provider::{Claim, GrainAddress, GrainDirectory, StateStore};
use granary_core::turn::{self, TurnKind, TurnOutcome, TurnScope};
use granary_core::{
    ActivationId, CallChain, CallError, ChainId, Event, Grain, GrainContext, GrainId, GrainKey,
    GrainMock, Invoker, ObserverInterface, ObserverObject, OutgoingCall, Payload, PublishedEvent,
    SiloId, StateGuard, StorageError, codec, state_codec, typed_ref,
};
use granary_silo::ObserverHandle;
use granary_silo::admission::{Admission, Class, Scheduler};
use granary_silo::memory::MemoryStore;
use tokio::sync::oneshot;

use crate::host::KitHost;
use crate::mock::Mocks;

/// A call the grain under test made to another grain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedCall {
    /// The grain called.
    pub target: GrainId,
    /// The method called.
    pub method: &'static str,
    /// The encoded argument tuple; see [`RecordedCall::args`].
    pub args: Vec<u8>,
    /// The request context the call carried (the grain's incoming context and what it set
    /// on the reference).
    pub context: granary_core::RequestContext,
}

impl RecordedCall {
    /// Decodes the argument tuple, e.g. `call.args::<(String, u32)>()`.
    ///
    /// # Panics
    /// If the arguments are not an `A` (the test asked for the wrong type).
    #[must_use]
    pub fn args<A: DeserializeOwned>(&self) -> A {
        codec::decode(&self.args)
            .unwrap_or_else(|e| panic!("arguments of {}.{}: {e}", self.target, self.method))
    }
}

struct Cell<G: Grain> {
    grain: G,
    ctx: GrainContext<G>,
    /// The silo's own admission rules (`granary_silo::admission`): read-only turns overlap,
    /// exclusive ones wait, a call back into a waiting chain is reentrant or a cycle.
    admin: Mutex<Scheduler<Waiter>>,
}

/// A queued turn: woken with whether it was admitted as exclusive, and its chain.
type Waiter = (oneshot::Sender<bool>, ChainId);

type Factory<G> = Arc<dyn Fn(&GrainId) -> G + Send + Sync>;
type Slot<G> = Arc<Mutex<Option<Arc<Cell<G>>>>>;

/// Unit-tests one grain of type `G`: activated with in-memory state, called through its typed
/// reference, inspected afterwards. Calls it makes to other grains are recorded and answered
/// from replies the test declares; timers run when the test advances the virtual clock.
///
/// ```
/// # use granary_testkit::GrainTest;
/// # use granary::{grain, GrainContext, Result};
/// # use serde::{Serialize, Deserialize};
/// #[derive(Default, Serialize, Deserialize)]
/// pub struct Count { n: u32 }
/// #[derive(Default)]
/// pub struct CounterGrain;
/// #[grain(name = "counter", state = Count)]
/// impl CounterGrain {
///     pub async fn add(&self, ctx: &GrainContext<Self>, by: u32) -> Result<u32> {
///         let n = { let mut s = ctx.state(); s.n += by; s.n };
///         ctx.write_state().await?;
///         Ok(n)
///     }
/// }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let kit = GrainTest::<CounterGrain>::new("c-1").await?;
/// assert_eq!(kit.reference().add(2).await?, 2);
/// assert_eq!(kit.stored_state().map(|s| s.n), Some(2));
/// # Ok(())
/// # }
/// ```
pub struct GrainTest<G: Grain> {
    id: GrainId,
    host: Arc<KitHost>,
    slot: Slot<G>,
    cell: Arc<Cell<G>>,
    factory: Factory<G>,
}

impl<G: Grain> fmt::Debug for GrainTest<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrainTest")
            .field("grain", &self.id)
            .finish_non_exhaustive()
    }
}

impl<G: Grain + Default> GrainTest<G> {
    /// Activates the grain with `key` from empty state (running `on_activate`).
    ///
    /// # Errors
    /// When `on_activate` fails.
    pub async fn new(key: impl Into<GrainKey>) -> Result<Self, CallError> {
        Self::with_factory(key, None, |_| G::default()).await
    }

    /// Activates the grain with `key` from a stored `state` (as if it had been written before).
    ///
    /// # Errors
    /// When the state does not serialize or `on_activate` fails.
    pub async fn with_state(key: impl Into<GrainKey>, state: &G::State) -> Result<Self, CallError> {
        Self::with_factory(key, Some(state), |_| G::default()).await
    }
}

impl<G: Grain> GrainTest<G> {
    /// Activates the grain with `key`, created by `make`, from `state` if given.
    ///
    /// # Errors
    /// When the state does not serialize or `on_activate` fails.
    pub async fn with_factory(
        key: impl Into<GrainKey>,
        state: Option<&G::State>,
        make: impl Fn(&GrainId) -> G + Send + Sync + 'static,
    ) -> Result<Self, CallError> {
        let id = GrainId::new(G::TYPE_NAME, key);
        let store = Arc::new(MemoryStore::new());
        if let Some(state) = state {
            let bytes = state_codec::encode::<G>(state).map_err(|e| CallError::Storage {
                grain: id.clone(),
                source: StorageError::Serialize(e.to_string()),
            })?;
            store.put_raw(&id, bytes);
        }
        let host = KitHost::new(id.clone(), store);
        let slot: Slot<G> = Arc::new(Mutex::new(None));
        let dispatch_slot = slot.clone();
        let weak_host = Arc::downgrade(&host);
        host.dispatch
            .set(Arc::new(
                move |call: OutgoingCall| -> BoxFuture<'static, Result<Payload, CallError>> {
                    let cell = dispatch_slot.lock().clone();
                    let host = weak_host.upgrade();
                    async move {
                        let (Some(cell), Some(host)) = (cell, host) else {
                            return Err(CallError::Unavailable {
                                grain: call.target,
                                attempts: 1,
                            });
                        };
                        run_call(&cell, &host, call).await
                    }
                    .boxed()
                },
            ))
            .ok()
            .expect("dispatch is set once");
        let factory: Factory<G> = Arc::new(make);
        let cell = activate(&id, &host, &factory).await?;
        *slot.lock() = Some(cell.clone());
        Ok(Self {
            id,
            host,
            slot,
            cell,
            factory,
        })
    }

    /// The grain's id.
    #[must_use]
    pub fn id(&self) -> &GrainId {
        &self.id
    }

    /// The grain's typed reference. Calls through it run as turns of the grain under test, with
    /// arguments and replies encoded as on the wire.
    #[must_use]
    pub fn reference(&self) -> G::Ref {
        let invoker: Arc<dyn Invoker> = self.host.clone();
        typed_ref::<G>(self.id.key().clone(), invoker)
    }

    /// The grain's in-memory state (including changes not written yet).
    pub fn state(&self) -> StateGuard<'_, G::State> {
        self.cell.ctx.state()
    }

    /// The state as last committed to the store, decoded; `None` if never written or cleared.
    ///
    /// # Panics
    /// If the stored bytes do not decode (a bug in the grain's state type).
    #[must_use]
    pub fn stored_state(&self) -> Option<G::State> {
        let (data, _) = self.host.store.stored(&self.id)?;
        data.map(|bytes| state_codec::decode::<G>(&bytes).expect("stored state decodes"))
    }

    /// The version of the last commit (0: none).
    #[must_use]
    pub fn version(&self) -> u64 {
        self.cell.ctx.version()
    }

    /// The in-memory store behind the grain (to seed or inspect raw data).
    #[must_use]
    pub fn store(&self) -> &Arc<MemoryStore> {
        &self.host.store
    }

    /// Every event the grain committed, in commit order.
    #[must_use]
    pub fn published(&self) -> Vec<PublishedEvent> {
        self.host
            .store
            .outbox_entries()
            .into_iter()
            .filter(|e| e.id.grain == self.id)
            .map(|e| e.event)
            .collect()
    }

    /// The committed events of type `E`, decoded.
    ///
    /// # Panics
    /// If a committed event of type `E` does not decode.
    #[must_use]
    pub fn events<E: Event>(&self) -> Vec<E> {
        self.published()
            .iter()
            .filter_map(PublishedEvent::decode::<E>)
            .map(|r| r.expect("event decodes"))
            .collect()
    }

    /// The calls the grain made to other grains so far.
    #[must_use]
    pub fn calls(&self) -> Vec<RecordedCall> {
        self.host.state.lock().calls.clone()
    }

    /// Returns and forgets the calls recorded so far.
    pub fn take_calls(&self) -> Vec<RecordedCall> {
        std::mem::take(&mut self.host.state.lock().calls)
    }

    /// Serves `object` (made by the generated `MatchWatcherRef::object(..)`) as a client
    /// would, until the handle is dropped: pass [`ObserverHandle::reference`] to the grain
    /// (a subscribe call), and the grain's calls to it reach `object`, one-way ones through
    /// its bounded queue. After the handle is dropped, they fail with `ObserverGone`. Calls to
    /// other observer references go to the mocks (`mock::<MatchWatcherRef>()`).
    pub fn observe<I: ObserverInterface>(&self, object: ObserverObject<I>) -> ObserverHandle<I> {
        let client = self.host.observers.client_name();
        self.host
            .observers
            .register(&client, object, self.host.clone())
    }

    /// The typed mock of grain type `T`, to declare how the calls the grain under test makes
    /// to `T` grains are answered: by method, with the method's own argument and result types,
    /// for one key or for any key. `T` is a grain type (`GuildGrain`) or a grain interface's
    /// reference (`GuildRef` from `#[grain_interface] trait Guild`), so a test needs only the
    /// interface of the grains it mocks. Calls with no reply declared fail with
    /// `CallError::Rejected` (and are still recorded); a one-way call with none succeeds.
    ///
    /// ```
    /// # use granary_testkit::GrainTest;
    /// # use granary::{grain, CallError, GrainContext, Result};
    /// #[derive(Default)]
    /// pub struct GuildGrain;
    /// #[grain(name = "guild", state = ())]
    /// impl GuildGrain {
    ///     pub async fn admit(&self, ctx: &GrainContext<Self>, player: String) -> Result<bool> {
    ///         # let _ = (ctx, player);
    ///         Ok(true)
    ///     }
    /// }
    /// #[derive(Default)]
    /// pub struct PlayerGrain;
    /// #[grain(name = "player", state = ())]
    /// impl PlayerGrain {
    ///     pub async fn join(&self, ctx: &GrainContext<Self>, guild: String) -> Result<bool> {
    ///         ctx.grain::<GuildGrain>(guild).admit(ctx.id().key().to_string()).await
    ///     }
    /// }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let kit = GrainTest::<PlayerGrain>::new("alice").await?;
    /// let guilds = kit.mock::<GuildGrain>();
    /// guilds.any_key().admit(|_guild, _player| Ok(false));
    /// guilds.key("red").admit(|_guild, player| Ok(player == "alice"));
    /// assert!(kit.reference().join("red".into()).await?);
    /// assert!(!kit.reference().join("blue".into()).await?);
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn mock<T: GrainMock>(&self) -> Mocks<T> {
        Mocks::new(self.host.clone())
    }

    /// The virtual time since the test started.
    #[must_use]
    pub fn now(&self) -> Duration {
        self.host.state.lock().now
    }

    /// The wall time the grain reads with `ctx.now()`: [`virtual_epoch`](crate::virtual_epoch)
    /// plus [`now`](Self::now). It moves only with [`advance`](Self::advance) (a timer's turn
    /// sees the time it fell due), so a test can seed a state stored "three hours ago"
    /// (`virtual_epoch() - 3 h`) or [`advance`](Self::advance) and
    /// [`reactivate`](Self::reactivate) to check what a grain catches up on.
    #[must_use]
    pub fn wall_time(&self) -> std::time::SystemTime {
        crate::clock::virtual_epoch() + self.now()
    }

    /// Armed timers: name and time until due.
    #[must_use]
    pub fn timers(&self) -> Vec<(String, Duration)> {
        let state = self.host.state.lock();
        state
            .timers
            .iter()
            .map(|t| (t.name.clone(), t.due.saturating_sub(state.now)))
            .collect()
    }

    /// Advances the virtual clock by `by`, running on the way every timer and every reminder
    /// tick that falls due, in due order, each as a turn at the time it falls due (a timer
    /// before a reminder due at the same instant, reminders of one instant by name). Returns
    /// the names of the timers and reminders that ran, in that order.
    ///
    /// - A periodic timer is re-armed `period` after its run, so it never overlaps itself.
    /// - A reminder fires **once per period** the clock passes, as a silo that stayed up would
    ///   fire it: each tick has its own `due`, `fired_at == due` and `missed == 0`, and the
    ///   next tick is read from what the turn committed (a handler that unregisters or
    ///   re-registers its reminder is followed). To see `missed` ticks reported, as after a
    ///   downtime of the cluster, move the clock with
    ///   [`advance_while_down`](Self::advance_while_down) first.
    /// - A tick whose handler fails still counts as delivered (as in a silo); a tick whose
    ///   advance could not be committed is not sent again within this call (a silo would retry
    ///   it after `reminder_retry`): the next `advance` or
    ///   [`fire_reminder`](Self::fire_reminder) sends it again.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use granary_testkit::GrainTest;
    /// # use granary::{grain, GrainContext, ReminderTick, Result};
    /// # use serde::{Serialize, Deserialize};
    /// #[derive(Default, Serialize, Deserialize)]
    /// pub struct Energy { points: u64, ticks: u64 }
    /// #[derive(Default)]
    /// pub struct PlayerGrain;
    /// #[grain(name = "player", state = Energy)]
    /// impl PlayerGrain {
    ///     pub async fn start_regen(&self, ctx: &GrainContext<Self>) -> Result<()> {
    ///         let minute = Duration::from_secs(60);
    ///         ctx.register_reminder("regen", minute, minute).await
    ///     }
    ///     #[on_reminder]
    ///     async fn regen(&self, ctx: &GrainContext<Self>, _name: &str, tick: ReminderTick) -> Result<()> {
    ///         {
    ///             let mut s = ctx.state();
    ///             s.points += 1 + tick.missed;
    ///             s.ticks += 1;
    ///         }
    ///         ctx.write_state().await
    ///     }
    /// }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let kit = GrainTest::<PlayerGrain>::new("p-1").await?;
    /// kit.reference().start_regen().await?;
    /// let ran = kit.advance(Duration::from_secs(3 * 60 + 30)).await;
    /// assert_eq!(ran, ["regen", "regen", "regen"]); // at 1, 2 and 3 minutes
    /// assert_eq!(kit.stored_state().map(|s| (s.points, s.ticks)), Some((3, 3)));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn advance(&self, by: Duration) -> Vec<String> {
        let target = self.now() + by;
        let mut fired = Vec::new();
        // Reminders whose tick did not advance (its commit failed): left for the next call.
        let mut stuck = std::collections::HashSet::new();
        loop {
            let timer = {
                let state = self.host.state.lock();
                state
                    .timers
                    .iter()
                    .filter(|t| t.due <= target)
                    .min_by_key(|t| (t.due, t.seq))
                    .cloned()
            };
            let reminder = self
                .reminders()
                .into_iter()
                .filter(|r| !stuck.contains(&r.name))
                .map(|r| (since_epoch(r.next_due_ms), r))
                .filter(|(at, _)| *at <= target)
                .min_by(|(a, x), (b, y)| (a, &x.name).cmp(&(b, &y.name)));
            let next = match (timer, reminder) {
                (None, None) => break,
                (Some(timer), Some((at, _))) if timer.due <= at => Due::Timer(timer),
                (Some(timer), None) => Due::Timer(timer),
                (_, Some((at, reminder))) => Due::Reminder(at, reminder),
            };
            match next {
                Due::Timer(timer) => {
                    fired.push(timer.name.clone());
                    self.run_timer(timer).await;
                }
                Due::Reminder(at, reminder) => {
                    self.move_to(at);
                    let due = reminder.next_due_ms;
                    if let Err(err) = self.tick(&reminder.name, due).await {
                        tracing::warn!(reminder = %reminder.name, cause = %err, "reminder turn failed");
                    }
                    let advanced = self
                        .reminders()
                        .iter()
                        .find(|r| r.name == reminder.name)
                        .is_none_or(|r| r.next_due_ms > due);
                    if !advanced {
                        stuck.insert(reminder.name.clone());
                    }
                    fired.push(reminder.name);
                }
            }
        }
        self.move_to(target);
        fired
    }
    /// Moves the virtual clock by `by` as if no silo were running meanwhile (the cluster was
    /// down): no timer runs and no reminder fires. The reminder ticks that fell due in between
    /// are then delivered by the next [`advance`](Self::advance) or
    /// [`fire_reminder`](Self::fire_reminder) as one tick per reminder, at that time, that
    /// reports them in `missed`, as a silo does after a downtime. Timers that fell due run
    /// late, at the next `advance`. The grain stays active: [`reactivate`](Self::reactivate)
    /// it too to see what a restarted cluster loads.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use granary_testkit::GrainTest;
    /// # use granary::{grain, GrainContext, ReminderTick, Result};
    /// # use serde::{Serialize, Deserialize};
    /// # #[derive(Default, Serialize, Deserialize)]
    /// # pub struct Missed { missed: Vec<u64> }
    /// # #[derive(Default)]
    /// # pub struct PlayerGrain;
    /// # #[grain(name = "player", state = Missed)]
    /// # impl PlayerGrain {
    /// #     pub async fn start(&self, ctx: &GrainContext<Self>) -> Result<()> {
    /// #         ctx.register_reminder("regen", Duration::from_secs(60), Duration::from_secs(60)).await
    /// #     }
    /// #     #[on_reminder]
    /// #     async fn regen(&self, ctx: &GrainContext<Self>, _name: &str, tick: ReminderTick) -> Result<()> {
    /// #         ctx.state().missed.push(tick.missed);
    /// #         ctx.write_state().await
    /// #     }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let kit = GrainTest::<PlayerGrain>::new("p-1").await?;
    /// kit.reference().start().await?; // a tick every minute
    /// kit.advance_while_down(Duration::from_secs(3 * 60 + 30));
    /// assert_eq!(kit.advance(Duration::ZERO).await, ["regen"]);
    /// assert_eq!(kit.stored_state().map(|s| s.missed), Some(vec![2])); // due at 1 min; 2 and 3 missed
    /// # Ok(())
    /// # }
    /// ```
    pub fn advance_while_down(&self, by: Duration) {
        let mut state = self.host.state.lock();
        state.now += by;
    }

    /// Sets the clock to `at` unless it is past it already.
    fn move_to(&self, at: Duration) {
        let mut state = self.host.state.lock();
        state.now = state.now.max(at);
    }

    /// Runs `timer` (due now or earlier) as a turn, and re-arms it if it is periodic and its
    /// turn left it alone.
    async fn run_timer(&self, timer: crate::host::Timer) {
        {
            let mut state = self.host.state.lock();
            state.now = state.now.max(timer.due);
            state.timers.retain(|t| t.name != timer.name);
            state.touched.remove(&timer.name);
        }
        let outcome = run_turn(
            &self.cell,
            &self.host,
            TurnKind::Timer(timer.name.clone()),
            CallChain::root(),
            false,
        )
        .await;
        if let TurnOutcome::Failed(err) = &outcome {
            tracing::warn!(timer = %timer.name, cause = %err, "timer turn failed");
        }
        if let Some(period) = timer.period {
            let mut state = self.host.state.lock();
            // The turn may have re-armed or cancelled it; only re-arm an untouched timer.
            if !state.touched.contains(&timer.name) {
                state.seq += 1;
                let rearmed = crate::host::Timer {
                    due: state.now + period,
                    seq: state.seq,
                    ..timer
                };
                state.timers.push(rearmed);
            }
        }
    }

    /// Sends reminder `name`'s tick due at `due_ms` as the silo's reminder service does; the
    /// reply is the next due time the grain committed.
    async fn tick(&self, name: &str, due_ms: u64) -> Result<Option<u64>, CallError> {
        let outcome = run_turn(
            &self.cell,
            &self.host,
            TurnKind::Call {
                method: granary_core::REMINDER_METHOD.id,
                args: Payload::local((name.to_owned(), due_ms)),
            },
            CallChain::root(),
            false,
        )
        .await;
        settle(outcome, &self.id, name)?.take("reminder tick reply")
    }

    /// The grain's committed reminders (what `ctx.register_reminder` stored), by name.
    #[must_use]
    pub fn reminders(&self) -> Vec<granary_core::provider::Reminder> {
        let table: &dyn granary_core::provider::ReminderTable = &*self.host.store;
        table
            .reminders_of(&self.id)
            .now_or_never()
            .and_then(Result::ok)
            .unwrap_or_default()
    }

    /// Delivers the reminder `name`'s next tick (at its stored next due time) as a silo's
    /// reminder service would, at once, at the virtual clock's current time: move the clock
    /// past several periods with [`advance_while_down`](Self::advance_while_down) first to see
    /// `missed` ticks reported ([`advance`](Self::advance) fires every period on the way).
    /// Returns the reminder's next due
    /// time as the grain committed it (`None`: it has no such reminder any more, or none was
    /// due), as milliseconds since the Unix epoch.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use granary_testkit::GrainTest;
    /// # use granary::{grain, GrainContext, ReminderTick, Result};
    /// # use serde::{Serialize, Deserialize};
    /// #[derive(Default, Serialize, Deserialize)]
    /// pub struct Energy { points: u64 }
    /// #[derive(Default)]
    /// pub struct PlayerGrain;
    /// #[grain(name = "player", state = Energy)]
    /// impl PlayerGrain {
    ///     pub async fn start_regen(&self, ctx: &GrainContext<Self>) -> Result<()> {
    ///         let minute = Duration::from_secs(60);
    ///         ctx.register_reminder("regen", minute, minute).await
    ///     }
    ///     #[on_reminder]
    ///     async fn regen(&self, ctx: &GrainContext<Self>, _name: &str, tick: ReminderTick) -> Result<()> {
    ///         ctx.state().points += 1 + tick.missed; // one point per minute, offline too
    ///         ctx.write_state().await
    ///     }
    /// }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let kit = GrainTest::<PlayerGrain>::new("p-1").await?;
    /// kit.reference().start_regen().await?;
    /// let due = kit.reminders()[0].next_due_ms;
    /// kit.advance_while_down(Duration::from_secs(3 * 60 + 30)); // no silo for 3.5 minutes
    /// let next = kit.fire_reminder("regen").await?;
    /// assert_eq!(kit.stored_state().map(|s| s.points), Some(3)); // 1 due + 2 missed
    /// assert_eq!(next, Some(due + 3 * 60_000));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// What the grain's `#[on_reminder]` method (or its commit) returned.
    pub async fn fire_reminder(&self, name: &str) -> Result<Option<u64>, CallError> {
        let Some(due) = self
            .reminders()
            .into_iter()
            .find(|r| r.name == name)
            .map(|r| r.next_due_ms)
        else {
            return Ok(None);
        };
        self.tick(name, due).await
    }

    /// The virtual clock as wall-clock milliseconds since the Unix epoch (what reminder due
    /// times are compared with): [`wall_time`](Self::wall_time) in milliseconds.
    #[must_use]
    pub fn now_ms(&self) -> u64 {
        granary_core::provider::unix_ms(granary_core::ActivationHost::now(&*self.host))
    }

    /// Whether the grain asked to be deactivated (or a commit conflicted).
    #[must_use]
    pub fn deactivation_requested(&self) -> bool {
        self.host.state.lock().deactivation_requested
    }

    /// Deactivates the grain (running `on_deactivate`) and activates it again from what was
    /// committed: proves what survives a deactivation.
    ///
    /// # Errors
    /// When `on_deactivate` or the new activation's `on_activate` fails.
    pub async fn reactivate(&mut self) -> Result<(), CallError> {
        let outcome = lifecycle_turn(&self.cell, &self.host, TurnKind::Deactivate).await;
        // Calls still queued on the old activation fail as unavailable (in a silo they would
        // move to the next activation).
        drop(self.cell.admin.lock().close());
        settle(outcome, &self.id, "on_deactivate")?;
        if G::STATELESS_WORKER.is_none() {
            let address = address_of(&self.id, self.cell.ctx.activation_id());
            let _ = self.host.store.unregister(&address).await;
        }
        {
            let mut state = self.host.state.lock();
            state.timers.clear();
            state.deactivation_requested = false;
        }
        let cell = activate(&self.id, &self.host, &self.factory).await?;
        *self.slot.lock() = Some(cell.clone());
        self.cell = cell;
        Ok(())
    }
}

/// What falls due next during [`GrainTest::advance`].
enum Due {
    Timer(crate::host::Timer),
    /// A reminder, with its due time on the virtual clock.
    Reminder(Duration, granary_core::provider::Reminder),
}

/// A wall-clock time in ms since the Unix epoch as a time on the kit's virtual clock (zero:
/// before the clock started).
fn since_epoch(ms: u64) -> Duration {
    let epoch = granary_core::provider::unix_ms(crate::clock::virtual_epoch());
    Duration::from_millis(ms.saturating_sub(epoch))
}

fn address_of(id: &GrainId, activation: ActivationId) -> GrainAddress {
    GrainAddress {
        grain: id.clone(),
        silo: SiloId::new("testkit", 0),
        activation,
    }
}

async fn activate<G: Grain>(
    id: &GrainId,
    host: &Arc<KitHost>,
    factory: &Factory<G>,
) -> Result<Arc<Cell<G>>, CallError> {
    let activation = ActivationId::new();
    let storage = |source| CallError::Storage {
        grain: id.clone(),
        source,
    };
    // A stateless worker claims nothing and has no stored state.
    let claimed = if G::STATELESS_WORKER.is_some() {
        Claim::Won(granary_core::provider::Loaded {
            data: None,
            version: 0,
        })
    } else {
        host.store
            .claim(&address_of(id, activation), None)
            .await
            .map_err(storage)?
    };
    let loaded = match claimed {
        Claim::Won(loaded) => loaded,
        Claim::Owned(owner) => {
            return Err(CallError::ActivationFailed {
                grain: id.clone(),
                reason: format!("grain is owned by activation {}", owner.activation),
            });
        }
    };
    let invoker: Arc<dyn Invoker> = host.clone();
    let scope = TurnScope {
        grain: id.clone(),
        chain: CallChain::root(),
        invoker: Some(invoker),
    };
    let state = match loaded.data {
        // Decoded in a turn scope, so that references kept in the state bind to the kit.
        Some(bytes) => {
            turn::scoped_sync(scope, || state_codec::decode::<G>(&bytes)).map_err(|problem| {
                storage(StorageError::Corrupt {
                    grain: id.clone(),
                    problem,
                })
            })?
        }
        None => G::State::default(),
    };
    let ctx = GrainContext::new(id.clone(), activation, state, loaded.version, host.clone());
    let cell = Arc::new(Cell {
        grain: factory(id),
        ctx,
        admin: Mutex::new(Scheduler::new()),
    });
    let outcome = lifecycle_turn(&cell, host, TurnKind::Activate).await;
    settle(outcome, id, "on_activate")?;
    let started = cell.admin.lock().activate(|w: &Waiter| w.1);
    wake(&cell, started);
    Ok(cell)
}

fn settle(outcome: TurnOutcome, id: &GrainId, what: &str) -> Result<Payload, CallError> {
    match outcome {
        TurnOutcome::Done(payload) => Ok(payload),
        TurnOutcome::Failed(err) => Err(err),
        TurnOutcome::Panicked(message) => Err(CallError::GrainPanicked {
            grain: id.clone(),
            method: what.to_owned(),
            message,
        }),
    }
}

/// Runs `on_activate` or `on_deactivate` as the silo does: an exclusive turn on a chain of
/// its own, counted by the scheduler (a call back into the grain from the hook is a cycle).
async fn lifecycle_turn<G: Grain>(
    cell: &Arc<Cell<G>>,
    host: &Arc<KitHost>,
    kind: TurnKind,
) -> TurnOutcome {
    let chain = CallChain::root();
    cell.admin.lock().start_lifecycle(chain.id);
    let running = Running {
        cell,
        exclusive: true,
        chain: chain.id,
    };
    let outcome = execute(cell, host, kind, chain).await;
    drop(running);
    note_failure(cell, host, &outcome);
    outcome
}

/// Runs one turn admitted by the silo's scheduler: at once, after the turns it waits for, or
/// not at all (a cycle; an activation gone meanwhile).
async fn run_turn<G: Grain>(
    cell: &Arc<Cell<G>>,
    host: &Arc<KitHost>,
    kind: TurnKind,
    chain: CallChain,
    read_only: bool,
) -> TurnOutcome {
    let me = cell.ctx.id();
    let class = Class {
        read_only,
        chain_id: chain.id,
        chain: &chain.grains,
    };
    let waiting = {
        let mut admin = cell.admin.lock();
        match admin.admit(me, G::REENTRANT, class) {
            Admission::Run { exclusive } => Ok(exclusive),
            Admission::Queue => {
                let (tx, rx) = oneshot::channel();
                admin.enqueue((tx, chain.id), read_only);
                Err(Some(rx))
            }
            Admission::Cycle => {
                let mut grains = chain.grains.clone();
                grains.push(me.clone());
                return TurnOutcome::Failed(CallError::Cycle {
                    grain: me.clone(),
                    chain: grains,
                });
            }
            Admission::Reroute => Err(None),
        }
    };
    let exclusive = match waiting {
        Ok(exclusive) => exclusive,
        Err(Some(rx)) => match rx.await {
            Ok(exclusive) => exclusive,
            Err(_) => return TurnOutcome::Failed(unavailable(me)),
        },
        Err(None) => return TurnOutcome::Failed(unavailable(me)),
    };
    let running = Running {
        cell,
        exclusive,
        chain: chain.id,
    };
    let outcome = execute(cell, host, kind, chain).await;
    drop(running);
    note_failure(cell, host, &outcome);
    outcome
}

/// A panic, or a failure that left unsaved changes, asks for a deactivation (as in a silo).
fn note_failure<G: Grain>(cell: &Cell<G>, host: &KitHost, outcome: &TurnOutcome) {
    let unsaved = matches!(outcome, TurnOutcome::Failed(_)) && cell.ctx.has_unsaved_changes();
    if matches!(outcome, TurnOutcome::Panicked(_)) || unsaved {
        host.state.lock().deactivation_requested = true;
    }
}

fn unavailable(grain: &GrainId) -> CallError {
    CallError::Unavailable {
        grain: grain.clone(),
        attempts: 1,
    }
}

async fn execute<G: Grain>(
    cell: &Arc<Cell<G>>,
    host: &Arc<KitHost>,
    kind: TurnKind,
    chain: CallChain,
) -> TurnOutcome {
    let invoker: Arc<dyn Invoker> = host.clone();
    let scope = TurnScope {
        grain: cell.ctx.id().clone(),
        chain,
        invoker: Some(invoker),
    };
    turn::execute(&cell.grain, &cell.ctx, kind, scope).await
}

/// A turn the scheduler counts as running: its end (even a caller that gave up on it)
/// tells the scheduler and starts what waited for it.
struct Running<'a, G: Grain> {
    cell: &'a Arc<Cell<G>>,
    exclusive: bool,
    chain: ChainId,
}

impl<G: Grain> Drop for Running<'_, G> {
    fn drop(&mut self) {
        let next = {
            let mut admin = self.cell.admin.lock();
            admin.finish(self.exclusive, self.chain);
            admin.next_runnable(|w: &Waiter| w.1)
        };
        wake(self.cell, next);
    }
}

/// Starts the turns the scheduler admitted; one whose caller gave up ends at once.
fn wake<G: Grain>(cell: &Arc<Cell<G>>, mut admitted: Vec<(Waiter, bool)>) {
    while !admitted.is_empty() {
        let mut more = Vec::new();
        for ((tx, chain), read_only) in admitted {
            if tx.send(!read_only).is_err() {
                let mut admin = cell.admin.lock();
                admin.finish(!read_only, chain);
                more.extend(admin.next_runnable(|w: &Waiter| w.1));
            }
        }
        admitted = more;
    }
}

async fn run_call<G: Grain>(
    cell: &Arc<Cell<G>>,
    host: &Arc<KitHost>,
    call: OutgoingCall,
) -> Result<Payload, CallError> {
    let name = call.method.name;
    // Arguments and replies take the wire path, so a unit test also proves them encodable.
    let args = Payload::Encoded(call.args.into_bytes(name)?);
    let read_only = G::method(call.method.id).is_some_and(|m| m.read_only);
    let kind = TurnKind::Call {
        method: call.method.id,
        args,
    };
    let outcome = run_turn(cell, host, kind, call.chain, read_only).await;
    settle(outcome, cell.ctx.id(), name)
}

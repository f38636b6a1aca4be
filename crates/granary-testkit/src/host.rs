//! The test kit's runtime: an [`ActivationHost`] and [`Invoker`] that keeps the grain under
//! test, answers its outgoing calls from declared replies and records them, and keeps its timers
//! on a virtual clock.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use parking_lot::Mutex;

use granary_core::provider::StateStore;
use granary_core::{
    ActivationHost, ActivationId, CallError, GrainId, Invoker, ObserverKey, OutgoingCall, Payload,
    SiloId,
};
use granary_silo::ObserverTable;
use granary_silo::memory::MemoryStore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::grain_test::RecordedCall;
use crate::mock::Replies;

/// Runs a call on the grain under test (set by [`GrainTest`](crate::GrainTest)).
pub(crate) type SelfDispatch =
    Arc<dyn Fn(OutgoingCall) -> BoxFuture<'static, Result<Payload, CallError>> + Send + Sync>;

#[derive(Debug, Clone)]
pub(crate) struct Timer {
    pub(crate) name: String,
    pub(crate) due: Duration,
    pub(crate) period: Option<Duration>,
    pub(crate) seq: u64,
}

#[derive(Default)]
pub(crate) struct KitState {
    pub(crate) calls: Vec<RecordedCall>,
    pub(crate) replies: Replies,
    pub(crate) timers: Vec<Timer>,
    pub(crate) now: Duration,
    pub(crate) seq: u64,
    /// Timers set or cancelled since the last time `advance` looked (a turn that re-arms or
    /// cancels its own timer must not be overridden by the periodic re-arm).
    pub(crate) touched: std::collections::HashSet<String>,
    pub(crate) deactivation_requested: bool,
    pub(crate) conflicts: u32,
}

pub(crate) struct KitHost {
    pub(crate) store: Arc<MemoryStore>,
    pub(crate) grain: GrainId,
    pub(crate) state: Mutex<KitState>,
    pub(crate) dispatch: OnceLock<SelfDispatch>,
    /// The observer objects the test serves (`GrainTest::observe`).
    pub(crate) observers: Arc<ObserverTable>,
    me: std::sync::Weak<KitHost>,
}

impl KitHost {
    pub(crate) fn new(grain: GrainId, store: Arc<MemoryStore>) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            store,
            grain,
            state: Mutex::new(KitState::default()),
            dispatch: OnceLock::new(),
            observers: Arc::new(ObserverTable::new(
                SiloId::new("testkit", 0),
                TaskTracker::new(),
                CancellationToken::new(),
            )),
            me: me.clone(),
        })
    }

    /// Whether `call` goes to an observer object the test serves (others go to the mocks).
    fn serves(&self, call: &OutgoingCall) -> bool {
        ObserverKey::of(&call.target).is_some_and(|k| self.observers.contains(&k))
    }

    fn outgoing(&self, call: OutgoingCall) -> Result<Payload, CallError> {
        let name = call.method.name;
        let args = call.args.into_bytes(name)?;
        let responder = {
            let mut state = self.state.lock();
            state.calls.push(RecordedCall {
                target: call.target.clone(),
                method: name,
                args: args.clone(),
                context: call.chain.context.clone(),
            });
            state.replies.find(&call.target, name)
        };
        match responder {
            Some(respond) => respond(&call.target, Payload::Encoded(args)),
            None => Err(CallError::Rejected {
                reason: format!(
                    "testkit: no reply declared for {}.{name}; declare one with \
                     kit.mock::<TheGrain>().key(..).{name}(..) or .any_key().{name}(..)",
                    call.target
                ),
                grain: call.target,
            }),
        }
    }
}

impl Invoker for KitHost {
    fn invoke(&self, call: OutgoingCall) -> BoxFuture<'static, Result<Payload, CallError>> {
        if self.serves(&call) {
            let timeout = call.timeout.unwrap_or(Duration::from_secs(30));
            let OutgoingCall {
                target,
                method,
                args,
                ..
            } = call;
            return self
                .observers
                .invoke(target, method.name.into(), method.id, args, timeout);
        }
        if call.target == self.grain {
            let dispatch = self
                .dispatch
                .get()
                .expect("the grain under test is installed")
                .clone();
            return dispatch(call);
        }
        futures::future::ready(self.outgoing(call)).boxed()
    }

    fn send(&self, call: OutgoingCall) -> BoxFuture<'static, Result<(), CallError>> {
        if self.serves(&call) {
            let sent = self.observers.send(call.target, call.method.id, call.args);
            return futures::future::ready(sent).boxed();
        }
        if call.target == self.grain {
            let fut = self.invoke(call);
            return async move { fut.await.map(|_| ()) }.boxed();
        }
        // A one-way call needs no declared reply: it is recorded, and a declared reply (if any)
        // runs for its side effects.
        let declared = self
            .state
            .lock()
            .replies
            .find(&call.target, call.method.name)
            .is_some();
        let result = self.outgoing(call);
        futures::future::ready(if declared { result.map(|_| ()) } else { Ok(()) }).boxed()
    }
}

impl ActivationHost for KitHost {
    fn invoker(&self) -> Arc<dyn Invoker> {
        self.me
            .upgrade()
            .expect("the kit host is alive while its grain runs")
    }

    fn store(&self) -> &dyn StateStore {
        &*self.store
    }

    fn set_timer(
        &self,
        _grain: &GrainId,
        _activation: ActivationId,
        name: &str,
        due: Duration,
        period: Option<Duration>,
    ) {
        let mut state = self.state.lock();
        state.timers.retain(|t| t.name != name);
        state.touched.insert(name.to_owned());
        state.seq += 1;
        let timer = Timer {
            name: name.to_owned(),
            due: state.now + due,
            period,
            seq: state.seq,
        };
        state.timers.push(timer);
    }

    fn cancel_timer(&self, _grain: &GrainId, _activation: ActivationId, name: &str) {
        let mut state = self.state.lock();
        state.timers.retain(|t| t.name != name);
        state.touched.insert(name.to_owned());
    }

    fn deactivate(&self, _grain: &GrainId, _activation: ActivationId) {
        self.state.lock().deactivation_requested = true;
    }

    fn now(&self) -> std::time::SystemTime {
        crate::clock::virtual_epoch() + self.state.lock().now
    }

    fn storage_conflict(&self, _grain: &GrainId, _activation: ActivationId) {
        let mut state = self.state.lock();
        state.deactivation_requested = true;
        state.conflicts += 1;
    }
}

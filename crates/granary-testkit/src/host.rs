//! The test kit's runtime: an [`ActivationHost`] and [`Invoker`] that keeps the grain under
//! test, answers its outgoing calls from declared replies and records them, and keeps its timers
//! on a virtual clock.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use parking_lot::Mutex;

use granary_core::provider::StateStore;
use granary_core::{
    ActivationHost, ActivationId, CallError, GrainId, Invoker, OutgoingCall, Payload,
};
use granary_silo::memory::MemoryStore;

use crate::grain_test::RecordedCall;

/// Declared reply for calls to one method of one grain.
pub(crate) type Responder = Arc<dyn Fn(Payload) -> Result<Payload, CallError> + Send + Sync>;

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
    pub(crate) responders: HashMap<(GrainId, &'static str), Responder>,
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
    me: std::sync::Weak<KitHost>,
}

impl KitHost {
    pub(crate) fn new(grain: GrainId, store: Arc<MemoryStore>) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            store,
            grain,
            state: Mutex::new(KitState::default()),
            dispatch: OnceLock::new(),
            me: me.clone(),
        })
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
            });
            state.responders.get(&(call.target.clone(), name)).cloned()
        };
        match responder {
            Some(respond) => respond(Payload::Encoded(args)),
            None => Err(CallError::Rejected {
                grain: call.target.clone(),
                reason: format!(
                    "testkit: no reply declared for {}.{name}; declare one with GrainTest::reply",
                    call.target
                ),
            }),
        }
    }
}

impl Invoker for KitHost {
    fn invoke(&self, call: OutgoingCall) -> BoxFuture<'static, Result<Payload, CallError>> {
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
        if call.target == self.grain {
            let fut = self.invoke(call);
            return async move { fut.await.map(|_| ()) }.boxed();
        }
        // A one-way call needs no declared reply: it is recorded, and a declared reply (if any)
        // runs for its side effects.
        let declared = self
            .state
            .lock()
            .responders
            .contains_key(&(call.target.clone(), call.method.name));
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

    fn storage_conflict(&self, _grain: &GrainId, _activation: ActivationId) {
        let mut state = self.state.lock();
        state.deactivation_requested = true;
        state.conflicts += 1;
    }

    fn now_ms(&self) -> u64 {
        let elapsed = u64::try_from(self.state.lock().now.as_millis()).unwrap_or(u64::MAX);
        KIT_EPOCH_MS.saturating_add(elapsed)
    }
}

/// The wall-clock time the kit's virtual clock starts at (2026-01-01T00:00:00Z), in
/// milliseconds since the Unix epoch: what reminders are due against.
pub(crate) const KIT_EPOCH_MS: u64 = 1_767_225_600_000;

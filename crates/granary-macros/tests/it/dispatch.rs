//! The generated code at run time, without a silo: `Grain::invoke` on local and encoded
//! payloads, the hooks, `METHODS`, and the typed reference (through a loopback invoker).

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use granary::{
    CallError, Grain, GrainContext, GrainId, GrainRef, MethodId, Result, TypedRef, grain,
};
use granary_core::provider::{Claim, Commit, GrainAddress, Loaded, StateStore};
use granary_core::{
    ActivationHost, ActivationId, Invoker, OutgoingCall, Payload, StorageError, codec,
};
use serde::{Deserialize, Serialize};

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

#[derive(Default, Serialize, Deserialize)]
struct CounterState {
    total: i64,
}

#[derive(Default)]
struct CounterGrain {
    log: Mutex<Vec<String>>,
}

impl CounterGrain {
    fn record(&self, entry: impl Into<String>) {
        self.log
            .lock()
            .expect("no test panics while logging")
            .push(entry.into());
    }

    fn log(&self) -> Vec<String> {
        self.log
            .lock()
            .expect("no test panics while logging")
            .clone()
    }
}

#[grain(name = "counter", state = CounterState, reference = CounterHandle)]
impl CounterGrain {
    /// Adds `amount` and returns the new total.
    pub async fn add(
        &self,
        ctx: &GrainContext<Self>,
        amount: i64,
        mut reason: String,
    ) -> Result<i64> {
        reason.push('!');
        self.record(reason);
        let total = {
            let mut state = ctx.state();
            state.total += amount;
            state.total
        };
        ctx.write_state().await?;
        Ok(total)
    }

    #[read_only]
    pub async fn total(&self, ctx: &GrainContext<Self>) -> Result<i64> {
        Ok(ctx.state().total)
    }

    #[one_way]
    pub async fn poke(&self, _ctx: &GrainContext<Self>, n: u32) -> Result<()> {
        self.record(format!("poke {n}"));
        Ok(())
    }

    #[read_only]
    #[one_way]
    pub async fn refuse(
        &self,
        ctx: &GrainContext<Self>,
        (why, _): (String, u8),
    ) -> Result<(), CallError> {
        Err(CallError::rejected(ctx.id(), why))
    }

    #[on_activate]
    async fn activated(&self, _ctx: &GrainContext<Self>) -> Result<()> {
        self.record("activate");
        Ok(())
    }

    #[on_deactivate]
    async fn deactivating(&self, ctx: &GrainContext<Self>) -> Result<()> {
        self.record("deactivate");
        ctx.write_state().await
    }

    #[on_timer]
    async fn tick(&self, _ctx: &GrainContext<Self>, name: &str) -> Result<()> {
        self.record(format!("timer {name}"));
        Ok(())
    }

    fn not_a_method(&self) -> usize {
        self.log.lock().expect("no test panics while logging").len()
    }
}

/// Minimal paths for `crate = "..."`: what a crate that cannot name `::granary` provides.
mod shim {
    pub(crate) mod __private {
        pub(crate) use granary::__private::{BoxFuture, core, serde};
    }
}

/// No hooks, no state, reentrant, default reference name, `crate` path.
#[derive(Default)]
struct Lobby;

#[grain(name = "lobby", state = (), reentrant, crate = "crate::dispatch::shim")]
impl Lobby {
    pub async fn echo(&self, _ctx: &GrainContext<Self>, text: String) -> Result<String> {
        Ok(text)
    }
}

/// An activation host whose store accepts every commit and counts them.
#[derive(Default)]
struct CountingHost {
    commits: AtomicUsize,
}

impl StateStore for CountingHost {
    fn claim(
        &self,
        _: &GrainAddress,
        _: Option<&GrainAddress>,
    ) -> BoxFuture<'_, Result<Claim, StorageError>> {
        Box::pin(async {
            Ok(Claim::Won(Loaded {
                data: None,
                version: 0,
            }))
        })
    }

    fn commit(&self, commit: Commit) -> BoxFuture<'_, Result<u64, StorageError>> {
        self.commits.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move { Ok(commit.expected_version + 1) })
    }
}

impl ActivationHost for CountingHost {
    fn invoker(&self) -> Arc<dyn Invoker> {
        Arc::new(NoRuntime)
    }
    fn store(&self) -> &dyn StateStore {
        self
    }
    fn set_timer(&self, _: &GrainId, _: ActivationId, _: &str, _: Duration, _: Option<Duration>) {}
    fn cancel_timer(&self, _: &GrainId, _: ActivationId, _: &str) {}
    fn deactivate(&self, _: &GrainId, _: ActivationId) {}
    fn storage_conflict(&self, _: &GrainId, _: ActivationId) {}
}

/// The invoker of references the grain creates; these tests make no such calls.
struct NoRuntime;

impl Invoker for NoRuntime {
    fn invoke(&self, _: OutgoingCall) -> BoxFuture<'static, Result<Payload, CallError>> {
        Box::pin(async { Err(CallError::ShuttingDown) })
    }
    fn send(&self, _: OutgoingCall) -> BoxFuture<'static, Result<(), CallError>> {
        Box::pin(async { Err(CallError::ShuttingDown) })
    }
}

/// One activation of `G`, with its context.
struct Activation<G: Grain> {
    grain: G,
    ctx: GrainContext<G>,
    host: Arc<CountingHost>,
}

fn activate<G: Grain + Default>(key: &str) -> Arc<Activation<G>> {
    let host = Arc::new(CountingHost::default());
    let id = GrainId::new(G::TYPE_NAME, key);
    let ctx = GrainContext::new(
        id,
        ActivationId::new(),
        G::State::default(),
        0,
        host.clone(),
    );
    Arc::new(Activation {
        grain: G::default(),
        ctx,
        host,
    })
}

/// Calls straight into one activation: what a silo does, minus everything else.
struct Loopback<G: Grain> {
    activation: Arc<Activation<G>>,
    sent: Mutex<Vec<&'static str>>,
}

impl<G: Grain> Invoker for Loopback<G> {
    fn invoke(&self, call: OutgoingCall) -> BoxFuture<'static, Result<Payload, CallError>> {
        assert_eq!(
            G::method(call.method.id),
            Some(call.method),
            "reference and grain disagree"
        );
        let activation = self.activation.clone();
        Box::pin(async move {
            activation
                .grain
                .invoke(&activation.ctx, call.method.id, call.args)
                .await
        })
    }

    fn send(&self, call: OutgoingCall) -> BoxFuture<'static, Result<(), CallError>> {
        assert!(call.method.one_way);
        self.sent
            .lock()
            .expect("no test panics while sending")
            .push(call.method.name);
        let activation = self.activation.clone();
        Box::pin(async move {
            activation
                .grain
                .invoke(&activation.ctx, call.method.id, call.args)
                .await
                .map(drop)
        })
    }
}

fn reference<G: Grain>(activation: &Arc<Activation<G>>) -> (G::Ref, Arc<Loopback<G>>) {
    let loopback = Arc::new(Loopback {
        activation: activation.clone(),
        sent: Mutex::new(Vec::new()),
    });
    let id = activation.ctx.id().clone();
    (G::Ref::from(GrainRef::new(id, loopback.clone())), loopback)
}

#[test]
fn metadata_lists_every_method_with_its_id_and_flags() {
    assert_eq!(CounterGrain::TYPE_NAME, "counter");
    const { assert!(!CounterGrain::REENTRANT) };
    let got: Vec<_> = CounterGrain::METHODS
        .iter()
        .map(|m| (m.name, m.read_only, m.one_way))
        .collect();
    assert_eq!(
        got,
        [
            ("add", false, false),
            ("total", true, false),
            ("poke", false, true),
            ("refuse", true, true)
        ]
    );
    for m in CounterGrain::METHODS {
        assert_eq!(m.id, MethodId::of(m.name), "{}", m.name);
        assert_eq!(CounterGrain::method(m.id), Some(m));
    }

    assert_eq!(Lobby::TYPE_NAME, "lobby");
    const { assert!(Lobby::REENTRANT) };
    assert_eq!(Lobby::METHODS.len(), 1);
    assert_eq!(Lobby::METHODS[0].id, MethodId::of("echo"));
}

#[tokio::test]
async fn local_payloads_are_taken_and_replied_locally() {
    let a = activate::<CounterGrain>("local");
    let reply = a
        .grain
        .invoke(
            &a.ctx,
            MethodId::of("add"),
            Payload::local((5_i64, "bonus".to_owned())),
        )
        .await;
    let reply = reply.unwrap();
    assert!(!reply.is_encoded());
    assert_eq!(reply.take::<i64>("reply").unwrap(), 5);
    assert_eq!(a.host.commits.load(Ordering::SeqCst), 1);
    assert_eq!(a.ctx.version(), 1);
    assert_eq!(a.grain.log(), ["bonus!"]);

    let reply = a
        .grain
        .invoke(&a.ctx, MethodId::of("total"), Payload::local(()))
        .await
        .unwrap();
    assert_eq!(reply.take::<i64>("reply").unwrap(), 5);
}

#[tokio::test]
async fn encoded_payloads_are_decoded_and_replied_encoded() {
    let a = activate::<CounterGrain>("encoded");
    let args = Payload::Encoded(codec::encode(&(7_i64, "wire".to_owned())).unwrap());
    let reply = a
        .grain
        .invoke(&a.ctx, MethodId::of("add"), args)
        .await
        .unwrap();
    let Payload::Encoded(bytes) = reply else {
        panic!("a reply to an encoded call must be encoded")
    };
    assert_eq!(codec::decode::<i64>(&bytes).unwrap(), 7);

    let args = Payload::Encoded(codec::encode(&(3_u32,)).unwrap());
    let reply = a
        .grain
        .invoke(&a.ctx, MethodId::of("poke"), args)
        .await
        .unwrap();
    assert!(reply.is_encoded());
    assert_eq!(reply.take::<()>("reply").unwrap(), ());
    assert_eq!(a.grain.log(), ["wire!", "poke 3"]);
}

#[tokio::test]
async fn bad_arguments_and_grain_errors_come_back_as_call_errors() {
    let a = activate::<CounterGrain>("errors");
    let wrong = a
        .grain
        .invoke(&a.ctx, MethodId::of("add"), Payload::local((5_i64,)))
        .await
        .unwrap_err();
    assert!(
        matches!(&wrong, CallError::Codec { what, .. } if what == "counter.add arguments"),
        "{wrong:?}"
    );

    let garbage = Payload::Encoded(vec![0xff; 3]);
    let err = a
        .grain
        .invoke(&a.ctx, MethodId::of("add"), garbage)
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::Codec { .. }), "{err:?}");

    let args = Payload::local((("busy".to_owned(), 0_u8),));
    let err = a
        .grain
        .invoke(&a.ctx, MethodId::of("refuse"), args)
        .await
        .unwrap_err();
    assert_eq!(err, CallError::rejected(a.ctx.id(), "busy"));
}

#[tokio::test]
async fn unknown_method_ids_are_refused() {
    let a = activate::<CounterGrain>("unknown");
    let err = a
        .grain
        .invoke(&a.ctx, MethodId(42), Payload::local(()))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        CallError::UnknownMethod {
            grain_type: "counter".to_owned(),
            method: 42
        }
    );
}

#[tokio::test]
async fn hooks_call_the_marked_methods() {
    let a = activate::<CounterGrain>("hooks");
    a.grain.on_activate(&a.ctx).await.unwrap();
    a.grain.on_timer(&a.ctx, "regen").await.unwrap();
    a.grain.on_deactivate(&a.ctx).await.unwrap();
    assert_eq!(a.grain.log(), ["activate", "timer regen", "deactivate"]);
    assert_eq!(
        a.host.commits.load(Ordering::SeqCst),
        1,
        "on_deactivate wrote the state"
    );
    assert_eq!(a.grain.not_a_method(), 3);

    // Without hooks, the trait's defaults run.
    let lobby = activate::<Lobby>("hooks");
    lobby.grain.on_activate(&lobby.ctx).await.unwrap();
    lobby.grain.on_timer(&lobby.ctx, "none").await.unwrap();
}

#[tokio::test]
async fn references_call_through_their_invoker() {
    let a = activate::<CounterGrain>("ref");
    let (counter, loopback): (CounterHandle, _) = reference(&a);
    assert_eq!(counter.add(2, "first".to_owned()).await.unwrap(), 2);
    assert_eq!(
        counter
            .clone()
            .with_timeout(Duration::from_secs(1))
            .add(3, "second".to_owned())
            .await
            .unwrap(),
        5
    );
    assert_eq!(counter.total().await.unwrap(), 5);
    counter.poke(9).await.unwrap();
    assert_eq!(*loopback.sent.lock().unwrap(), ["poke"]);
    let err = counter.refuse(("no".to_owned(), 1)).await.unwrap_err();
    assert!(matches!(err, CallError::Rejected { .. }), "{err:?}");
    assert_eq!(a.grain.log(), ["first!", "second!", "poke 9"]);

    let lobby = activate::<Lobby>("main");
    let (lobby_ref, _): (LobbyRef, _) = reference(&lobby);
    assert_eq!(lobby_ref.echo("hi".to_owned()).await.unwrap(), "hi");
}

#[test]
fn references_compare_hash_and_serialize_as_their_grain_id() {
    use std::collections::HashSet;

    let id = GrainId::new("counter", "alice");
    let handle = CounterHandle::from(GrainRef::unbound(id.clone()));
    assert_eq!(handle.id(), &id);
    assert_eq!(handle.grain_ref().id(), &id);
    assert_eq!(format!("{handle:?}"), format!("CounterHandle({id:?})"));

    let bytes = codec::encode(&handle).unwrap();
    assert_eq!(bytes, codec::encode(&id).unwrap());
    let back: CounterHandle = codec::decode(&bytes).unwrap();
    assert_eq!(back, handle);

    let other = CounterHandle::from(GrainRef::unbound(GrainId::new("counter", "bob")));
    let set: HashSet<_> = [handle.clone(), back, other].into_iter().collect();
    assert_eq!(set.len(), 2);
}

#[tokio::test]
async fn unbound_references_fail_without_running_anything() {
    let handle = CounterHandle::from(GrainRef::unbound(GrainId::new("counter", "nobody")));
    let err = handle.total().await.unwrap_err();
    assert!(matches!(err, CallError::Unbound { .. }), "{err:?}");
}

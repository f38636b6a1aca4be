//! Stateless workers (`#[grain(stateless_worker)]`): several activations of one key run side
//! by side on a silo, up to the type's maximum and no further; nothing reaches the store;
//! idle workers are collected one by one; and a call is served by the silo that receives it,
//! from a silo, a grain or a client's gateway.
//!
//! Concurrency is measured inside the grain: each turn enters a gate (counted in a watch
//! channel the test awaits) and waits for a permit the test hands out, so the test knows how
//! many turns overlap without sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use granary::provider::{GrainDirectory, MemoryStore, Outbox};
use granary::{
    CallError, ClientConfig, ClusterClient, ClusterConfig, DeactivationReason, Event, GrainContext,
    GrainId, Placement, Result, Silo, SiloBuilder, SiloConfig, SiloEvent, StartError, grain,
};
use granary_redis::{RedisConfig, RedisStore};
use granary_testkit::TestSilo;
use granary_testkit::redis_server::{remove_cluster_keys, shared_redis_url, unique_name};
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, watch};

use crate::multi_silo::SECRET;

/// What the workers of a test share: how many turns are inside now and at most, the permits
/// that let them out, and the timer ticks seen.
#[derive(Debug)]
pub struct Gate {
    inside: watch::Sender<usize>,
    most: AtomicUsize,
    permits: Semaphore,
    ticks: watch::Sender<usize>,
}

impl Gate {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            inside: watch::channel(0).0,
            most: AtomicUsize::new(0),
            permits: Semaphore::new(0),
            ticks: watch::channel(0).0,
        })
    }

    /// Waits until exactly `n` turns are inside the gate.
    async fn wait_inside(&self, n: usize) {
        let mut rx = self.inside.subscribe();
        tokio::time::timeout(Duration::from_secs(20), rx.wait_for(|i| *i == n))
            .await
            .expect("the turns arrive in time")
            .unwrap();
    }
}

/// A marker event: publishing it from a stateless worker is refused.
#[derive(Debug, Serialize, Deserialize)]
pub struct Looked;

impl Event for Looked {
    const TYPE_NAME: &'static str = "stateless.looked";
}

/// A stateless worker with at most three activations per key and silo.
#[derive(Debug)]
pub struct LookupGrain {
    gate: Arc<Gate>,
    silo: &'static str,
}

#[grain(name = "stateless.lookup", stateless_worker = 3, idle_after = "1s")]
impl LookupGrain {
    /// Enters the gate and waits for a permit.
    pub async fn hold(&self, ctx: &GrainContext<Self>) -> Result<()> {
        let _ = ctx;
        let now = {
            let mut now = 0;
            self.gate.inside.send_modify(|i| {
                *i += 1;
                now = *i;
            });
            now
        };
        self.gate.most.fetch_max(now, Ordering::SeqCst);
        self.gate.permits.acquire().await.unwrap().forget();
        self.gate.inside.send_modify(|i| *i -= 1);
        Ok(())
    }

    /// The silo that served the call.
    #[read_only]
    pub async fn served_by(&self, ctx: &GrainContext<Self>) -> Result<String> {
        let _ = ctx;
        Ok(self.silo.to_owned())
    }

    /// Tries what a stateless worker may not do; returns each error.
    pub async fn misbehave(&self, ctx: &GrainContext<Self>) -> Result<Vec<CallError>> {
        let mut errors = Vec::new();
        errors.extend(ctx.write_state().await.err());
        errors.extend(ctx.clear_state().await.err());
        errors.extend(ctx.publish(&Looked).err());
        errors.extend(
            ctx.register_reminder("daily", Duration::from_secs(60), Duration::from_secs(60))
                .await
                .err(),
        );
        errors.extend(ctx.unregister_reminder("daily").await.err());
        Ok(errors)
    }

    /// Arms a timer on the activation that serves this call.
    pub async fn arm(&self, ctx: &GrainContext<Self>) -> Result<()> {
        ctx.set_timer("tick", Duration::from_millis(1), None);
        Ok(())
    }

    #[on_timer]
    async fn tick(&self, ctx: &GrainContext<Self>, name: &str) -> Result<()> {
        let _ = (ctx, name);
        self.gate.ticks.send_modify(|t| *t += 1);
        Ok(())
    }
}

/// A stateless worker with the default maximum: one activation per core.
#[derive(Debug)]
pub struct PerCoreGrain {
    gate: Arc<Gate>,
}

#[grain(name = "stateless.per-core", stateless_worker)]
impl PerCoreGrain {
    pub async fn hold(&self, ctx: &GrainContext<Self>) -> Result<()> {
        let _ = ctx;
        let mut now = 0;
        self.gate.inside.send_modify(|i| {
            *i += 1;
            now = *i;
        });
        self.gate.most.fetch_max(now, Ordering::SeqCst);
        self.gate.permits.acquire().await.unwrap().forget();
        self.gate.inside.send_modify(|i| *i -= 1);
        Ok(())
    }
}

/// An ordinary grain: the control that does reach the store.
#[derive(Debug, Default)]
pub struct PlainGrain;

#[grain(name = "stateless.plain", state = u32)]
impl PlainGrain {
    pub async fn bump(&self, ctx: &GrainContext<Self>) -> Result<u32> {
        *ctx.state() += 1;
        ctx.write_state().await?;
        Ok(*ctx.state())
    }

    /// Asks the stateless worker `key` which silo served it.
    pub async fn ask(&self, ctx: &GrainContext<Self>, key: String) -> Result<String> {
        ctx.grain::<LookupGrain>(key).served_by().await
    }
}

const LOOKUP: &str = "stateless.lookup";

fn lookup(gate: &Arc<Gate>, silo: &'static str) -> impl Fn(&GrainId) -> LookupGrain + use<> {
    let gate = gate.clone();
    move |_| LookupGrain {
        gate: gate.clone(),
        silo,
    }
}

fn config() -> SiloConfig {
    SiloConfig {
        call_timeout: Duration::from_secs(30),
        // No idle collection under the tests that do not drive it.
        idle_timeout: Duration::from_secs(3600),
        ..SiloConfig::test_profile()
    }
}

/// Sends `n` `hold` calls to `key` at once; returns their tasks.
fn hold_calls(silo: &TestSilo, key: &str, n: usize) -> Vec<tokio::task::JoinHandle<Result<()>>> {
    (0..n)
        .map(|_| {
            let worker = silo.client().grain::<LookupGrain>(key);
            tokio::spawn(async move { worker.hold().await })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_to_one_key_overlap_up_to_the_maximum_and_no_further() {
    let gate = Gate::new();
    let silo = TestSilo::start_with(config(), |b| {
        b.register_with::<LookupGrain>(lookup(&gate, "a"))
            .register::<PlainGrain>()
    })
    .await
    .unwrap();
    let calls = hold_calls(&silo, "hot", 8);
    // Three run side by side, one per activation; the other five wait in their queues.
    gate.wait_inside(3).await;
    assert_eq!(
        silo.silo().activation_count(),
        3,
        "three activations, counted"
    );
    let text = silo.silo().metrics().render().unwrap();
    assert!(
        text.contains(&format!("granary_activations{{grain_type=\"{LOOKUP}\"}} 3")),
        "the metrics count every worker:\n{text}"
    );
    // One more activation may not appear: a call to another key still gets its own.
    silo.client().grain::<PlainGrain>("p").bump().await.unwrap();
    assert_eq!(silo.silo().activation_count(), 4);
    gate.permits.add_permits(8);
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_eq!(
        gate.most.load(Ordering::SeqCst),
        3,
        "at most three turns of the key overlapped"
    );
    assert_eq!(*gate.inside.borrow(), 0);
    silo.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_maximum_is_one_activation_per_core_and_the_builder_overrides_it() {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let gate = Gate::new();
    let per_core = {
        let gate = gate.clone();
        move |_: &GrainId| PerCoreGrain { gate: gate.clone() }
    };
    let silo = TestSilo::start_with(config(), |b| b.register_with::<PerCoreGrain>(per_core))
        .await
        .unwrap();
    let calls: Vec<_> = (0..cores + 3)
        .map(|_| {
            let worker = silo.client().grain::<PerCoreGrain>("k");
            tokio::spawn(async move { worker.hold().await })
        })
        .collect();
    gate.wait_inside(cores).await;
    assert_eq!(silo.silo().activation_count(), cores);
    gate.permits.add_permits(cores + 3);
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_eq!(gate.most.load(Ordering::SeqCst), cores);
    silo.shutdown().await.unwrap();

    // The builder's maximum beats the attribute's.
    let gate = Gate::new();
    let silo = TestSilo::start_with(config(), |b| {
        b.stateless_workers::<LookupGrain>(5)
            .register_with::<LookupGrain>(lookup(&gate, "a"))
    })
    .await
    .unwrap();
    let calls = hold_calls(&silo, "hot", 9);
    gate.wait_inside(5).await;
    assert_eq!(silo.silo().activation_count(), 5);
    gate.permits.add_permits(9);
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_eq!(gate.most.load(Ordering::SeqCst), 5);
    silo.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_as_for_an_ordinary_grain() {
    let gate = Gate::new();
    let silo = TestSilo::start_with(
        SiloConfig {
            max_queued_requests: 1,
            ..config()
        },
        |b| b.register_with::<LookupGrain>(lookup(&gate, "a")),
    )
    .await
    .unwrap();
    // Three running, one queued behind each: six held calls fill every queue.
    let calls = hold_calls(&silo, "hot", 3);
    gate.wait_inside(3).await;
    let mut queued = Vec::new();
    for _ in 0..3 {
        // Polled once: the call is delivered (queued behind a running turn) and waits.
        let worker = silo.client().grain::<LookupGrain>("hot");
        let mut call = Box::pin(async move { worker.hold().await });
        assert!(futures::poll!(&mut call).is_pending());
        queued.push(call);
    }
    let text = silo.silo().metrics().render().unwrap();
    assert!(text.contains("granary_queued_requests 3"), "{text}");
    let err = silo
        .client()
        .grain::<LookupGrain>("hot")
        .hold()
        .await
        .unwrap_err();
    assert!(
        matches!(err, CallError::QueueFull { limit: 1, .. }),
        "{err:?}"
    );
    gate.permits.add_permits(6);
    for call in calls {
        call.await.unwrap().unwrap();
    }
    for call in queued {
        call.await.unwrap();
    }
    silo.shutdown().await.unwrap();
}

#[tokio::test]
async fn nothing_is_written_to_the_memory_store() {
    let gate = Gate::new();
    let store = Arc::new(MemoryStore::new());
    let silo = Silo::builder()
        .config(config())
        .storage(store.clone())
        .register_with::<LookupGrain>(lookup(&gate, "a"))
        .register::<PlainGrain>()
        .start()
        .await
        .unwrap();
    let worker = silo.client().grain::<LookupGrain>("w");
    let errors = worker.misbehave().await.unwrap();
    let operations: Vec<_> = errors
        .iter()
        .map(|e| match e {
            CallError::StatelessWorker { grain, operation } if grain == worker.id() => {
                operation.as_str()
            }
            other => panic!("not a stateless worker error: {other:?}"),
        })
        .collect();
    assert_eq!(
        operations,
        [
            "write_state",
            "clear_state",
            "publish",
            "register_reminder",
            "unregister_reminder"
        ]
    );
    assert!(!errors[0].is_retryable());
    assert!(
        errors[0].to_string().contains("stateless worker"),
        "{}",
        errors[0]
    );
    worker.served_by().await.unwrap();
    let plain = silo.client().grain::<PlainGrain>("p");
    plain.bump().await.unwrap();

    assert_eq!(store.stored(worker.id()), None, "no claim, no state");
    assert_eq!(store.lookup(worker.id()).await.unwrap(), None);
    assert!(
        store.stored(plain.id()).is_some(),
        "the control reached the store"
    );
    assert!(store.lookup(plain.id()).await.unwrap().is_some());
    assert!(store.outbox_entries().is_empty(), "no event was committed");
    silo.shutdown().await.unwrap();
    assert_eq!(store.stored(worker.id()), None, "nor at deactivation");
}

/// Starts a silo alone on Redis cluster `cluster`, runs `work` against it, stops it, and
/// returns how many keys the cluster has in Redis (removing them).
async fn redis_keys_after<F>(url: &str, cluster: &str, work: F) -> usize
where
    F: AsyncFnOnce(&Silo),
{
    let store = Arc::new(
        RedisStore::connect(RedisConfig::new(url, cluster).shards(4))
            .await
            .unwrap(),
    );
    let gate = Gate::new();
    let silo = Silo::builder()
        .config(config())
        .storage(store.clone())
        .register_with::<LookupGrain>(lookup(&gate, "a"))
        .register::<PlainGrain>()
        .start()
        .await
        .unwrap();
    work(&silo).await;
    assert!(
        store.pending(100).await.unwrap().is_empty(),
        "no event in the outbox"
    );
    silo.shutdown().await.unwrap();
    remove_cluster_keys(url, cluster).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_written_to_redis() {
    let url = shared_redis_url().await;
    let baseline = redis_keys_after(&url, &unique_name("sw-none"), async |_| {}).await;
    let stateless = redis_keys_after(&url, &unique_name("sw-stateless"), async |silo| {
        for key in ["a", "b", "c"] {
            let worker = silo.client().grain::<LookupGrain>(key);
            worker.served_by().await.unwrap();
            assert_eq!(worker.misbehave().await.unwrap().len(), 5);
        }
    })
    .await;
    let control = redis_keys_after(&url, &unique_name("sw-plain"), async |silo| {
        silo.client().grain::<PlainGrain>("p").bump().await.unwrap();
    })
    .await;
    assert_eq!(
        stateless, baseline,
        "stateless workers left no key beyond the silo's own"
    );
    assert!(
        control > baseline,
        "an ordinary grain's write is seen by the same count: {control} vs {baseline}"
    );
}

fn idle(grain: &GrainId) -> impl FnMut(&SiloEvent) -> bool + '_ {
    move |e| matches!(e, SiloEvent::Deactivated(g, DeactivationReason::Idle) if g == grain)
}

/// On tokio's paused clock, alone on the memory store: every collection pass runs in order, and
/// nothing races the collector (see `collection.rs`).
#[tokio::test(start_paused = true)]
async fn idle_workers_are_collected_one_by_one() {
    let gate = Gate::new();
    let silo = TestSilo::start_with(
        SiloConfig {
            collection_quantum: Duration::from_millis(250),
            call_timeout: Duration::from_secs(600),
            ..config()
        },
        |b| b.register_with::<LookupGrain>(lookup(&gate, "a")),
    )
    .await
    .unwrap();
    let id = GrainId::new(LOOKUP, "k");
    let mut events = silo.events().with_deadline(Duration::from_secs(3600));
    // Two overlapping calls: two workers.
    let calls = hold_calls(&silo, "k", 2);
    gate.wait_inside(2).await;
    assert_eq!(silo.silo().activation_count(), 2);
    gate.permits.add_permits(2);
    for call in calls {
        call.await.unwrap().unwrap();
    }
    // A call every 500 ms goes to an idle worker: the first in the pool, kept busy, while the
    // other stays idle past its type's 1 s and is collected.
    let worker = silo.client().grain::<LookupGrain>("k");
    let pinger = tokio::spawn(async move {
        loop {
            worker.served_by().await.unwrap();
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    events.wait_for(idle(&id)).await.unwrap();
    assert!(silo.silo().is_active(&id), "the busy worker stays");
    assert_eq!(silo.silo().activation_count(), 1);
    pinger.abort();
    let _ = pinger.await;
    events.wait_for(idle(&id)).await.unwrap();
    assert!(
        !silo.silo().is_active(&id),
        "the last worker took the pool with it"
    );
    assert_eq!(silo.silo().activation_count(), 0);
    // The next call starts a new pool.
    silo.client()
        .grain::<LookupGrain>("k")
        .served_by()
        .await
        .unwrap();
    assert_eq!(silo.silo().activation_count(), 1);
    silo.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_worker_has_timers_of_its_own_and_deactivates_on_request() {
    let gate = Gate::new();
    let silo = TestSilo::start_with(config(), |b| {
        b.register_with::<LookupGrain>(lookup(&gate, "a"))
    })
    .await
    .unwrap();
    let worker = silo.client().grain::<LookupGrain>("t");
    let mut ticks = gate.ticks.subscribe();
    worker.arm().await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), ticks.wait_for(|t| *t == 1))
        .await
        .unwrap()
        .unwrap();
    assert!(silo.deactivate(worker.id()).await.unwrap());
    assert!(!silo.silo().is_active(worker.id()));
    assert_eq!(silo.silo().activation_count(), 0);
    silo.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_running_turns_finish_and_ends_every_worker() {
    let gate = Gate::new();
    let silo = TestSilo::start_with(config(), |b| {
        b.register_with::<LookupGrain>(lookup(&gate, "a"))
    })
    .await
    .unwrap();
    let id = GrainId::new(LOOKUP, "busy");
    let calls = hold_calls(&silo, "busy", 3);
    gate.wait_inside(3).await;
    let mut events = silo.events();
    let shutdown = tokio::spawn(silo.shutdown());
    gate.permits.add_permits(3);
    for call in calls {
        call.await.unwrap().unwrap();
    }
    shutdown.await.unwrap().unwrap();
    for _ in 0..3 {
        events
            .wait_for(|e| {
                matches!(e, SiloEvent::Deactivated(g, DeactivationReason::Shutdown) if *g == id)
            })
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_zero_maximum_or_an_ordinary_type_is_refused_at_start() {
    let gate = Gate::new();
    let err = TestSilo::start(|b| {
        b.register_with::<LookupGrain>(lookup(&gate, "a"))
            .stateless_workers::<LookupGrain>(0)
    })
    .await
    .unwrap_err();
    assert!(
        matches!(err, StartError::ZeroStatelessWorkers(LOOKUP)),
        "{err:?}"
    );
    assert!(err.to_string().contains("at least 1"), "{err}");
    let err = TestSilo::start(|b| {
        b.register::<PlainGrain>()
            .stateless_workers::<PlainGrain>(2)
    })
    .await
    .unwrap_err();
    assert!(
        matches!(err, StartError::NotStatelessWorker("stateless.plain")),
        "{err:?}"
    );
}

/// Starts silo `name` of Redis cluster `cluster`.
async fn start_member(
    url: &str,
    cluster: &str,
    name: &'static str,
    build: impl FnOnce(SiloBuilder) -> SiloBuilder,
) -> Silo {
    let config = SiloConfig {
        name: name.into(),
        ..config()
    };
    // Placement would put every activation of the key on one silo (the one it hashes to); a
    // stateless worker ignores it where the receiving silo hosts it.
    let hash = |cluster: ClusterConfig| cluster.place(LOOKUP, Placement::Hash);
    let builder = crate::multi_silo::silo_builder(url, cluster, config, hash).await;
    build(builder).start().await.unwrap()
}

/// Waits until every silo sees `n` active members.
async fn settle(silos: &[&Silo], n: usize) {
    for silo in silos {
        let mut events = silo.events();
        if silo.members().len() < n {
            events
                .wait_for(|e| matches!(e, SiloEvent::MembersChanged(m) if m.len() == n))
                .await
                .unwrap();
        }
    }
}

/// A client whose only gateway is `silo` (it does not discover the others).
fn pinned(cluster: &str, silo: &Silo) -> ClientConfig {
    ClientConfig {
        discover: false,
        ..ClientConfig::new(cluster, SECRET, vec![silo.address().unwrap()])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_silo_serves_the_calls_it_receives() {
    let url = shared_redis_url().await;
    let cluster = unique_name("stateless");
    let gate = Gate::new();
    let a = start_member(&url, &cluster, "a", |b| {
        b.register_with::<LookupGrain>(lookup(&gate, "a"))
            .register::<PlainGrain>()
    })
    .await;
    let b = start_member(&url, &cluster, "b", |b| {
        b.register_with::<LookupGrain>(lookup(&gate, "b"))
            .register::<PlainGrain>()
    })
    .await;
    // Silo c does not host the stateless type: a call it receives is placed on a silo that does.
    let c = start_member(&url, &cluster, "c", |b| b.register::<PlainGrain>()).await;
    settle(&[&a, &b, &c], 3).await;

    let key = "catalogue";
    let id = GrainId::new(LOOKUP, key);
    for _ in 0..5 {
        let from_a = a
            .client()
            .grain::<LookupGrain>(key)
            .served_by()
            .await
            .unwrap();
        let from_b = b
            .client()
            .grain::<LookupGrain>(key)
            .served_by()
            .await
            .unwrap();
        assert_eq!((from_a.as_str(), from_b.as_str()), ("a", "b"));
    }
    assert!(
        a.is_active(&id) && b.is_active(&id),
        "one key, active on both"
    );
    assert!(!c.is_active(&id));

    // From a grain: served on the silo the grain lives on.
    for p in 0..6 {
        let plain = c.client().grain::<PlainGrain>(p);
        plain.bump().await.unwrap();
        let served = plain.ask(key.to_owned()).await.unwrap();
        let home = if a.is_active(plain.id()) {
            "a"
        } else if b.is_active(plain.id()) {
            "b"
        } else {
            assert!(c.is_active(plain.id()));
            // From silo c, which does not host the type: placed on a or b.
            assert!(served == "a" || served == "b", "{served}");
            continue;
        };
        assert_eq!(served, home, "grain {p} on {home}");
    }

    // Through a client pinned to one gateway: that gateway serves the call.
    for (silo, name) in [(&a, "a"), (&b, "b")] {
        let client = ClusterClient::connect(pinned(&cluster, silo))
            .await
            .unwrap();
        for _ in 0..3 {
            let served = client.grain::<LookupGrain>(key).served_by().await.unwrap();
            assert_eq!(served, name);
        }
    }
    // A gateway that does not host the type places the call on one that does.
    let client = ClusterClient::connect(pinned(&cluster, &c)).await.unwrap();
    let served = client.grain::<LookupGrain>(key).served_by().await.unwrap();
    assert!(served == "a" || served == "b", "{served}");
    assert!(!c.is_active(&id));
    drop(client);

    for silo in [c, b, a] {
        silo.shutdown().await.unwrap();
    }
    remove_cluster_keys(&url, &cluster).await.unwrap();
}

//! What callers can make a silo hold, and deadlines no arithmetic can overflow: the activation
//! limit, the bound of an activation's queue, the longest grain key (at reference creation, in
//! grain code and on the wire), and `Duration::MAX` timeouts locally and over the wire.

use std::sync::Arc;
use std::time::Duration;

use granary::codec::{self, Envelope};
use granary::{
    CallChain, CallError, DeactivationReason, GrainContext, GrainId, MAX_KEY_LEN, MethodId, Result,
    SiloConfig, SiloEvent, grain,
};
use granary_testkit::TestSilo;
use tokio::sync::Semaphore;

use crate::probe::{Counters, ProbeGrain, silo_with};

/// A grain whose `wait` turn holds the activation until the test adds a permit to the gate.
#[derive(Debug)]
struct GateGrain {
    gate: Arc<Semaphore>,
    entered: Arc<Semaphore>,
}

#[grain(name = "limits.gate", state = ())]
impl GateGrain {
    /// Says it started, then waits for a permit of the gate.
    pub async fn wait(&self, _ctx: &GrainContext<Self>) -> Result<u32> {
        self.entered.add_permits(1);
        self.gate
            .acquire()
            .await
            .expect("the gate is never closed")
            .forget();
        Ok(1)
    }

    /// Asks for deactivation.
    pub async fn retire(&self, ctx: &GrainContext<Self>) -> Result<()> {
        ctx.deactivate_on_idle();
        Ok(())
    }

    /// Answers at once.
    #[read_only]
    pub async fn ping(&self, _ctx: &GrainContext<Self>) -> Result<u32> {
        Ok(2)
    }
}

/// A silo with idle collection out of the way (what is active is what these tests count).
async fn silo(
    tweak: impl FnOnce(SiloConfig) -> SiloConfig,
) -> (TestSilo, Arc<Semaphore>, Arc<Semaphore>) {
    let (gate, entered) = (Arc::new(Semaphore::new(0)), Arc::new(Semaphore::new(0)));
    let (g, e) = (gate.clone(), entered.clone());
    let config = tweak(SiloConfig {
        idle_timeout: Duration::from_secs(600),
        ..SiloConfig::test_profile()
    });
    let silo = TestSilo::start_with(config, move |b| {
        b.register_with::<GateGrain>(move |_| GateGrain {
            gate: g.clone(),
            entered: e.clone(),
        })
    })
    .await
    .expect("silo starts");
    (silo, gate, entered)
}

/// The value of the counter line `name` in the silo's metrics.
fn metric(silo: &TestSilo, name: &str) -> u64 {
    let text = silo.silo().metrics().render().expect("the silo runs");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_silo_refuses_new_activations_and_keeps_serving_the_active_ones() {
    let (silo, _, _) = silo(|c| SiloConfig {
        max_activations: 3,
        ..c
    })
    .await;
    let client = silo.client();
    for key in 0..3 {
        assert_eq!(client.grain::<GateGrain>(key).ping().await.unwrap(), 2);
    }
    let err = client.grain::<GateGrain>(3).ping().await.unwrap_err();
    assert!(
        matches!(&err, CallError::TooManyActivations { limit: 3, .. }),
        "{err}"
    );
    assert!(err.is_retryable(), "{err}");
    assert_eq!(silo.silo().activation_count(), 3);
    for key in 0..3 {
        assert_eq!(client.grain::<GateGrain>(key).ping().await.unwrap(), 2);
    }
    assert_eq!(
        metric(&silo, "granary_refused_total{limit=\"activations\"}"),
        1
    );

    // Once one is gone there is room again.
    let mut events = silo.events();
    let gone = GrainId::new("limits.gate", 0_i64);
    assert!(silo.silo().is_active(&gone));
    client.grain::<GateGrain>(0).retire().await.unwrap();
    events
        .wait_for(|e| matches!(e, SiloEvent::Deactivated(id, DeactivationReason::Requested) if *id == gone))
        .await
        .unwrap();
    assert_eq!(client.grain::<GateGrain>(3).ping().await.unwrap(), 2);
    silo.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_calls_at_once_and_the_queued_ones_still_run() {
    let (silo, gate, entered) = silo(|c| SiloConfig {
        max_queued_requests: 2,
        ..c
    })
    .await;
    let grain = silo.client().grain::<GateGrain>("busy");
    // One turn holds the activation; two calls wait behind it.
    let running = tokio::spawn({
        let grain = grain.clone();
        async move { grain.wait().await }
    });
    entered.acquire().await.unwrap().forget();
    let queued: Vec<_> = (0..2)
        .map(|_| {
            let grain = grain.clone();
            tokio::spawn(async move { grain.wait().await })
        })
        .collect();
    // Wait for both to be queued (the metric counts what waits in queues).
    tokio::time::timeout(Duration::from_secs(20), async {
        while metric(&silo, "granary_queued_requests") < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("two calls queue");
    // Every call beyond the bound is refused at once.
    let err = grain.ping().await.unwrap_err();
    assert!(
        matches!(&err, CallError::QueueFull { limit: 2, .. }),
        "{err}"
    );
    assert!(err.is_retryable(), "{err}");
    assert!(metric(&silo, "granary_refused_total{limit=\"queue\"}") >= 1);
    gate.add_permits(3);
    assert_eq!(running.await.unwrap().unwrap(), 1);
    for call in queued {
        assert_eq!(call.await.unwrap().unwrap(), 1);
    }
    assert_eq!(grain.ping().await.unwrap(), 2);
    silo.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_over_the_limit_are_refused_by_references_grain_code_and_the_wire() {
    let counters = Arc::new(Counters::default());
    let silo = silo_with(&counters, Duration::ZERO, |c| SiloConfig {
        idle_timeout: Duration::from_secs(600),
        ..c
    })
    .await;
    let long = "k".repeat(MAX_KEY_LEN + 1);

    // A reference made with it: its first call fails, nothing is activated.
    let err = silo
        .client()
        .grain::<ProbeGrain>(long.as_str())
        .count()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CallError::InvalidKey { len, limit, .. } if *len == MAX_KEY_LEN + 1 && *limit == MAX_KEY_LEN),
        "{err}"
    );
    assert!(!err.is_retryable());
    assert_eq!(silo.silo().activation_count(), 0);

    // Grain code making one gets the same error back from its call.
    let err = silo
        .client()
        .grain::<ProbeGrain>("asker")
        .ask(long.clone())
        .await
        .unwrap_err();
    assert!(matches!(&err, CallError::InvalidKey { .. }), "{err}");
    assert_eq!(silo.silo().activation_count(), 1, "only the asker");

    // An envelope from the wire with a 64 KiB key.
    let envelope = Envelope {
        target: GrainId::new("probe", "k".repeat(64 * 1024)),
        method: MethodId::of("count"),
        method_name: "count".into(),
        args: codec::encode(&()).unwrap(),
        timeout: Duration::from_secs(2),
        chain: CallChain::root(),
        one_way: false,
        forwards: 0,
    };
    let reply = silo.silo().dispatch_wire(&envelope.encode().unwrap()).await;
    let err = codec::decode::<std::result::Result<Vec<u8>, CallError>>(&reply)
        .unwrap()
        .unwrap_err();
    assert!(matches!(&err, CallError::InvalidKey { .. }), "{err}");
    assert_eq!(silo.silo().activation_count(), 1);
    assert_eq!(metric(&silo, "granary_refused_total{limit=\"key\"}"), 1);

    // An envelope whose call chain names a grain with a 64 KiB key.
    let mut chain = CallChain::root();
    chain
        .grains
        .push(GrainId::new("probe", "c".repeat(64 * 1024)));
    let envelope = Envelope {
        target: GrainId::new("probe", "fine"),
        method: MethodId::of("count"),
        method_name: "count".into(),
        args: codec::encode(&()).unwrap(),
        timeout: Duration::from_secs(2),
        chain,
        one_way: false,
        forwards: 0,
    };
    let reply = silo.silo().dispatch_wire(&envelope.encode().unwrap()).await;
    let err = codec::decode::<std::result::Result<Vec<u8>, CallError>>(&reply)
        .unwrap()
        .unwrap_err();
    assert!(matches!(&err, CallError::InvalidKey { .. }), "{err}");
    assert_eq!(silo.silo().activation_count(), 1, "the call did not run");
    assert_eq!(metric(&silo, "granary_refused_total{limit=\"key\"}"), 2);

    // A key of exactly the limit is fine.
    let longest = "k".repeat(MAX_KEY_LEN);
    assert_eq!(
        silo.client()
            .grain::<ProbeGrain>(longest.as_str())
            .count()
            .await
            .unwrap(),
        0
    );
    silo.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_of_duration_max_is_no_deadline_locally_and_over_the_wire() {
    for wire in [false, true] {
        let (silo, _, _) = silo(|c| SiloConfig {
            wire_local_calls: wire,
            ..c
        })
        .await;
        let grain = silo
            .client()
            .grain::<GateGrain>("patient")
            .with_timeout(Duration::MAX);
        assert_eq!(grain.ping().await.unwrap(), 2, "wire: {wire}");

        // An envelope whose timeout says Duration::MAX.
        let envelope = Envelope {
            target: GrainId::new("limits.gate", "patient"),
            method: MethodId::of("ping"),
            method_name: "ping".into(),
            args: codec::encode(&()).unwrap(),
            timeout: Duration::MAX,
            chain: CallChain::root(),
            one_way: false,
            forwards: 0,
        };
        let reply = silo.silo().dispatch_wire(&envelope.encode().unwrap()).await;
        let reply = codec::decode::<std::result::Result<Vec<u8>, CallError>>(&reply)
            .unwrap()
            .unwrap();
        assert_eq!(codec::decode::<u32>(&reply).unwrap(), 2);
        silo.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_of_duration_max_crosses_silos() {
    use granary::Placement;
    use granary_tests::CounterGrain;

    let silos = crate::multi_silo::cluster(2, Placement::Hash).await;
    // Hash placement spreads the grains: some calls go from silo 0 to silo 1 over the
    // transport, with `Duration::MAX` in their envelope.
    for g in 0..16_i64 {
        let counter = silos[0]
            .client()
            .grain::<CounterGrain>(g)
            .with_timeout(Duration::MAX);
        assert_eq!(counter.bump().await.unwrap().0, 1, "grain {g}");
    }
    let remote = (0..16_i64)
        .filter(|&g| silos[1].is_active(&GrainId::new("cluster.counter", g)))
        .count();
    assert!(remote > 0, "no grain landed on the other silo");
    crate::multi_silo::shutdown(silos).await;
}

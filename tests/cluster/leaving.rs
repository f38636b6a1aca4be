//! A silo leaving gracefully (`Silo::shutdown`, what SIGTERM runs), checked while its shutdown
//! is held in progress: the others take it out of their active members and take over its
//! outbox shards at once (not after failure detection), calls through it are placed on them,
//! and its grains, once deactivated, answer from another silo with their committed state while
//! it is still shutting down (their directory claims were released).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use granary::{
    Client, ClusterConfig, GrainContext, GrainId, Placement, Result, Silo, SiloConfig, SiloEvent,
    SiloMetrics, grain,
};
use granary_redis::{RedisConfig, RedisMembership, RedisStore};
use granary_testkit::redis_server::{shared_redis_url, unique_name};
use granary_tests::CounterGrain;
use tokio::sync::{Notify, Semaphore};

const SECRET: &[u8] = b"a cluster secret of at least 32 bytes";

/// Holds every deactivation until the test releases them all.
#[derive(Debug)]
struct Gate {
    deactivating: Notify,
    release: Semaphore,
}

#[derive(Debug)]
struct HoldGrain {
    gate: Arc<Gate>,
}

#[grain(name = "leaving.hold", state = ())]
impl HoldGrain {
    /// Does nothing: activates the grain.
    pub async fn touch(&self, _ctx: &GrainContext<Self>) -> Result<()> {
        Ok(())
    }

    #[on_deactivate]
    async fn deactivating(&self, _ctx: &GrainContext<Self>) -> Result<()> {
        self.gate.deactivating.notify_one();
        // The permit goes back when dropped: once released, every deactivation passes.
        let _permit = self.gate.release.acquire().await;
        Ok(())
    }
}

/// A gate that lets `permits` deactivations through before it is released.
fn gate(permits: usize) -> Arc<Gate> {
    Arc::new(Gate {
        deactivating: Notify::new(),
        release: Semaphore::new(permits),
    })
}

/// The first key whose held grain, touched through `client`, is active on `silo`.
async fn held_on(client: &Client, silo: &Silo) -> i64 {
    for key in 0..64_i64 {
        client.grain::<HoldGrain>(key).touch().await.unwrap();
        if silo.is_active(&GrainId::new("leaving.hold", key)) {
            return key;
        }
    }
    panic!("hash placement put none of 64 held grains on the silo");
}

async fn start(n: usize, gate: &Arc<Gate>) -> Vec<Silo> {
    let url = shared_redis_url().await;
    let cluster = unique_name("leave");
    let mut silos = Vec::new();
    for i in 0..n {
        let store = Arc::new(
            RedisStore::connect(RedisConfig::new(&url, &cluster).shards(8))
                .await
                .unwrap(),
        );
        let mut config = ClusterConfig::new(&cluster, SECRET, "127.0.0.1:0".parse().unwrap());
        config.placement = Placement::Hash;
        let gate = gate.clone();
        let silo = Silo::builder()
            .config(SiloConfig {
                name: format!("s{i}"),
                // No idle collection under the test: where grains live is what it checks.
                idle_timeout: Duration::from_secs(600),
                ..SiloConfig::test_profile()
            })
            .storage(store.clone())
            .membership(Arc::new(RedisMembership::new(store)))
            .cluster(config.test_profile())
            .register::<CounterGrain>()
            .register_with(move |_| HoldGrain { gate: gate.clone() })
            .start()
            .await
            .unwrap();
        silos.push(silo);
    }
    crate::multi_silo::all_see_each_other(&silos).await;
    silos
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaving_silo_hands_over_members_shards_and_grains_before_it_is_gone() {
    let gate = gate(0);
    let mut silos = start(3, &gate).await;
    let client = silos[0].client();
    // Counters committed once each; the ones that live on the silo that will leave.
    let mut moving = Vec::new();
    for key in 0..24_i64 {
        let (count, _) = client.grain::<CounterGrain>(key).bump().await.unwrap();
        assert_eq!(count, 1);
        if silos[2].is_active(&GrainId::new("cluster.counter", key)) {
            moving.push(key);
        }
    }
    assert!(!moving.is_empty(), "hash placement put a counter on s2");
    // A held grain on the leaving silo keeps its shutdown in progress.
    held_on(&client, &silos[2]).await;

    let leaving = silos.pop().unwrap();
    let through_leaving = leaving.client();
    let leaving_owns = leaving.shard_owner();
    let mut leaving_events = leaving.events();
    let mut others_events: Vec<_> = silos.iter().map(Silo::events).collect();
    let shutdown = tokio::spawn(leaving.shutdown());
    tokio::time::timeout(Duration::from_secs(30), gate.deactivating.notified())
        .await
        .expect("the shutdown deactivates the held grain");

    // Still shutting down (held): the others no longer count it among the active members.
    for (silo, events) in silos.iter().zip(&mut others_events) {
        if silo.members().len() != 2 {
            events
                .wait_for(|e| matches!(e, SiloEvent::MembersChanged(m) if m.len() == 2))
                .await
                .unwrap();
        }
    }
    let owners: Vec<_> = silos.iter().map(Silo::shard_owner).collect();
    for shard in 0..64 {
        assert_eq!(
            (0..2).filter(|&i| owners[i](shard)).count(),
            1,
            "shard {shard} has one owner among the remaining silos"
        );
        assert!(
            !leaving_owns(shard),
            "the leaving silo gave up shard {shard}"
        );
    }
    // A new grain called through the leaving silo is placed on the others.
    let (count, _) = through_leaving
        .grain::<CounterGrain>(1_000)
        .bump()
        .await
        .expect("a call through a silo shutting down is placed on the others");
    assert_eq!(count, 1);
    assert!(
        silos
            .iter()
            .any(|s| s.is_active(&GrainId::new("cluster.counter", 1_000)))
    );
    // Its counters, once deactivated, answer from the others with what they committed.
    let mut pending: HashSet<GrainId> = moving
        .iter()
        .map(|&key| GrainId::new("cluster.counter", key))
        .collect();
    leaving_events
        .wait_for(|e| {
            if let SiloEvent::Deactivated(grain, _) = e {
                pending.remove(grain);
            }
            pending.is_empty()
        })
        .await
        .unwrap();
    for &key in &moving {
        let (count, _) = client.grain::<CounterGrain>(key).bump().await.unwrap();
        assert_eq!(count, 2, "counter {key} kept its committed state");
        let id = GrainId::new("cluster.counter", key);
        assert!(
            silos.iter().any(|s| s.is_active(&id)),
            "counter {key} was activated again on a remaining silo while s2 still shuts down"
        );
    }
    assert!(
        !shutdown.is_finished(),
        "the held grain kept s2 shutting down"
    );

    gate.release.add_permits(1);
    shutdown.await.unwrap().unwrap();
    for silo in silos {
        silo.shutdown().await.unwrap();
    }
}

/// The value of the unlabelled metric `name` in `metrics` (0 when absent).
fn gauge(metrics: &SiloMetrics, name: &str) -> u64 {
    let text = metrics.render().expect("metrics render");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map_or(0, |n| n.parse().expect("a number"))
}

/// A grain's call (here through a silo's own client, which calls as its grains do) to a grain
/// it last found on a silo that has left since is placed again and answered by a remaining
/// silo with the grain's committed state: the caller sees no error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_to_a_grain_on_a_silo_that_left_is_placed_again_and_answered() {
    let gate = gate(1);
    let mut silos = start(3, &gate).await;
    let client = silos[0].client();
    let mut moved = None;
    for key in 0..64_i64 {
        client.grain::<CounterGrain>(key).bump().await.unwrap();
        if silos[2].is_active(&GrainId::new("cluster.counter", key)) {
            moved = Some(key);
            break;
        }
    }
    let key = moved.expect("hash placement put a counter on s2");
    let mut events = silos[0].events();
    silos.pop().unwrap().shutdown().await.unwrap();
    if silos[0].members().len() != 2 {
        events
            .wait_for(|e| matches!(e, SiloEvent::MembersChanged(m) if m.len() == 2))
            .await
            .unwrap();
    }
    let (count, _) = client
        .grain::<CounterGrain>(key)
        .bump()
        .await
        .expect("the call was placed again and answered");
    assert_eq!(count, 2, "the counter kept its committed state");
    for silo in silos {
        silo.shutdown().await.unwrap();
    }
}

/// A grain's call (here through a silo's own client, which calls as its grains do) to a grain
/// that its leaving silo is deactivating waits there, and is answered by a remaining silo once
/// the deactivation released the grain: the caller sees no error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_to_a_grain_its_leaving_silo_deactivates_is_answered_by_another() {
    let gate = gate(0);
    let mut silos = start(3, &gate).await;
    let client = silos[0].client();
    let hold_key = held_on(&client, &silos[2]).await;
    let leaving = silos.pop().unwrap();
    let leaving_metrics = leaving.metrics();
    let shutdown = tokio::spawn(leaving.shutdown());
    tokio::time::timeout(Duration::from_secs(30), gate.deactivating.notified())
        .await
        .expect("the shutdown deactivates the held grain");

    // The held grain's directory entry still names s2, where the call waits behind the
    // deactivation; once that ends, s2 (no longer accepting) sends it on.
    let call = {
        let grain = client
            .grain::<HoldGrain>(hold_key)
            .with_timeout(Duration::from_secs(60));
        tokio::spawn(async move { grain.touch().await })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while gauge(&leaving_metrics, "granary_queued_requests") == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the call never reached the held grain on s2"
        );
        assert!(
            !call.is_finished(),
            "the call ended before reaching s2: {:?}",
            call.await
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    gate.release.add_permits(1);
    call.await
        .unwrap()
        .expect("the call was answered by a remaining silo");
    let id = GrainId::new("leaving.hold", hold_key);
    assert!(
        silos.iter().any(|s| s.is_active(&id)),
        "the held grain answered from a remaining silo"
    );
    shutdown.await.unwrap().unwrap();
    for silo in silos {
        silo.shutdown().await.unwrap();
    }
}

//! Failure detection under partial failures, in-process silos over loopback TCP and Redis: a
//! silo cut off from the others (but not from Redis) cannot vote them out, a silo declared dead
//! cannot link again, a silo that cannot renew its lease stops serving until it does, and a
//! silo killed and restarted at once on its address has its predecessor declared dead.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use granary::provider::{MembershipTable, SiloStatus};
use granary::{CallError, ClusterConfig, Placement, Silo, SiloConfig, SiloEvent, SiloId};
use granary_redis::{RedisConfig, RedisMembership, RedisStore};
use granary_testkit::redis_server::{Persistence, PrivateRedis, shared_redis_url, unique_name};
use granary_tests::CounterGrain;
use granary_transport::{Bytes, Handler, Transport, TransportConfig};

const SECRET: &[u8] = b"a cluster secret of at least 32 bytes";

/// A silo of `cluster` on the Redis at `url`, with the test profile and `missed_probes`.
async fn silo(url: &str, cluster: &str, name: &str, missed_probes: u32) -> Silo {
    silo_at(
        url,
        cluster,
        name,
        missed_probes,
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
}

/// [`silo`], listening on `listen`.
async fn silo_at(
    url: &str,
    cluster: &str,
    name: &str,
    missed_probes: u32,
    listen: std::net::SocketAddr,
) -> Silo {
    let store = Arc::new(
        RedisStore::connect(
            RedisConfig::new(url, cluster)
                .shards(4)
                .command_timeout(Duration::from_millis(300)),
        )
        .await
        .unwrap(),
    );
    let mut config = ClusterConfig::new(cluster, SECRET, listen).test_profile();
    config.placement = Placement::Hash;
    config.missed_probes = missed_probes;
    Silo::builder()
        .config(SiloConfig {
            name: name.to_owned(),
            // Where grains are active is what these tests check: no idle collection.
            idle_timeout: Duration::from_secs(600),
            ..SiloConfig::test_profile()
        })
        .storage(store.clone())
        .membership(Arc::new(RedisMembership::new(store)))
        .cluster(config)
        .register::<CounterGrain>()
        .start()
        .await
        .unwrap()
}

/// Waits until every silo sees all of them.
async fn all_see_each_other(silos: &[Silo]) {
    crate::multi_silo::all_see_each_other(silos).await;
}

async fn table(url: &str, cluster: &str) -> Vec<(String, SiloStatus)> {
    let store = RedisStore::connect(RedisConfig::new(url, cluster))
        .await
        .unwrap();
    let rows = RedisMembership::new(Arc::new(store)).read().await.unwrap();
    rows.entries
        .into_iter()
        .map(|e| (e.silo.name().to_owned(), e.status))
        .collect()
}

/// Answers nothing: a transport that only dials.
struct Mute;

impl Handler for Mute {
    fn request(&self, _: &SiloId, _: Bytes, _: Duration) -> BoxFuture<'static, Vec<u8>> {
        Box::pin(async { Vec::new() })
    }
    fn one_way(&self, _: &SiloId, _: Bytes) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silo_cut_off_from_the_others_cannot_declare_them_dead() {
    let url = shared_redis_url().await;
    let cluster = unique_name("cut");
    // A suspects sooner than B and C (2 missed probes against 4): on the old rules its two
    // votes, cast before theirs, declared one of them dead.
    let silos = vec![
        silo(&url, &cluster, "a", 2).await,
        silo(&url, &cluster, "b", 4).await,
        silo(&url, &cluster, "c", 4).await,
    ];
    all_see_each_other(&silos).await;
    let (a, b, c) = (&silos[0], &silos[1], &silos[2]);
    // A link to B under A's identity (as A's own links are), answered while A is alive.
    let as_a = Transport::bind(
        TransportConfig::new(&cluster, SECRET.to_vec(), a.id().clone()),
        "127.0.0.1:0".parse().unwrap(),
        Arc::new(Mute),
    )
    .await
    .unwrap();
    let answered = as_a
        .request(
            b.address().unwrap(),
            b"ping".to_vec(),
            Duration::from_secs(10),
        )
        .await;
    assert!(answered.is_ok(), "{answered:?}");
    let mut a_events = a.events().with_deadline(Duration::from_secs(30));
    let mut b_events = b.events().with_deadline(Duration::from_secs(30));
    // A loses its links to B and C; all three still reach Redis.
    let faults = a.transport_faults().unwrap();
    faults.cut_silo(b.id());
    faults.cut_silo(c.id());
    a_events
        .wait_for(|e| matches!(e, SiloEvent::DeclaredDead))
        .await
        .expect("B and C declare the cut-off silo dead");
    b_events
        .wait_for(|e| matches!(e, SiloEvent::MembersChanged(m) if m.len() == 2))
        .await
        .unwrap();
    let rows = table(&url, &cluster).await;
    assert_eq!(
        rows,
        vec![
            ("a".to_owned(), SiloStatus::Dead),
            ("b".to_owned(), SiloStatus::Active),
            ("c".to_owned(), SiloStatus::Active),
        ],
        "only the cut-off silo is dead"
    );
    assert_eq!(b.members(), vec![b.id().clone(), c.id().clone()]);
    // B and C serve every grain between them.
    for g in 0..12 {
        b.client().grain::<CounterGrain>(g).bump().await.unwrap();
    }
    // A link with A's identity, opened while A was alive, is closed once B learns A is dead,
    // and A cannot open another: B refuses its handshake.
    let refused = as_a
        .request(
            b.address().unwrap(),
            b"ping".to_vec(),
            Duration::from_secs(10),
        )
        .await;
    assert!(refused.is_err(), "B answered a dead silo: {refused:?}");
    as_a.shutdown().await;
    for silo in silos {
        silo.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_silos_stop_serving_until_they_renew_and_declare_nobody_dead() {
    let mut redis = PrivateRedis::start(Persistence::AofAlways).await;
    let name = unique_name("down");
    let silos = vec![
        silo(&redis.url(), &name, "s0", 2).await,
        silo(&redis.url(), &name, "s1", 2).await,
    ];
    all_see_each_other(&silos).await;
    let mut activations = Vec::new();
    for g in 0..10 {
        activations.push(
            silos[0]
                .client()
                .grain::<CounterGrain>(g)
                .whoami()
                .await
                .unwrap(),
        );
    }
    let mut expired: Vec<_> = silos
        .iter()
        .map(|s| s.events().with_deadline(Duration::from_secs(20)))
        .collect();
    redis.kill();
    for events in &mut expired {
        events
            .wait_for(|e| matches!(e, SiloEvent::LeaseExpired))
            .await
            .expect("the lease runs out without Redis");
    }
    // No answers from memory: every call is refused with a retryable error, on either silo.
    let mut renewed: Vec<_> = silos
        .iter()
        .map(|s| s.events().with_deadline(Duration::from_secs(20)))
        .collect();
    for g in 0..10 {
        let from = &silos[g % 2];
        let err = from
            .client()
            .grain::<CounterGrain>(g as i64)
            .whoami()
            .await
            .expect_err("a silo without its lease served a call");
        assert!(
            matches!(
                err,
                CallError::SiloUnavailable {
                    outcome_unknown: false,
                    ..
                }
            ) && err.is_retryable(),
            "grain {g}: {err}"
        );
    }
    redis.restart().await;
    for events in &mut renewed {
        events
            .wait_for(|e| matches!(e, SiloEvent::LeaseRenewed))
            .await
            .expect("the lease is renewed once Redis is back");
    }
    // The same activations serve again: nobody took them over, since nobody was declared dead.
    for (g, activation) in activations.iter().enumerate() {
        let from = &silos[g % 2];
        let answer = from.client().grain::<CounterGrain>(g as i64).whoami().await;
        assert_eq!(
            answer.as_ref(),
            Ok(activation),
            "grain {g} after Redis is back"
        );
    }
    let rows = table(&redis.url(), &name).await;
    assert!(
        rows.iter().all(|(_, status)| *status == SiloStatus::Active),
        "nobody was declared dead: {rows:?}"
    );
    for silo in silos {
        silo.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silo_killed_and_restarted_on_its_address_has_its_predecessor_declared_dead() {
    let url = shared_redis_url().await;
    let cluster = unique_name("same-address");
    // A and B never suspect a silo that stays silent (1000 missed probes): no probe timing is
    // raced, and only the restarted process's answer can get B's predecessor declared dead.
    let a = silo(&url, &cluster, "a", 1000).await;
    // B runs on a runtime of its own, to be killed with it (no goodbye to the table).
    let side = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let b = side
        .spawn({
            let (url, cluster) = (url.clone(), cluster.clone());
            async move { silo(&url, &cluster, "b", 1000).await }
        })
        .await
        .unwrap();
    let mut events = a.events().with_deadline(Duration::from_secs(30));
    if a.members().len() < 2 {
        events
            .wait_for(|e| matches!(e, SiloEvent::MembersChanged(m) if m.len() == 2))
            .await
            .unwrap();
    }
    for g in 0..12 {
        assert_eq!(
            a.client().grain::<CounterGrain>(g).bump().await.unwrap().0,
            1
        );
    }
    assert!(b.activation_count() > 0, "B hosts some of the grains");
    let (old, address) = (b.id().clone(), b.address().unwrap());
    // SIGKILL, in process: B's tasks, listener and links are dropped with its runtime.
    tokio::task::spawn_blocking(move || side.shutdown_timeout(Duration::from_secs(10)))
        .await
        .unwrap();
    std::mem::forget(b);
    // A new process of B binds the same address at once, under a new generation.
    let restarted = silo_at(&url, &cluster, "b", 2, address).await;
    assert_eq!(restarted.address(), Some(address));
    assert_ne!(restarted.id(), &old);
    for silo in [&a, &restarted] {
        let mut events = silo.events().with_deadline(Duration::from_secs(30));
        if silo.members().contains(&old) {
            events
                .wait_for(|e| matches!(e, SiloEvent::MembersChanged(m) if !m.contains(&old)))
                .await
                .expect("the killed silo is declared dead although its address answers");
        }
    }
    let rows = table(&url, &cluster).await;
    assert_eq!(
        rows.iter().filter(|(_, s)| *s == SiloStatus::Dead).count(),
        1,
        "only the killed silo is dead: {rows:?}"
    );
    // Its grains are served again, from their committed state, through either silo.
    for g in 0..12 {
        let via = if g % 2 == 0 { &a } else { &restarted };
        assert_eq!(
            via.client()
                .grain::<CounterGrain>(g)
                .bump()
                .await
                .unwrap()
                .0,
            2
        );
    }
    restarted.shutdown().await.unwrap();
    a.shutdown().await.unwrap();
}

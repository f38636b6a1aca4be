//! Redis outages: a kill mid-load with AOF `always` loses no acknowledged write and the silo
//! recovers by itself; a Redis that comes back empty is detected, never taken for new grains.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use granary::{CallError, GrainId, Silo, SiloConfig, StorageError};
use granary_redis::{Bootstrap, ConnectError, RedisConfig, RedisStore};
use granary_testkit::redis_server::{Persistence, PrivateRedis};
use tokio::sync::watch;

use crate::counter::CounterGrain;

const GRAINS: u64 = 16;

fn config(server: &PrivateRedis) -> RedisConfig {
    RedisConfig::new(server.url(), "outage").command_timeout(Duration::from_millis(500))
}

async fn silo(store: Arc<RedisStore>) -> Silo {
    Silo::builder()
        .config(SiloConfig {
            // "The active grain" must stay active while Redis is emptied: no idle collection
            // under the tests.
            idle_timeout: Duration::from_secs(600),
            ..SiloConfig::test_profile()
        })
        .storage(store)
        .register::<CounterGrain>()
        .start()
        .await
        .expect("silo starts")
}

/// What one writer saw: the counts acknowledged to it, in order, and its failed calls.
#[derive(Debug, Default)]
struct Seen {
    acked: Vec<u64>,
    failures: Vec<(Duration, CallError)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_killed_mid_load_loses_no_acknowledged_write_and_the_silo_recovers() {
    let mut server = PrivateRedis::start(Persistence::AofAlways).await;
    let store = Arc::new(RedisStore::connect(config(&server)).await.expect("connect"));
    let silo = silo(store.clone()).await;
    let (phase_tx, phase) = watch::channel(0u8);
    let (failed_tx, mut failed) = watch::channel(0usize);
    let failed_tx = Arc::new(failed_tx);
    let writers: Vec<_> = (0..GRAINS)
        .map(|g| {
            let counter = silo.client().grain::<CounterGrain>(g as i64);
            let mut phase = phase.clone();
            let failed_tx = failed_tx.clone();
            tokio::spawn(async move {
                let mut seen = Seen::default();
                let mut acked_since_restart = 0;
                loop {
                    let started = Instant::now();
                    match counter.bump().await {
                        Ok(n) => {
                            seen.acked.push(n);
                            if *phase.borrow() == 2 {
                                acked_since_restart += 1;
                                if acked_since_restart == 20 {
                                    return seen;
                                }
                            }
                        }
                        Err(err) => {
                            seen.failures.push((started.elapsed(), err));
                            failed_tx.send_modify(|n| *n += 1);
                            // Fail fast, then try again (not a tight loop while Redis is down).
                            let _ =
                                tokio::time::timeout(Duration::from_millis(20), phase.changed())
                                    .await;
                        }
                    }
                }
            })
        })
        .collect();

    // Let every writer get acknowledgements, then kill Redis mid-load.
    wait_for_total(&store, 200).await;
    server.kill();
    phase_tx.send_replace(1);
    // Every writer keeps calling: wait until the dead server failed a few of their calls.
    failed
        .wait_for(|n| *n >= 2 * GRAINS as usize)
        .await
        .expect("writers run");
    server.restart().await;
    phase_tx.send_replace(2);

    let mut all_seen = HashMap::new();
    for (g, writer) in writers.into_iter().enumerate() {
        let seen = tokio::time::timeout(Duration::from_secs(60), writer)
            .await
            .expect("the writer recovers by itself")
            .expect("writer task");
        all_seen.insert(g as i64, seen);
    }
    let mut failures = 0;
    for (g, seen) in &all_seen {
        assert!(
            seen.acked.windows(2).all(|w| w[0] < w[1]),
            "grain {g}: a count was acknowledged twice, so an acknowledged write was lost: {:?}",
            seen.acked
        );
        let (data, _) = store
            .read_raw(&GrainId::new("redis.counter", *g))
            .await
            .expect("read");
        let stored: crate::counter::Count =
            granary::codec::state_codec::decode::<CounterGrain>(&data.expect("stored"))
                .expect("decodes");
        assert_eq!(
            Some(&stored.n),
            seen.acked.last(),
            "grain {g}: the last ack is stored"
        );
        for (elapsed, err) in &seen.failures {
            failures += 1;
            assert!(
                matches!(
                    err,
                    CallError::Storage {
                        source: StorageError::Unavailable(_),
                        ..
                    }
                ),
                "grain {g}: {err}"
            );
            assert!(
                *elapsed < Duration::from_secs(3),
                "grain {g}: a call took {elapsed:?} to fail while Redis was down"
            );
        }
    }
    assert!(failures > 0, "the kill was noticed by some call");
    silo.shutdown().await.expect("shutdown");
}

/// Waits until the writers' commits add up to `total` (read from Redis, not guessed by time).
async fn wait_for_total(store: &RedisStore, total: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut sum = 0;
        for g in 0..GRAINS {
            let (_, version) = store
                .read_raw(&GrainId::new("redis.counter", g as i64))
                .await
                .expect("read");
            sum += version;
        }
        if sum >= total {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "writers made {sum} commits in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_comes_back_empty_is_detected() {
    let mut server = PrivateRedis::start(Persistence::None).await;
    let store = Arc::new(RedisStore::connect(config(&server)).await.expect("connect"));
    let silo = silo(store.clone()).await;
    let active = silo.client().grain::<CounterGrain>("active");
    assert_eq!(active.bump().await.expect("bump"), 1);

    server.restart().await; // no persistence: Redis comes back empty

    let data_lost = |err: &CallError| {
        matches!(
            err,
            CallError::Storage {
                source: StorageError::DataLost(_),
                ..
            }
        )
    };
    // The active grain cannot write, and says why (the first try may meet the dropped connection).
    let err = retry_until(|| active.bump(), |e| data_lost(e)).await;
    assert!(
        err.to_string().contains("lost this cluster's data"),
        "{err}"
    );
    // A grain activated now is not re-created with default state.
    let err = silo
        .client()
        .grain::<CounterGrain>("cold")
        .get()
        .await
        .expect_err("no activation on an emptied Redis");
    assert!(data_lost(&err), "{err}");

    // A production silo refuses to start on it; a permissive one starts a new cluster, which the
    // running silo notices as an epoch change.
    let strict = RedisStore::connect(config(&server).bootstrap(Bootstrap::RequireExisting)).await;
    assert!(
        matches!(strict, Err(ConnectError::NoCluster { .. })),
        "{strict:?}"
    );
    let fresh = RedisStore::connect(config(&server))
        .await
        .expect("new cluster");
    assert_ne!(fresh.epoch(), store.epoch());
    let err = silo
        .client()
        .grain::<CounterGrain>("other")
        .get()
        .await
        .expect_err("the old epoch is refused");
    assert!(data_lost(&err), "{err}");
    silo.shutdown().await.expect("shutdown");
}

/// Calls `op` until its error satisfies `wanted` (at most 20 tries); returns that error.
async fn retry_until<F, Fut, T>(op: F, wanted: impl Fn(&CallError) -> bool) -> CallError
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, CallError>>,
    T: std::fmt::Debug,
{
    let mut seen = Vec::new();
    for _ in 0..20 {
        match op().await {
            Err(err) if wanted(&err) => return err,
            other => seen.push(format!("{other:?}")),
        }
    }
    panic!("never got the expected error: {seen:?}");
}

#[tokio::test]
async fn connect_errors_say_what_to_do() {
    let bad_cluster = RedisStore::connect(RedisConfig::new("redis://127.0.0.1:6379", "a{b}")).await;
    assert!(
        matches!(bad_cluster, Err(ConnectError::Config(_))),
        "{bad_cluster:?}"
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let nobody =
        RedisStore::connect(RedisConfig::new(format!("redis://127.0.0.1:{port}"), "c")).await;
    let err = nobody.expect_err("nothing listens there");
    assert!(matches!(err, ConnectError::Unreachable { .. }), "{err:?}");
    assert!(err.to_string().contains("redis-server"), "{err}");
}

//! A stale activation, one that lost its claim, can commit neither state nor events through a
//! real silo; script reloading after Redis forgot the scripts.

use std::sync::Arc;
use std::time::Duration;

use granary::provider::{Claim, GrainAddress, GrainDirectory, Outbox, StateStore};
use granary::{ActivationId, CallError, GrainId, Silo, SiloConfig, SiloId};
use granary_redis::{RedisConfig, RedisStore};
use granary_testkit::redis_server::{Persistence, PrivateRedis, shared_redis_url, unique_name};

use crate::counter::CounterGrain;

async fn silo(store: Arc<RedisStore>) -> Silo {
    Silo::builder()
        .config(SiloConfig {
            // The tests rely on the activation they made still being there (its directory
            // entry, its stale view): no idle collection under them.
            idle_timeout: Duration::from_secs(600),
            ..SiloConfig::test_profile()
        })
        .storage(store)
        .register::<CounterGrain>()
        .start()
        .await
        .expect("silo starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_activation_commits_neither_state_nor_events() {
    let config = RedisConfig::new(shared_redis_url().await, unique_name("fence")).shards(4);
    let store = Arc::new(RedisStore::connect(config).await.expect("connect"));
    let silo = silo(store.clone()).await;
    let counter = silo.client().grain::<CounterGrain>("c");
    assert_eq!(counter.bump().await.expect("bump"), 1);

    // Another silo's activation takes the grain over, as after this silo was declared dead.
    let grain = GrainId::new("redis.counter", "c");
    let stale = store
        .lookup(&grain)
        .await
        .expect("lookup")
        .expect("the activation is registered");
    let rival = GrainAddress {
        grain: grain.clone(),
        silo: SiloId::new("rival", 1),
        activation: ActivationId::new(),
    };
    let claim = store.claim(&rival, Some(&stale)).await.expect("claim");
    assert!(
        matches!(claim, Claim::Won(ref l) if l.version == 1),
        "{claim:?}"
    );

    let err = counter
        .bump()
        .await
        .expect_err("the stale activation is fenced");
    assert!(matches!(err, CallError::StorageConflict { .. }), "{err}");
    let (data, version) = store.read_raw(&grain).await.expect("read");
    assert_eq!(version, 1, "nothing was committed");
    let events = store.pending(1000).await.expect("outbox");
    assert_eq!(
        events.iter().filter(|e| e.id.grain == grain).count(),
        1,
        "only the first bump's event: {events:?}"
    );
    assert!(data.is_some());
    silo.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_are_loaded_again_when_redis_forgot_them() {
    let server = PrivateRedis::start(Persistence::None).await;
    let store = Arc::new(
        RedisStore::connect(RedisConfig::new(server.url(), "scripts"))
            .await
            .expect("connect"),
    );
    let silo = silo(store).await;
    let counter = silo.client().grain::<CounterGrain>("c");
    assert_eq!(counter.bump().await.expect("bump"), 1);
    let client = redis::Client::open(server.url()).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .expect("flush scripts");
    assert_eq!(counter.bump().await.expect("bump after SCRIPT FLUSH"), 2);
    silo.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_silo_restarted_after_a_crash_takes_its_grains_back() {
    let config = RedisConfig::new(shared_redis_url().await, unique_name("solo")).shards(4);
    let store = Arc::new(RedisStore::connect(config).await.expect("connect"));
    let crashed = silo(store.clone()).await;
    assert_eq!(
        crashed
            .client()
            .grain::<CounterGrain>("c")
            .bump()
            .await
            .unwrap(),
        1
    );
    // A crash: no deactivation, the grain's owner entry stays behind.
    drop(crashed);
    // The restarted silo gets a later generation (generations grow within a process).
    let restarted = silo(store).await;
    assert_eq!(
        restarted
            .client()
            .grain::<CounterGrain>("c")
            .bump()
            .await
            .unwrap(),
        2,
        "the restart took the grain back, with its committed state"
    );
    restarted.shutdown().await.expect("shutdown");
}

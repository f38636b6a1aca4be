//! The store on a real Redis Cluster: bad cluster settings fail at connect, and replica-
//! acknowledged commits (`wait_replicas`) survive a killed primary. (The conformance suite
//! runs on a cluster too: `conformance::conformance_on_a_redis_cluster`.)

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use granary::provider::{Claim, Commit, GrainAddress, ReminderTable, StateChange, StateStore};
use granary::{ActivationId, GrainId, SiloId, StorageError};
use granary_redis::{ConnectError, RedisConfig, RedisMembership, RedisStore};
use granary_testkit::redis_cluster::PrivateRedisCluster;
use granary_testkit::redis_server::{Persistence, PrivateRedis, unique_name};

/// Connects, failing the test if that takes longer than 30 s: a bad setting must fail, not hang.
async fn connect(config: RedisConfig) -> Result<RedisStore, ConnectError> {
    bounded(RedisStore::connect(config)).await
}

async fn bounded<T>(op: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), op)
        .await
        .expect("no hang: an answer within 30 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_cluster_settings_fail_at_connect_with_the_cause() {
    // A seed that is a single Redis, not a cluster node.
    let single = PrivateRedis::start(Persistence::None).await;
    let seed = single.url().replace("redis://", "redis+cluster://");
    let err = connect(RedisConfig::new(seed, "c"))
        .await
        .expect_err("a single Redis is no cluster seed");
    assert!(matches!(err, ConnectError::Cluster { .. }), "{err:?}");
    assert!(
        err.to_string().contains("not a Redis Cluster node"),
        "{err}"
    );

    let mut cluster = PrivateRedisCluster::start(0).await;
    let ports = cluster.ports();

    // A single-Redis URL naming a cluster node.
    let err = connect(RedisConfig::new(
        format!("redis://127.0.0.1:{}", ports[0]),
        "c",
    ))
    .await
    .expect_err("a cluster node is no single Redis");
    assert!(matches!(err, ConnectError::Config(_)), "{err:?}");
    assert!(err.to_string().contains("redis+cluster://"), "{err}");

    // The cluster serves: a store connects (through one seed: it learns the others).
    let one_seed = format!("redis+cluster://127.0.0.1:{}", ports[1]);
    let store = connect(RedisConfig::new(&one_seed, unique_name("ok")).shards(4))
        .await
        .expect("a healthy cluster");
    drop(store);

    // A primary dies: its slots are served by nobody.
    cluster.kill_node(ports[0]);
    let url = cluster.url();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let err = loop {
        // The survivors mark the primary failed after `cluster-node-timeout`: until then the
        // cluster still looks whole (and the connect succeeds, or fails on the dead node).
        match connect(RedisConfig::new(&url, unique_name("down")).shards(4)).await {
            Err(err @ ConnectError::Cluster { .. }) => break err,
            other => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the dead primary's slots were never reported: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    // The node asked may still say `cluster_state:ok` while it counts the dead primary's
    // slots as failing (before `cluster-node-timeout`): either way the slots are named.
    let text = err.to_string();
    assert!(
        text.contains("does not serve every slot")
            && text.contains("cluster_state:")
            && text.contains("of 16384 slots served"),
        "{text}"
    );
}

fn address(grain: &GrainId) -> GrainAddress {
    GrainAddress {
        grain: grain.clone(),
        silo: SiloId::new("s", 1),
        activation: ActivationId::new(),
    }
}

fn write(address: &GrainAddress, expected: u64, data: &[u8]) -> Commit {
    Commit {
        grain: address.grain.clone(),
        activation: address.activation,
        expected_version: expected,
        change: StateChange::Write(data.to_vec()),
        events: Vec::new(),
        reminders: Vec::new(),
    }
}

async fn claim(store: &RedisStore, address: &GrainAddress) -> u64 {
    match store.claim(address, None).await.expect("claim") {
        Claim::Won(loaded) => loaded.version,
        other => panic!("claim lost: {other:?}"),
    }
}

/// The port of the primary holding `grain`'s keys: those of its shard, which share the hash
/// tag `{<cluster>:<shard>}` (see the crate docs' key layout).
async fn grain_primary(
    cluster: &PrivateRedisCluster,
    store: &RedisStore,
    name: &str,
    grain: &GrainId,
) -> u16 {
    let shard = store.reminder_shard_of(grain);
    cluster
        .primary_of(&format!("granary:{{{name}:{shard}}}:epoch"))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_acknowledged_commits_survive_a_killed_primary() {
    let mut cluster = PrivateRedisCluster::start(1).await;
    let name = unique_name("wait");
    let config = |url: String| {
        RedisConfig::new(url, &name)
            .shards(4)
            .command_timeout(Duration::from_secs(5))
            .wait_replicas(1, Duration::from_secs(2))
    };
    let store = Arc::new(connect(config(cluster.url())).await.expect("connect"));
    let grain = GrainId::new("wait.list", "a");
    let primary = grain_primary(&cluster, &store, &name, &grain).await;
    let owner = address(&grain);
    let mut version = claim(&store, &owner).await;
    for n in 0..50u32 {
        version = store
            .commit(write(&owner, version, &n.to_be_bytes()))
            .await
            .expect("a commit one replica acknowledged");
    }
    assert_eq!(version, 50);

    // The primary dies at once (SIGKILL: no goodbye to its replica); its replica takes over
    // once the others marked the primary failed (`cluster-node-timeout`).
    let replica = cluster.replicas_of(primary).await[0];
    cluster.kill_node(primary);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !cluster
        .primaries()
        .await
        .iter()
        .any(|(port, _)| *port == replica)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the replica on port {replica} was not promoted within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cluster.wait_until_ok().await;
    let after = connect(config(cluster.url()))
        .await
        .expect("the cluster serves again");
    let (data, stored) = bounded(after.read_raw(&grain)).await.expect("read");
    assert_eq!(
        stored, 50,
        "every acknowledged commit survived the failover"
    );
    assert_eq!(data, Some(49u32.to_be_bytes().to_vec()));

    // The promoted primary has no replica left: a commit there is applied, but reported as
    // not replicated (typed), and the caller learns the numbers.
    // The old activation's claim survived the failover too: replace it.
    let new_owner = address(&grain);
    let loaded = match after.claim(&new_owner, Some(&owner)).await.expect("claim") {
        Claim::Won(loaded) => loaded.version,
        other => panic!("the old owner is replaced: {other:?}"),
    };
    let err = bounded(after.commit(write(&new_owner, loaded, b"late")))
        .await
        .expect_err("no replica can acknowledge");
    assert_eq!(
        err,
        StorageError::NotReplicated {
            wanted: 1,
            acked: 0,
            timeout_ms: 2000
        }
    );

    // The membership table works on the cluster (one key: one slot).
    let table = RedisMembership::new(Arc::new(after));
    granary_testkit::conformance::membership_rows_keep_hosted_types_and_roles(&table).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_replicas_on_one_redis_reports_missing_replicas() {
    let server = PrivateRedis::start(Persistence::None).await;
    let store = connect(
        RedisConfig::new(server.url(), "single-wait").wait_replicas(1, Duration::from_millis(100)),
    )
    .await
    .expect("connect");
    let grain = GrainId::new("wait.list", "b");
    let owner = address(&grain);
    let version = claim(&store, &owner).await;
    let err = bounded(store.commit(write(&owner, version, b"x")))
        .await
        .expect_err("a Redis without replicas acknowledges nothing");
    assert!(
        matches!(
            err,
            StorageError::NotReplicated {
                wanted: 1,
                acked: 0,
                ..
            }
        ),
        "{err:?}"
    );
    // The primary applied it: the outcome was unknown, not a refusal.
    assert_eq!(store.read_raw(&grain).await.expect("read").1, version + 1);

    let refused = connect(
        RedisConfig::new(server.url(), "single-wait").wait_replicas(0, Duration::from_millis(100)),
    )
    .await
    .expect_err("zero replicas is no setting");
    assert!(matches!(refused, ConnectError::Config(_)), "{refused:?}");
}

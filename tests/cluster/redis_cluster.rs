//! Silos on a real Redis Cluster: a list-append load through a `ClusterClient` while
//! `redis-cli --cluster reshard` moves slots, keys and all, between the primaries. The store
//! follows `MOVED`/`ASK` (and `TRYAGAIN` while a shard's keys are half moved); no acknowledged
//! append is lost, and no call fails (a script that saw keys of two slots would fail with
//! `CROSSSLOT`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use granary::{ClientConfig, ClusterClient, SiloBuilder};
use granary_chaos::ListGrain;
use granary_testkit::redis_cluster::PrivateRedisCluster;
use granary_testkit::redis_server::unique_name;

use crate::multi_silo::{SECRET, shutdown, silos_on};

/// Lists under load: with 8 shards over 3 primaries, some of them are in the moved slots.
const LISTS: u64 = 8;

/// Appends `0, 1, 2, …` to list `key` until `stop` (and at least 5 times); returns the values
/// whose append was acknowledged, and the errors of the others.
fn appender(
    client: &ClusterClient,
    key: u64,
    stop: &Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(Vec<u64>, Vec<String>)> {
    let (client, stop) = (client.clone(), stop.clone());
    tokio::spawn(async move {
        let (mut acked, mut failed) = (Vec::new(), Vec::new());
        let mut value = 0;
        while value < 5 || !stop.load(Ordering::Relaxed) {
            let list = client.grain::<ListGrain>(i64::try_from(key).unwrap());
            match list.append(value).await {
                Ok(_) => acked.push(value),
                Err(err) => failed.push(format!("append {value} to list {key}: {err}")),
            }
            value += 1;
        }
        (acked, failed)
    })
}

/// The primary of each of the cluster's 8 shards (by its epoch key, which carries the shard's
/// hash tag).
async fn shard_primaries(redis: &PrivateRedisCluster, name: &str) -> Vec<u16> {
    let mut primaries = Vec::new();
    for shard in 0..8 {
        primaries.push(
            redis
                .primary_of(&format!("granary:{{{name}:{shard}}}:epoch"))
                .await,
        );
    }
    primaries
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resharding_under_load_loses_no_acknowledged_append() {
    let redis = PrivateRedisCluster::start(0).await;
    let name = unique_name("reshard");
    let register = |builder: SiloBuilder| builder.register::<ListGrain>();
    let silos = silos_on(&redis.url(), &name, 2, register, |c| c).await;
    let gateways = silos.iter().map(|s| s.address().unwrap()).collect();
    let mut config = ClientConfig::new(&name, SECRET, gateways);
    config.call_timeout = Duration::from_secs(10);
    let client = ClusterClient::connect(config).await.unwrap();

    let before = shard_primaries(&redis, &name).await;
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..LISTS)
        .map(|key| appender(&client, key, &stop))
        .collect();

    // Move every slot of the primary holding shard 0 away, then half as many back, while the
    // load runs: shard 0's keys move (perhaps twice), and others with them.
    let primaries = redis.primaries().await;
    let from = before[0];
    let to = primaries
        .iter()
        .map(|(port, _)| *port)
        .find(|p| *p != from)
        .unwrap();
    let slots = primaries.iter().find(|(port, _)| *port == from).unwrap().1;
    redis.reshard(from, to, slots).await;
    let moved = shard_primaries(&redis, &name).await;
    redis.reshard(to, from, slots / 2).await;
    stop.store(true, Ordering::Relaxed);

    let mut acked = BTreeMap::new();
    let mut failed = Vec::new();
    for (key, task) in (0..LISTS).zip(load) {
        let (values, errors) = task.await.unwrap();
        acked.insert(key, values);
        failed.extend(errors);
    }
    assert_ne!(
        before, moved,
        "the reshard moved no shard: the test proves nothing"
    );
    assert_eq!(moved[0], to, "shard 0 moved with its primary's slots");
    assert!(
        failed.is_empty(),
        "calls failed during the reshard: {failed:#?}"
    );
    for (key, values) in &acked {
        let list = client
            .grain::<ListGrain>(i64::try_from(*key).unwrap())
            .read()
            .await
            .unwrap();
        assert_eq!(
            &list, values,
            "list {key} holds every acknowledged append, once, in order"
        );
    }
    let total: usize = acked.values().map(Vec::len).sum();
    eprintln!("{total} appends acknowledged while {slots} slots moved and half came back");

    shutdown(silos).await;
}

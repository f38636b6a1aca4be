//! The state-store conformance suite against the Redis store, on the shared Redis.

use std::sync::Arc;

use futures::future::BoxFuture;
use granary::GrainId;
use granary_redis::{RedisConfig, RedisStore};
use granary_testkit::conformance::StoreUnderTest;
use granary_testkit::redis_cluster::PrivateRedisCluster;
use granary_testkit::redis_server::{shared_redis_url, unique_name};

/// A Redis store of a cluster of its own.
pub(crate) struct Harness(pub(crate) Arc<RedisStore>);

impl Harness {
    pub(crate) async fn on(url: &str) -> Self {
        let config = RedisConfig::new(url, unique_name("conf")).shards(8);
        Self(Arc::new(
            RedisStore::connect(config).await.expect("connect"),
        ))
    }

    pub(crate) async fn shared() -> Self {
        Self::on(&shared_redis_url().await).await
    }
}

impl StoreUnderTest for Harness {
    type Store = RedisStore;

    fn store(&self) -> Arc<RedisStore> {
        self.0.clone()
    }

    fn put_raw<'a>(&'a self, grain: &'a GrainId, data: &'a [u8]) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            self.0.put_raw(grain, data).await.expect("put_raw");
        })
    }

    fn read_raw<'a>(&'a self, grain: &'a GrainId) -> BoxFuture<'a, (Option<Vec<u8>>, u64)> {
        Box::pin(async move { self.0.read_raw(grain).await.expect("read_raw") })
    }
}

granary_testkit::store_conformance_tests!(Harness::shared());

// The same cases on a private 3-primary Redis Cluster, one test sharing one cluster.
granary_testkit::store_conformance_tests!(in_one_test conformance_on_a_redis_cluster, {
    let cluster = Arc::new(PrivateRedisCluster::start(0).await);
    move || {
        let url = cluster.url();
        async move { Harness::on(&url).await }
    }
});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_rows_keep_hosted_types_and_roles() {
    let table = granary_redis::RedisMembership::new(Harness::shared().await.0);
    granary_testkit::conformance::membership_rows_keep_hosted_types_and_roles(&table).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silos_publish_their_http_address_for_the_dashboards() {
    let table = granary_redis::RedisMembership::new(Harness::shared().await.0);
    assert!(table.http_addresses().await.unwrap().is_empty(), "none yet");
    let (a, b) = (granary::SiloId::new("a", 1), granary::SiloId::new("b", 2));
    table
        .publish_http_address(&a, "10.0.0.1:9100")
        .await
        .unwrap();
    table
        .publish_http_address(&b, "10.0.0.2:9100")
        .await
        .unwrap();
    // A silo that publishes again (a new port) replaces its address.
    table
        .publish_http_address(&a, "10.0.0.1:9200")
        .await
        .unwrap();
    let mut published = table.http_addresses().await.unwrap();
    published.sort_by(|x, y| x.0.name().cmp(y.0.name()));
    assert_eq!(
        published,
        [
            (a, "10.0.0.1:9200".to_owned()),
            (b, "10.0.0.2:9100".to_owned())
        ]
    );
    // Another cluster's table on the same Redis sees none of them.
    let other = granary_redis::RedisMembership::new(Harness::shared().await.0);
    assert!(other.http_addresses().await.unwrap().is_empty());
}

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

//! Grain interfaces: a `#[grain_interface]` trait declared in one module (`api`, standing for
//! an interface crate), implemented in another (`imp`), and called with only the interface's
//! reference: on a test silo through the wire codec, in a `GrainTest` with the interface's
//! mock, and across silos from a `ClusterClient` on a real Redis. A plain `#[grain]` of the
//! same name (`plain`) interoperates with it in both directions.

use std::sync::Arc;
use std::time::Duration;

use granary::{
    ClientConfig, ClusterClient, ClusterConfig, Grain, GrainId, GrainInterface, Placement, Silo,
    SiloConfig,
};
use granary_redis::{RedisConfig, RedisMembership, RedisStore};
use granary_testkit::redis_server::{shared_redis_url, unique_name};
use granary_testkit::{GrainTest, TestSilo};

const SECRET: &[u8] = b"a cluster secret of at least 32 bytes";

/// The interface "crate": `granary` only, no grain logic.
mod api {
    use granary::{CallError, Result, grain_interface};
    use serde::{Deserialize, Serialize};

    /// Why spending failed.
    #[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub enum ScoreError {
        /// Fewer points than asked for.
        Short { have: u32 },
        /// The call failed.
        Call(CallError),
    }

    impl From<CallError> for ScoreError {
        fn from(err: CallError) -> Self {
            Self::Call(err)
        }
    }

    /// A score keeper.
    #[grain_interface(name = "iface.score")]
    pub trait Score {
        /// Adds points; returns the total.
        async fn add(&self, points: u32) -> Result<u32>;
        /// The total.
        #[read_only]
        async fn total(&self) -> Result<u32>;
        /// Adds one point, without waiting.
        #[one_way]
        async fn bump(&self) -> Result<()>;
        /// Takes points away; fails with a domain error when short.
        async fn spend(&self, points: u32) -> Result<u32, ScoreError>;
        /// Adds points to another score, through the interface's reference; returns its total.
        async fn add_to(&self, other: String, points: u32) -> Result<u32>;
    }
}

/// The game "crate": the implementation, checked against `api::Score` by the compiler.
mod imp {
    use granary::{GrainContext, Result, grain};

    use super::api::{ScoreError, ScoreRef};

    #[derive(Default)]
    pub struct ScoreGrain;

    #[grain(implements = super::api::Score, state = u32, idle_after = "never")]
    impl ScoreGrain {
        pub async fn add(&self, ctx: &GrainContext<Self>, points: u32) -> Result<u32> {
            let total = {
                let mut total = ctx.state();
                *total += points;
                *total
            };
            ctx.write_state().await?;
            Ok(total)
        }

        // Repeats the interface's flag (checked against it at compile time).
        #[read_only]
        pub async fn total(&self, ctx: &GrainContext<Self>) -> Result<u32> {
            Ok(*ctx.state())
        }

        pub async fn bump(&self, ctx: &GrainContext<Self>) -> Result<()> {
            *ctx.state() += 1;
            ctx.write_state().await
        }

        pub async fn spend(
            &self,
            ctx: &GrainContext<Self>,
            points: u32,
        ) -> Result<u32, ScoreError> {
            let have = *ctx.state();
            let left = have.checked_sub(points).ok_or(ScoreError::Short { have })?;
            *ctx.state() = left;
            ctx.write_state().await?;
            Ok(left)
        }

        pub async fn add_to(
            &self,
            ctx: &GrainContext<Self>,
            other: String,
            points: u32,
        ) -> Result<u32> {
            ctx.grain::<ScoreRef>(other).add(points).await
        }
    }
}

/// A plain `#[grain]` of the same type name with a subset of the methods: its reference and
/// the interface's speak the same wire.
mod plain {
    use granary::{GrainContext, Result, grain};

    #[derive(Default)]
    pub struct PlainScore;

    #[grain(name = "iface.score", state = u32)]
    impl PlainScore {
        pub async fn add(&self, ctx: &GrainContext<Self>, points: u32) -> Result<u32> {
            let total = {
                let mut total = ctx.state();
                *total += points;
                *total
            };
            ctx.write_state().await?;
            Ok(total)
        }

        pub async fn total(&self, ctx: &GrainContext<Self>) -> Result<u32> {
            Ok(*ctx.state())
        }
    }
}

use api::{ScoreError, ScoreRef};
use imp::ScoreGrain;
use plain::PlainScore;

/// A test silo whose local calls go through the wire codec, as calls between silos do.
async fn wire_silo(setup: impl FnOnce(granary::SiloBuilder) -> granary::SiloBuilder) -> TestSilo {
    let config = SiloConfig {
        wire_local_calls: true,
        idle_timeout: Duration::from_secs(600),
        ..SiloConfig::test_profile()
    };
    TestSilo::start_with(config, setup).await.unwrap()
}

#[test]
fn the_interface_and_its_implementation_agree_on_name_methods_and_ids() {
    assert_eq!(<ScoreRef as GrainInterface>::TYPE_NAME, "iface.score");
    assert_eq!(<ScoreGrain as Grain>::TYPE_NAME, "iface.score");
    assert_eq!(
        <ScoreGrain as Grain>::METHODS,
        <ScoreRef as GrainInterface>::METHODS
    );
    // The plain grain's ids are the interface's for the same names: FNV-1a of the name.
    for method in <PlainScore as Grain>::METHODS {
        let twin = <ScoreRef as GrainInterface>::METHODS
            .iter()
            .find(|m| m.name == method.name)
            .unwrap();
        assert_eq!(twin.id, method.id, "{}", method.name);
    }
    let flags: Vec<_> = <ScoreRef as GrainInterface>::METHODS
        .iter()
        .map(|m| (m.name, m.read_only, m.one_way))
        .collect();
    assert_eq!(
        flags,
        [
            ("add", false, false),
            ("total", true, false),
            ("bump", false, true),
            ("spend", false, false),
            ("add_to", false, false),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interface_and_plain_references_interoperate_through_the_wire_codec() {
    let silo = wire_silo(|b| b.register::<ScoreGrain>()).await;
    let client = silo.client();
    // The lookup by interface and by implementation give the same reference.
    let score: ScoreRef = client.grain::<ScoreRef>("ann");
    assert_eq!(score, client.grain::<ScoreGrain>("ann"));
    assert_eq!(score.add(5).await, Ok(5));
    score.bump().await.unwrap();
    assert_eq!(score.add(0).await, Ok(6), "the one-way bump ran first");
    assert_eq!(score.spend(10).await, Err(ScoreError::Short { have: 6 }));
    assert_eq!(score.spend(2).await, Ok(4));
    assert_eq!(score.add_to("bo".into(), 7).await, Ok(7));
    assert_eq!(client.grain::<ScoreRef>("bo").total().await, Ok(7));
    // A plain grain's reference of the same name reaches the implementation.
    let same = client.grain::<PlainScore>("ann");
    assert_eq!(same.add(10).await, Ok(14));
    assert_eq!(same.total().await, Ok(14));
    assert_eq!(score.total().await, Ok(14));
    silo.shutdown().await.unwrap();

    // And the interface's reference reaches a plain grain of the same name.
    let silo = wire_silo(|b| b.register::<PlainScore>()).await;
    let score = silo.client().grain::<ScoreRef>("cy");
    assert_eq!(score.add(3).await, Ok(3));
    assert_eq!(silo.client().grain::<PlainScore>("cy").total().await, Ok(3));
    // A method the plain grain lacks is an unknown method there, not a misdispatch.
    let err = score.spend(1).await.unwrap_err();
    assert!(
        matches!(
            err,
            ScoreError::Call(granary::CallError::UnknownMethod { .. })
        ),
        "{err:?}"
    );
    silo.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_grain_test_drives_the_implementation_and_mocks_the_interface() {
    let kit = GrainTest::<ScoreGrain>::new("ann").await.unwrap();
    let me: ScoreRef = kit.reference();
    assert_eq!(me.add(4).await, Ok(4));
    assert_eq!(*kit.state(), 4);
    // The other score is answered by the interface's mock.
    kit.mock::<ScoreRef>()
        .key("bo")
        .add(|_, points| Ok(points * 10));
    assert_eq!(me.add_to("bo".into(), 3).await, Ok(30));
    let calls = kit.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].target, GrainId::new("iface.score", "bo"));
    assert_eq!(calls[0].method, "add");
    // A grain with no reply declared fails the call, naming the method.
    let err = me.add_to("cy".into(), 1).await.unwrap_err();
    assert!(
        matches!(err, granary::CallError::Rejected { .. }),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_client_calls_grains_across_silos_through_the_interface_alone() {
    let url = shared_redis_url().await;
    let cluster = unique_name("iface");
    let mut silos: Vec<Silo> = Vec::new();
    for i in 0..2 {
        let store = Arc::new(
            RedisStore::connect(RedisConfig::new(&url, &cluster).shards(8))
                .await
                .unwrap(),
        );
        let mut config =
            ClusterConfig::new(&cluster, SECRET, "127.0.0.1:0".parse().unwrap()).test_profile();
        config.placement = Placement::Hash;
        let silo = Silo::builder()
            .config(SiloConfig {
                name: format!("s{i}"),
                idle_timeout: Duration::from_secs(600),
                ..SiloConfig::test_profile()
            })
            .storage(store.clone())
            .membership(Arc::new(RedisMembership::new(store)))
            .cluster(config)
            .register::<ScoreGrain>()
            .start()
            .await
            .unwrap();
        silos.push(silo);
    }
    crate::multi_silo::all_see_each_other(&silos).await;
    let gateways = silos.iter().map(|s| s.address().unwrap()).collect();
    let client = ClusterClient::connect(ClientConfig::new(&cluster, SECRET, gateways))
        .await
        .unwrap();
    // Enough keys that hash placement puts some on each silo.
    let keys: Vec<String> = (0..12).map(|i| format!("p{i}")).collect();
    for (i, key) in keys.iter().enumerate() {
        let points = u32::try_from(i).unwrap() + 1;
        assert_eq!(
            client.grain::<ScoreRef>(key.as_str()).add(points).await,
            Ok(points)
        );
    }
    let home = |key: &str| {
        let id = GrainId::new("iface.score", key);
        (0..silos.len()).find(|&s| silos[s].is_active(&id)).unwrap()
    };
    let (a, b) = keys
        .iter()
        .flat_map(|a| keys.iter().map(move |b| (a, b)))
        .find(|(a, b)| home(a) != home(b))
        .expect("hash placement spreads twelve grains over both silos");
    // A grain calls one on the other silo through the interface's reference.
    let before = client.grain::<ScoreRef>(b.as_str()).total().await.unwrap();
    assert_eq!(
        client
            .grain::<ScoreRef>(a.as_str())
            .add_to(b.clone(), 100)
            .await,
        Ok(before + 100)
    );
    // A domain error crosses the transport typed; a one-way call is delivered.
    assert_eq!(
        client.grain::<ScoreRef>(a.as_str()).spend(1_000).await,
        Err(ScoreError::Short {
            have: client.grain::<ScoreRef>(a.as_str()).total().await.unwrap()
        })
    );
    client.grain::<ScoreRef>(b.as_str()).bump().await.unwrap();
    // A one-way call is not ordered with the calls after it (the client spreads its calls over
    // both gateways): wait until its effect shows.
    tokio::time::timeout(Duration::from_secs(10), async {
        while client.grain::<ScoreRef>(b.as_str()).total().await != Ok(before + 101) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the one-way bump is applied");
    client.close().await;
    for silo in silos {
        silo.shutdown().await.unwrap();
    }
}

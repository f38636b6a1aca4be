//! The kit's own helpers: typed mocks answering a `GrainTest`'s calls for one key or any key,
//! the virtual wall clock behind `ctx.now()` in `GrainTest` and `TestSilo`, deactivating one
//! grain of a `TestSilo` on demand, removing a test cluster's keys from a shared Redis, and a
//! request context set on a `GrainTest` call.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use granary::{CallError, DeactivationReason, GrainContext, Result, SiloEvent, grain};
use granary_redis::{RedisConfig, RedisStore};
use granary_testkit::redis_server::{
    CleanupError, remove_cluster_keys, shared_redis_url, unique_name,
};
use granary_testkit::{GrainTest, TestSilo, virtual_epoch};
use serde::{Deserialize, Serialize};

/// One energy point comes back every minute, up to 100, also while the grain is not active.
const REFILL: Duration = Duration::from_secs(60);
const MAX_ENERGY: u32 = 100;

/// Energy points and when they were last brought up to date.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Energy {
    points: u32,
    /// When `points` was last brought up to date.
    at: Option<SystemTime>,
}

/// Why energy could not be spent: the grain's own error type, delivered typed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EnergyError {
    /// Fewer points than asked for.
    NotEnough {
        /// The points there are.
        have: u32,
    },
    /// The call failed.
    Call(CallError),
}

impl From<CallError> for EnergyError {
    fn from(err: CallError) -> Self {
        Self::Call(err)
    }
}

/// A player's energy.
#[derive(Debug, Default)]
pub struct EnergyGrain;

#[grain(name = "energy", state = Energy)]
impl EnergyGrain {
    /// Spends `n` points; returns what is left.
    pub async fn spend(
        &self,
        ctx: &GrainContext<Self>,
        n: u32,
    ) -> std::result::Result<u32, EnergyError> {
        let left = {
            let mut state = ctx.state();
            if state.points < n {
                return Err(EnergyError::NotEnough { have: state.points });
            }
            state.points -= n;
            state.points
        };
        ctx.write_state().await?;
        Ok(left)
    }

    /// The points now.
    #[read_only]
    pub async fn points(&self, ctx: &GrainContext<Self>) -> Result<u32> {
        Ok(ctx.state().points)
    }

    /// Catches up on the refills since the stored time.
    #[on_activate]
    async fn catch_up(&self, ctx: &GrainContext<Self>) -> Result<()> {
        let now = ctx.now();
        let mut state = ctx.state();
        let Some(at) = state.at else {
            state.points = MAX_ENERGY;
            state.at = Some(now);
            return Ok(());
        };
        let elapsed = now.duration_since(at).unwrap_or_default();
        let refills = elapsed.as_secs() / REFILL.as_secs();
        let refills = u32::try_from(refills).unwrap_or(u32::MAX);
        state.points = state.points.saturating_add(refills).min(MAX_ENERGY);
        // Keep the part of a minute not refilled yet (nothing is pending when full).
        state.at = Some(if state.points == MAX_ENERGY {
            now
        } else {
            at + REFILL * refills
        });
        Ok(())
    }
}

/// Sells to players, paying with their energy: the grain under test of the mock tests.
#[derive(Debug, Default)]
pub struct ShopGrain;

#[grain(name = "shop", state = ())]
impl ShopGrain {
    /// Spends `price` of `buyer`'s energy: what is left, or why not.
    pub async fn buy(
        &self,
        ctx: &GrainContext<Self>,
        buyer: String,
        price: u32,
    ) -> Result<std::result::Result<u32, EnergyError>> {
        Ok(ctx.grain::<EnergyGrain>(buyer).spend(price).await)
    }

    /// The `user` of the call's request context.
    pub async fn whoami(&self, ctx: &GrainContext<Self>) -> Result<Option<String>> {
        Ok(ctx.request_context().get("user").map(str::to_owned))
    }

    /// The energy of all `buyers` together.
    pub async fn total(&self, ctx: &GrainContext<Self>, buyers: Vec<String>) -> Result<u32> {
        let mut total = 0;
        for buyer in buyers {
            total += ctx.grain::<EnergyGrain>(buyer).points().await?;
        }
        Ok(total)
    }
}

#[tokio::test]
async fn a_mock_answers_for_one_key_and_for_any_key_with_the_key_called() {
    let kit = GrainTest::<ShopGrain>::new("s-1").await.unwrap();
    let energy = kit.mock::<EnergyGrain>();
    energy.key("ann").points(|_| Ok(7));
    energy
        .any_key()
        .points(|key| Ok(u32::try_from(key.len()).unwrap()));
    let buyers = ["ann", "bobby", "cid"].map(String::from).to_vec();
    assert_eq!(
        kit.reference().total(buyers.clone()).await.unwrap(),
        7 + 5 + 3,
        "ann has her own reply, declared first; the others get the any-key reply"
    );
    let called: Vec<String> = kit.calls().iter().map(|c| c.target.to_string()).collect();
    assert_eq!(called, ["energy/ann", "energy/bobby", "energy/cid"]);

    energy.any_key().points(|_| Ok(1));
    energy.key("cid").points(|_| Ok(100));
    assert_eq!(
        kit.reference().total(buyers).await.unwrap(),
        7 + 1 + 100,
        "a later declaration replaces the earlier one for its keys only"
    );
}

#[tokio::test]
async fn a_grain_test_call_carries_a_request_context_into_the_grain_and_its_calls() {
    let kit = GrainTest::<ShopGrain>::new("s-1").await.unwrap();
    kit.mock::<EnergyGrain>().any_key().points(|_| Ok(1));
    let shop = kit.reference().with_context("user", "ann");
    assert_eq!(shop.whoami().await.unwrap().as_deref(), Some("ann"));
    assert_eq!(kit.reference().whoami().await.unwrap(), None);
    shop.total(vec!["ann".into()]).await.unwrap();
    let calls = kit.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(
        calls[0].context.get("user"),
        Some("ann"),
        "inherited by the shop's call"
    );
}

#[tokio::test]
async fn a_mock_of_a_method_with_a_domain_error_delivers_it_typed() {
    let kit = GrainTest::<ShopGrain>::new("s-1").await.unwrap();
    kit.mock::<EnergyGrain>()
        .key("poor")
        .spend(|_, price| Err(EnergyError::NotEnough { have: price - 1 }));
    kit.mock::<EnergyGrain>()
        .key("rich")
        .spend(|_, price| Ok(100 - price));
    let shop = kit.reference();
    assert_eq!(
        shop.buy("poor".into(), 10).await.unwrap(),
        Err(EnergyError::NotEnough { have: 9 }),
        "the mock's domain error reaches the caller as the grain's own would"
    );
    assert_eq!(shop.buy("rich".into(), 10).await.unwrap(), Ok(90));
    let down = CallError::Unavailable {
        grain: granary::GrainId::new("energy", "down"),
        attempts: 3,
    };
    let failed = down.clone();
    kit.mock::<EnergyGrain>()
        .key("down")
        .spend(move |_, _| Err(failed.clone().into()));
    assert_eq!(
        shop.buy("down".into(), 1).await.unwrap(),
        Err(EnergyError::Call(down)),
        "a failed call stands in as the caller would see it"
    );
    let Err(EnergyError::Call(CallError::Rejected { grain, reason })) =
        shop.buy("nobody".into(), 1).await.unwrap()
    else {
        panic!("a call with no reply declared is rejected");
    };
    assert_eq!(grain.to_string(), "energy/nobody");
    assert!(
        reason.contains("no reply declared for energy/nobody.spend"),
        "{reason}"
    );
    let prices: Vec<u32> = kit.calls().iter().map(|c| c.args::<(u32,)>().0).collect();
    assert_eq!(
        prices,
        [10, 10, 1, 1],
        "every call is recorded, answered or not"
    );
}

#[tokio::test]
async fn grain_test_catches_up_from_a_stored_time_on_its_virtual_clock() {
    let stored = Energy {
        points: 10,
        at: Some(virtual_epoch() - Duration::from_secs(30 * 60 + 59)),
    };
    let mut kit = GrainTest::<EnergyGrain>::with_state("p-1", &stored)
        .await
        .unwrap();
    assert_eq!(kit.wall_time(), virtual_epoch());
    assert_eq!(
        kit.reference().points().await.unwrap(),
        40,
        "30 whole minutes passed"
    );
    assert_eq!(kit.reference().spend(35).await.unwrap(), 5);
    assert_eq!(
        kit.reference().spend(6).await,
        Err(EnergyError::NotEnough { have: 5 }),
        "the grain's own error, typed"
    );
    kit.advance(Duration::from_secs(7 * 60)).await;
    assert_eq!(kit.wall_time(), virtual_epoch() + Duration::from_secs(420));
    kit.reactivate().await.unwrap();
    // 59 s were left over before, plus 7 min: 7 refills, and 59 s still pending.
    assert_eq!(kit.reference().points().await.unwrap(), 12);
    kit.advance(Duration::from_secs(3 * 3600)).await;
    kit.reactivate().await.unwrap();
    assert_eq!(kit.reference().points().await.unwrap(), MAX_ENERGY);
}

#[tokio::test]
async fn a_test_silo_moves_its_clock_and_deactivates_one_grain_on_demand() {
    let silo = TestSilo::start(|b| b.register::<EnergyGrain>())
        .await
        .unwrap();
    assert_eq!(granary::Clock::now(silo.clock()), virtual_epoch());
    let player = silo.client().grain::<EnergyGrain>("p-2");
    let other = silo.client().grain::<EnergyGrain>("p-3");
    assert_eq!(player.spend(100).await.unwrap(), 0);
    assert_eq!(other.spend(50).await.unwrap(), 50);
    assert_eq!(
        player.spend(1).await,
        Err(EnergyError::NotEnough { have: 0 })
    );

    silo.clock().advance(Duration::from_secs(25 * 60));
    assert_eq!(
        player.points().await.unwrap(),
        0,
        "an active grain catches up only when it activates again"
    );
    let mut events = silo.events();
    assert!(silo.deactivate(player.id()).await.unwrap());
    assert!(!silo.silo().is_active(player.id()));
    assert!(
        silo.silo().is_active(other.id()),
        "only the grain asked for goes"
    );
    let event = events
        .wait_for(|e| matches!(e, SiloEvent::Deactivated(..)))
        .await
        .unwrap();
    assert_eq!(
        event,
        SiloEvent::Deactivated(player.id().clone(), DeactivationReason::Requested)
    );
    assert_eq!(
        player.points().await.unwrap(),
        25,
        "the next activation caught up on 25 minutes of virtual time"
    );
    assert!(
        !silo
            .deactivate(&granary::GrainId::new("energy", "never-called"))
            .await
            .unwrap(),
        "a grain without an activation is left alone"
    );
    silo.shutdown().await.unwrap();
}

/// A stateless worker: counts the calls its activation served.
#[derive(Debug, Default)]
pub struct TokenGrain {
    served: std::sync::atomic::AtomicU32,
}

#[grain(name = "kit.token", stateless_worker = 2)]
impl TokenGrain {
    /// Whether `token` is valid; how many calls this activation served.
    pub async fn check(&self, ctx: &GrainContext<Self>, token: String) -> Result<(bool, u32)> {
        let _ = ctx;
        let served = self
            .served
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        Ok((token.starts_with("ok-"), served))
    }

    /// Tries to save: refused, a stateless worker has no state.
    pub async fn save(&self, ctx: &GrainContext<Self>) -> Result<()> {
        ctx.write_state().await
    }
}

#[tokio::test]
async fn grain_test_and_test_silo_host_a_stateless_worker() {
    let kit = GrainTest::<TokenGrain>::new("eu").await.unwrap();
    assert_eq!(
        kit.reference().check("ok-1".into()).await.unwrap(),
        (true, 1)
    );
    assert_eq!(
        kit.reference().check("bad".into()).await.unwrap(),
        (false, 2)
    );
    let err = kit.reference().save().await.unwrap_err();
    assert!(
        matches!(&err, CallError::StatelessWorker { operation, .. } if operation == "write_state"),
        "{err:?}"
    );
    assert_eq!(
        kit.store().stored(kit.id()),
        None,
        "nothing stored, not even a claim"
    );

    let silo = TestSilo::start(|b| b.register::<TokenGrain>())
        .await
        .unwrap();
    let token = silo.client().grain::<TokenGrain>("eu");
    assert_eq!(token.check("ok-2".into()).await.unwrap(), (true, 1));
    assert_eq!(silo.store().stored(token.id()), None);
    assert!(silo.deactivate(token.id()).await.unwrap());
    assert!(!silo.silo().is_active(token.id()));
    silo.shutdown().await.unwrap();
}

/// The keys of `cluster` on the Redis at `url`, found the way an operator would.
async fn keys_of(url: &str, cluster: &str) -> Vec<String> {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut keys = Vec::new();
    for pattern in [
        format!("granary:{cluster}:*"),
        format!("granary:{{{cluster}:*"),
    ] {
        let mut found: Vec<String> = redis::cmd("KEYS")
            .arg(&pattern)
            .query_async(&mut conn)
            .await
            .unwrap();
        keys.append(&mut found);
    }
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_cluster_keys_removes_one_clusters_keys_and_nothing_else() {
    let url = shared_redis_url().await;
    let cluster = unique_name("kit-clean");
    // A neighbour whose id starts with the first one's: its keys must survive.
    let neighbour = format!("{cluster}-2");
    for id in [&cluster, &neighbour] {
        let store = RedisStore::connect(RedisConfig::new(url.clone(), id.as_str()).shards(4))
            .await
            .unwrap();
        let silo = granary::Silo::builder()
            .register::<EnergyGrain>()
            .storage(Arc::new(store))
            .start()
            .await
            .unwrap();
        silo.client()
            .grain::<EnergyGrain>("p-4")
            .spend(1)
            .await
            .unwrap();
        silo.shutdown().await.unwrap();
    }
    let before = keys_of(&url, &cluster).await;
    assert!(
        before.iter().any(|k| k.contains(":grain:")),
        "the grain's state was stored: {before:?}"
    );
    assert!(before.iter().any(|k| k.ends_with(":meta")), "{before:?}");
    let neighbour_keys = keys_of(&url, &neighbour).await;

    let removed = remove_cluster_keys(&url, &cluster).await.unwrap();
    assert_eq!(removed, before.len());
    assert_eq!(keys_of(&url, &cluster).await, Vec::<String>::new());
    assert_eq!(
        keys_of(&url, &neighbour).await.len(),
        neighbour_keys.len(),
        "the neighbour cluster kept its keys"
    );
    assert_eq!(remove_cluster_keys(&url, &cluster).await.unwrap(), 0);
    assert_eq!(
        remove_cluster_keys(&url, &neighbour).await.unwrap(),
        neighbour_keys.len()
    );

    for bad in ["", "*", "a:b", "x]", &"c".repeat(65)] {
        assert!(
            matches!(
                remove_cluster_keys(&url, bad).await,
                Err(CleanupError::InvalidCluster(_))
            ),
            "{bad:?}"
        );
    }
}

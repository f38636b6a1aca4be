//! The kit's own helpers: typed mocks answering a `GrainTest`'s calls for one key or any key,
//! the virtual wall clock behind `ctx.now()` in `GrainTest` and `TestSilo` (and the timers and
//! reminder ticks `GrainTest::advance` fires on it), deactivating one grain of a `TestSilo` on
//! demand, removing a test cluster's keys from a shared Redis, and a request context set on a
//! `GrainTest` call.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use granary::{
    CallError, DeactivationReason, GrainContext, ReminderTick, Result, SiloEvent, grain,
};
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

/// What a [`RemindedGrain`] saw: a reminder tick or a timer run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    /// The reminder's or the timer's name.
    name: String,
    /// The tick's due time, seconds after the virtual epoch (a timer: when it ran).
    due_s: u64,
    /// When the tick was delivered, seconds after the virtual epoch.
    fired_s: u64,
    /// Ticks missed before this one (0 for a timer).
    missed: u64,
}

/// Seconds after the virtual epoch of `t`.
fn secs(t: SystemTime) -> u64 {
    t.duration_since(virtual_epoch()).unwrap().as_secs()
}

/// Records every reminder tick and timer run in its state. Reminder `thrice` unregisters
/// itself at its third tick and registers `after` (first due 5 s later, every 100 s);
/// reminder `fails` fails every tick.
#[derive(Debug, Default)]
pub struct RemindedGrain;

#[grain(name = "reminded", state = Vec<Seen>)]
impl RemindedGrain {
    /// Registers reminder `name`, first due in `first_s`, then every `period_s`.
    pub async fn remind(
        &self,
        ctx: &GrainContext<Self>,
        name: String,
        first_s: u64,
        period_s: u64,
    ) -> Result<()> {
        let s = Duration::from_secs;
        ctx.register_reminder(&name, s(first_s), s(period_s)).await
    }

    /// Arms the one-shot timer `name` due in `due_s`.
    pub async fn timer(&self, ctx: &GrainContext<Self>, name: String, due_s: u64) -> Result<()> {
        ctx.set_timer(&name, Duration::from_secs(due_s), None);
        Ok(())
    }

    #[on_timer]
    async fn ran(&self, ctx: &GrainContext<Self>, name: &str) -> Result<()> {
        let now = secs(ctx.now());
        ctx.state().push(Seen {
            name: name.to_owned(),
            due_s: now,
            fired_s: now,
            missed: 0,
        });
        ctx.write_state().await
    }

    #[on_reminder]
    async fn ticked(&self, ctx: &GrainContext<Self>, name: &str, tick: ReminderTick) -> Result<()> {
        if name == "fails" {
            return Err(CallError::rejected(ctx.id(), "this reminder always fails"));
        }
        let thrice = {
            let mut seen = ctx.state();
            seen.push(Seen {
                name: name.to_owned(),
                due_s: secs(tick.due),
                fired_s: secs(tick.fired_at),
                missed: tick.missed,
            });
            seen.iter().filter(|t| t.name == "thrice").count()
        };
        if name == "thrice" && thrice == 3 {
            ctx.unregister_reminder("thrice").await?;
            let s = Duration::from_secs;
            ctx.register_reminder("after", s(5), s(100)).await?;
        }
        ctx.write_state().await
    }
}

fn seen(name: &str, due_s: u64, fired_s: u64, missed: u64) -> Seen {
    Seen {
        name: name.to_owned(),
        due_s,
        fired_s,
        missed,
    }
}

#[tokio::test]
async fn advance_fires_every_reminder_tick_in_due_order_with_the_timers() {
    let kit = GrainTest::<RemindedGrain>::new("r-1").await.unwrap();
    let grain = kit.reference();
    grain.remind("fast".into(), 10, 10).await.unwrap();
    grain.remind("slow".into(), 15, 30).await.unwrap();
    grain.remind("later".into(), 100, 10).await.unwrap();
    grain.timer("t".into(), 12).await.unwrap();
    grain.timer("tie".into(), 20).await.unwrap();
    let ran = kit.advance(Duration::from_secs(65)).await;
    assert_eq!(
        ran,
        [
            "fast", "t", "slow", "tie", "fast", "fast", "fast", "slow", "fast", "fast"
        ],
        "in due order; a timer before a reminder due at the same instant"
    );
    let ticks: Vec<Seen> = kit.stored_state().unwrap();
    let fast: Vec<Seen> = ticks.iter().filter(|t| t.name == "fast").cloned().collect();
    assert_eq!(
        fast,
        [10, 20, 30, 40, 50, 60].map(|at| seen("fast", at, at, 0)),
        "each period fired at its due time, none missed"
    );
    assert!(ticks.contains(&seen("slow", 45, 45, 0)));
    assert!(ticks.contains(&seen("t", 12, 12, 0)));
    assert_eq!(kit.wall_time(), virtual_epoch() + Duration::from_secs(65));
    let next = |name: &str| {
        kit.reminders()
            .into_iter()
            .find(|r| r.name == name)
            .map(|r| r.next_due())
    };
    let at = |s: u64| Some(virtual_epoch() + Duration::from_secs(s));
    assert_eq!(next("fast"), at(70));
    assert_eq!(next("slow"), at(75));
    assert_eq!(next("later"), at(100), "not due yet: untouched");
    assert_eq!(
        kit.advance(Duration::from_secs(4)).await,
        Vec::<String>::new(),
        "nothing falls due before 70 s"
    );
    assert_eq!(
        kit.advance(Duration::from_secs(1)).await,
        ["fast"],
        "due at 70 s exactly"
    );
}

#[tokio::test]
async fn advance_follows_what_a_reminder_tick_changed_in_the_reminders() {
    let kit = GrainTest::<RemindedGrain>::new("r-2").await.unwrap();
    kit.reference().remind("thrice".into(), 1, 1).await.unwrap();
    let ran = kit.advance(Duration::from_secs(200)).await;
    assert_eq!(
        ran,
        ["thrice", "thrice", "thrice", "after", "after"],
        "unregistered at its third tick; the one it registered fires at 8 s and 108 s"
    );
    assert_eq!(
        kit.stored_state().unwrap(),
        [
            seen("thrice", 1, 1, 0),
            seen("thrice", 2, 2, 0),
            seen("thrice", 3, 3, 0),
            seen("after", 8, 8, 0),
            seen("after", 108, 108, 0),
        ]
    );
    let names: Vec<String> = kit.reminders().into_iter().map(|r| r.name).collect();
    assert_eq!(names, ["after"]);
}

#[tokio::test]
async fn advance_while_down_reports_the_missed_ticks_in_the_next_tick() {
    let kit = GrainTest::<RemindedGrain>::new("r-3").await.unwrap();
    kit.reference()
        .remind("regen".into(), 10, 10)
        .await
        .unwrap();
    kit.reference().timer("t".into(), 5).await.unwrap();
    kit.advance_while_down(Duration::from_secs(35));
    assert!(
        kit.stored_state().is_none(),
        "nothing ran while the cluster was down"
    );
    assert_eq!(
        kit.advance(Duration::from_secs(10)).await,
        ["t", "regen", "regen"],
        "the late timer, one catch-up tick at 35 s, then the tick due at 40 s on time"
    );
    assert_eq!(
        kit.stored_state().unwrap(),
        [
            seen("t", 35, 35, 0),
            seen("regen", 10, 35, 2),
            seen("regen", 40, 40, 0),
        ],
        "due at 10 s, delivered at 35 s: the ticks of 20 s and 30 s missed"
    );
}

#[tokio::test]
async fn a_failing_reminder_handler_still_moves_its_reminder_on() {
    let kit = GrainTest::<RemindedGrain>::new("r-4").await.unwrap();
    kit.reference().remind("fails".into(), 1, 1).await.unwrap();
    let ran = kit.advance(Duration::from_secs(3)).await;
    assert_eq!(ran, ["fails", "fails", "fails"], "each tick delivered once");
    assert!(
        kit.stored_state().is_none(),
        "the failed turns' changes are discarded"
    );
    assert_eq!(
        kit.reminders()[0].next_due(),
        virtual_epoch() + Duration::from_secs(4)
    );
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

/// The keys of `cluster` on the Redis at `url`, found the way an operator would: `KEYS` on
/// the Redis, or on each primary of a Redis Cluster (as `redis-cli --cluster call` does).
async fn keys_of(url: &str, cluster: &str) -> Vec<String> {
    let nodes = match url.strip_prefix("redis+cluster://") {
        None => vec![url.to_owned()],
        Some(seeds) => {
            let seed = format!("redis://{}", seeds.split(',').next().unwrap());
            let client = redis::Client::open(seed).unwrap();
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            let nodes: String = redis::cmd("CLUSTER")
                .arg("NODES")
                .query_async(&mut conn)
                .await
                .unwrap();
            nodes
                .lines()
                .map(|line| line.split_whitespace().collect::<Vec<_>>())
                .filter(|fields| fields.get(2).is_some_and(|f| f.contains("master")))
                .map(|fields| format!("redis://{}", fields[1].split('@').next().unwrap()))
                .collect()
        }
    };
    let mut keys = Vec::new();
    for node in nodes {
        let client = redis::Client::open(node).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
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

//! Observers: a grain keeps its subscribers (`ObserverSet`, in its state) and pushes to them;
//! the objects live with a client. Tested on one silo (the reference stored in state survives
//! a deactivation), in a `GrainTest` on the virtual clock (an expired observer is dropped), and
//! across silos on a real Redis: a grain on silo B pushes to a `ClusterClient` connected only
//! to silo A, and a client that disconnects is dropped from the set.

use std::sync::Arc;
use std::time::Duration;

use granary::{
    CallError, ClientConfig, ClusterClient, ClusterConfig, GrainContext, GrainId, ObserverObject,
    ObserverSet, Result, Silo, SiloConfig, SiloEvent, grain, observer,
};
use granary_redis::{RedisConfig, RedisMembership, RedisStore};
use granary_testkit::redis_server::{shared_redis_url, unique_name};
use granary_testkit::{GrainTest, TestSilo};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

const SECRET: &[u8] = b"a cluster secret of at least 32 bytes";

/// What a match tells its watchers.
#[observer(name = "obs.match_watcher")]
pub trait MatchWatcher {
    /// The score changed.
    #[one_way]
    async fn on_score(&self, home: u32, away: u32) -> Result<()>;
    /// Whether the watcher is still there (answered by its client).
    async fn are_you_there(&self) -> Result<String>;
}

/// A watcher that forwards the scores it is told to the test.
struct Screen {
    name: String,
    scores: mpsc::UnboundedSender<(u32, u32)>,
}

impl MatchWatcher for Screen {
    async fn on_score(&self, home: u32, away: u32) -> Result<()> {
        let _ = self.scores.send((home, away));
        Ok(())
    }

    async fn are_you_there(&self) -> Result<String> {
        Ok(self.name.clone())
    }
}

fn screen(
    name: &str,
) -> (
    ObserverObject<MatchWatcherRef>,
    mpsc::UnboundedReceiver<(u32, u32)>,
) {
    let (scores, rx) = mpsc::unbounded_channel();
    (
        MatchWatcherRef::object(Screen {
            name: name.to_owned(),
            scores,
        }),
        rx,
    )
}

/// A match's state: its watchers with their leases, and the score.
#[derive(Default, Serialize, Deserialize)]
pub struct MatchState {
    watchers: ObserverSet<MatchWatcherRef>,
    home: u32,
}

/// What one push did: delivered, gone, expired, and the watchers left.
type Pushed = (usize, usize, usize, usize);

#[derive(Default)]
pub struct MatchGrain;

#[grain(name = "obs.match", state = MatchState, idle_after = "never")]
impl MatchGrain {
    /// Subscribes (or renews) `watcher` for `lease_secs`; returns how many watch.
    pub async fn subscribe(
        &self,
        ctx: &GrainContext<Self>,
        watcher: MatchWatcherRef,
        lease_secs: u64,
    ) -> Result<usize> {
        let now = ctx.now();
        let watching = {
            let mut state = ctx.state();
            state
                .watchers
                .subscribe(watcher, now, Duration::from_secs(lease_secs));
            state.watchers.len()
        };
        ctx.write_state().await?;
        Ok(watching)
    }

    /// The home side scores: every watcher is told, one-way.
    pub async fn goal(&self, ctx: &GrainContext<Self>) -> Result<Pushed> {
        let now = ctx.now();
        let pushes = {
            let mut state = ctx.state();
            state.home += 1;
            let home = state.home;
            state
                .watchers
                .notify(now, move |w| async move { w.on_score(home, 0).await })
        };
        let notified = pushes.await;
        let left = {
            let mut state = ctx.state();
            state.watchers.settle(&notified);
            state.watchers.len()
        };
        ctx.write_state().await?;
        Ok((
            notified.delivered,
            notified.gone.len(),
            notified.expired,
            left,
        ))
    }

    /// Pushes `n` scores to every watcher without waiting; how many were accepted and how
    /// many refused because a watcher's queue was full.
    pub async fn flood(&self, ctx: &GrainContext<Self>, n: u32) -> Result<(u32, u32)> {
        let watchers: Vec<MatchWatcherRef> = ctx.state().watchers.iter().cloned().collect();
        let (mut accepted, mut full) = (0, 0);
        for watcher in watchers {
            for i in 0..n {
                match watcher.on_score(i, 0).await {
                    Ok(()) => accepted += 1,
                    Err(CallError::QueueFull { .. }) => full += 1,
                    Err(err) => return Err(err),
                }
            }
        }
        Ok((accepted, full))
    }

    /// Asks every watcher whether it is there (request/response); the answers in order.
    pub async fn roll_call(&self, ctx: &GrainContext<Self>) -> Result<Vec<String>> {
        let watchers: Vec<MatchWatcherRef> = ctx.state().watchers.iter().cloned().collect();
        let mut names = Vec::new();
        for watcher in watchers {
            names.push(
                watcher
                    .with_timeout(Duration::from_secs(5))
                    .are_you_there()
                    .await?,
            );
        }
        Ok(names)
    }
}

/// A client that stops reading: every push it takes never ends.
struct Stuck;

impl MatchWatcher for Stuck {
    async fn on_score(&self, _: u32, _: u32) -> Result<()> {
        std::future::pending().await
    }

    async fn are_you_there(&self) -> Result<String> {
        std::future::pending().await
    }
}

#[tokio::test]
async fn a_client_that_stops_reading_never_holds_the_grains_turn() {
    let kit = GrainTest::<MatchGrain>::new("m4").await.unwrap();
    let stuck = kit.observe(MatchWatcherRef::object(Stuck));
    let game = kit.reference();
    assert_eq!(game.subscribe(stuck.reference(), 60).await, Ok(1));
    // Far more one-way pushes than the object's queue holds: the turn ends, the pushes over
    // the bound are refused with `QueueFull` (and logged), the watcher is kept (its lease
    // decides).
    let (accepted, full) = game
        .flood(granary::OBSERVER_QUEUE as u32 + 100)
        .await
        .unwrap();
    assert!(full >= 99, "accepted {accepted}, refused {full}");
    assert!(
        accepted <= granary::OBSERVER_QUEUE as u32 + 1,
        "accepted {accepted}"
    );
    // A request to it ends at its deadline with an unknown outcome, not never.
    let err = game.roll_call().await.unwrap_err();
    assert!(err.outcome_unknown(), "{err:?}");
    assert_eq!(kit.state().watchers.len(), 1);
}

#[tokio::test]
async fn a_grain_pushes_to_a_local_clients_observer_and_keeps_it_across_activations() {
    let silo = TestSilo::start(|b| b.register::<MatchGrain>())
        .await
        .unwrap();
    let client = silo.client();
    let (object, mut scores) = screen("alice");
    let alice = client.observe(object);
    let game = client.grain::<MatchGrain>("m1");
    assert_eq!(game.subscribe(alice.reference(), 60).await, Ok(1));
    assert_eq!(game.goal().await, Ok((1, 0, 0, 1)));
    assert_eq!(scores.recv().await, Some((1, 0)));
    assert_eq!(game.roll_call().await, Ok(vec!["alice".to_owned()]));

    // The reference was stored in the grain's state: a new activation reads it back and
    // reaches the same object.
    let id = GrainId::new("obs.match", "m1");
    assert!(silo.deactivate(&id).await.unwrap());
    assert_eq!(game.goal().await, Ok((1, 0, 0, 1)));
    assert_eq!(scores.recv().await, Some((2, 0)));

    // The client drops its observer: the next push finds it gone and the set drops it.
    drop(alice);
    let err = game.roll_call().await.unwrap_err();
    assert!(err.is_gone(), "{err:?}");
    assert_eq!(game.goal().await, Ok((0, 1, 0, 0)));
    assert_eq!(game.roll_call().await, Ok(Vec::new()));
}

#[tokio::test]
async fn an_observer_whose_lease_ended_is_dropped_on_the_virtual_clock() {
    let kit = GrainTest::<MatchGrain>::new("m2").await.unwrap();
    let (object, mut scores) = screen("bob");
    let bob = kit.observe(object);
    let (object, mut carol_scores) = screen("carol");
    let carol = kit.observe(object);
    let game = kit.reference();
    assert_eq!(game.subscribe(bob.reference(), 60).await, Ok(1));
    assert_eq!(game.subscribe(carol.reference(), 600).await, Ok(2));
    assert_eq!(game.goal().await, Ok((2, 0, 0, 2)));
    assert_eq!(scores.recv().await, Some((1, 0)));
    assert_eq!(carol_scores.recv().await, Some((1, 0)));

    // Bob never renews: a minute later he is dropped, Carol still hears.
    kit.advance(Duration::from_secs(61)).await;
    assert_eq!(game.goal().await, Ok((1, 0, 1, 1)));
    assert_eq!(carol_scores.recv().await, Some((2, 0)));
    assert_eq!(game.roll_call().await, Ok(vec!["carol".to_owned()]));
    assert!(
        scores.try_recv().is_err(),
        "an expired observer is told nothing"
    );
    assert_eq!(kit.state().watchers.len(), 1);
    drop(bob);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grain_on_silo_b_pushes_to_a_client_connected_to_silo_a() {
    let url = shared_redis_url().await;
    let cluster = unique_name("observers");
    let mut silos: Vec<Silo> = Vec::new();
    // Silo "a" is only a gateway; silo "b" hosts the matches.
    for name in ["a", "b"] {
        let store = Arc::new(
            RedisStore::connect(RedisConfig::new(&url, &cluster).shards(8))
                .await
                .unwrap(),
        );
        let config =
            ClusterConfig::new(&cluster, SECRET, "127.0.0.1:0".parse().unwrap()).test_profile();
        let mut builder = Silo::builder()
            .config(SiloConfig {
                name: name.to_owned(),
                ..SiloConfig::test_profile()
            })
            .storage(store.clone())
            .membership(Arc::new(RedisMembership::new(store)))
            .cluster(config);
        if name == "b" {
            builder = builder.register::<MatchGrain>();
        }
        silos.push(builder.start().await.unwrap());
    }
    for silo in &silos {
        if silo.members().len() < 2 {
            silo.events()
                .wait_for(|e| matches!(e, SiloEvent::MembersChanged(m) if m.len() == 2))
                .await
                .unwrap();
        }
    }
    let mut config = ClientConfig::new(&cluster, SECRET, vec![silos[0].address().unwrap()]);
    config.discover = false;
    config.call_timeout = Duration::from_secs(5);
    let client = ClusterClient::connect(config).await.unwrap();
    let (object, mut scores) = screen("dana");
    let dana = client.observe(object);

    let game = client.grain::<MatchGrain>("m3");
    assert_eq!(game.subscribe(dana.reference(), 60).await, Ok(1));
    let id = GrainId::new("obs.match", "m3");
    assert!(
        silos[1].is_active(&id) && !silos[0].is_active(&id),
        "the match lives on silo b"
    );
    assert_eq!(game.goal().await, Ok((1, 0, 0, 1)));
    assert_eq!(scores.recv().await, Some((1, 0)));
    // Request/response through the gateway and the client's connection.
    assert_eq!(game.roll_call().await, Ok(vec!["dana".to_owned()]));

    // The client goes away: once its gateway saw the connection close, pushes find it gone.
    client.close().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let via_b = silos[1].client().grain::<MatchGrain>("m3");
    loop {
        let pushed = via_b.goal().await.unwrap();
        if pushed == (0, 1, 0, 0) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still pushing: {pushed:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(via_b.roll_call().await, Ok(Vec::new()));
    for silo in silos {
        silo.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_gateway_leaves_fails_over_and_keeps_receiving_after_subscribing_again() {
    let url = shared_redis_url().await;
    let cluster = unique_name("observers-failover");
    let mut silos: Vec<Silo> = Vec::new();
    for name in ["a", "b"] {
        let store = Arc::new(
            RedisStore::connect(RedisConfig::new(&url, &cluster).shards(8))
                .await
                .unwrap(),
        );
        let config =
            ClusterConfig::new(&cluster, SECRET, "127.0.0.1:0".parse().unwrap()).test_profile();
        let mut builder = Silo::builder()
            .config(SiloConfig {
                name: name.to_owned(),
                ..SiloConfig::test_profile()
            })
            .storage(store.clone())
            .membership(Arc::new(RedisMembership::new(store)))
            .cluster(config);
        if name == "b" {
            builder = builder.register::<MatchGrain>();
        }
        silos.push(builder.start().await.unwrap());
    }
    for silo in &silos {
        if silo.members().len() < 2 {
            silo.events()
                .wait_for(|e| matches!(e, SiloEvent::MembersChanged(m) if m.len() == 2))
                .await
                .unwrap();
        }
    }
    let gateways = silos.iter().map(|s| s.address().unwrap()).collect();
    let mut config = ClientConfig::new(&cluster, SECRET, gateways);
    config.call_timeout = Duration::from_secs(5);
    config.refresh = Duration::from_millis(100);
    let client = ClusterClient::connect(config).await.unwrap();
    let mut home = client.observer_gateway();
    assert_eq!(
        *home.borrow_and_update(),
        silos[0].id().clone(),
        "a answered first"
    );
    let (object, mut scores) = screen("erin");
    let erin = client.observe(object);
    let game = client.grain::<MatchGrain>("m5");
    assert_eq!(game.subscribe(erin.reference(), 60).await, Ok(1));
    assert_eq!(game.goal().await, Ok((1, 0, 0, 1)));
    assert_eq!(scores.recv().await, Some((1, 0)));

    // The gateway leaves: the client moves its observers to b and subscribes again.
    let b = silos[1].id().clone();
    silos.remove(0).shutdown().await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), home.changed())
        .await
        .expect("the client fails over within its refreshes")
        .unwrap();
    assert_eq!(*home.borrow(), b);
    assert_eq!(game.subscribe(erin.reference(), 60).await, Ok(2));
    // The old reference is found gone (its gateway left) and dropped; the new one is told.
    assert_eq!(game.goal().await, Ok((1, 1, 0, 1)));
    assert_eq!(scores.recv().await, Some((2, 0)));
    assert_eq!(game.roll_call().await, Ok(vec!["erin".to_owned()]));
    client.close().await;
    for silo in silos {
        silo.shutdown().await.unwrap();
    }
}

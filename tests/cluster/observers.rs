//! Observers: a grain keeps its subscribers (`ObserverSet`, in its state) and pushes to them;
//! the objects live with a client. Tested on one silo (the reference stored in state survives
//! a deactivation), in a `GrainTest` on the virtual clock (an expired observer is dropped), and
//! across silos on a real Redis: a grain on silo B pushes to a `ClusterClient` connected only
//! to silo A, a client that disconnects is dropped from the set, and a client whose gateway
//! leaves (in process) or is SIGKILLed (`test-silo` processes) fails over and keeps receiving
//! after subscribing again. The grain and the observer interface are in the crate's lib, so
//! that `test-silo` hosts them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use granary::{ClientConfig, ClusterClient, GrainId, ObserverObject, Result, Silo, SiloConfig};
use granary_testkit::redis_server::{shared_redis_url, unique_name};
use granary_testkit::{GrainTest, TestSilo};
use granary_tests::{MatchGrain, MatchWatcher, MatchWatcherRef};
use tokio::sync::mpsc;

const SECRET: &[u8] = b"a cluster secret of at least 32 bytes";

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_client_that_stops_reading_has_its_pushes_refused_by_the_gateway_at_once() {
    let warnings = capture_warnings();
    let cluster = unique_name("observers-stuck");
    let silo = clustered(&cluster, "a", true).await;
    // The client runs on a runtime of its own, whose one thread the test blocks: a client
    // process that stops reading its connection.
    let client_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let gateway = silo.address().unwrap();
    let (client, fran) = client_runtime
        .spawn({
            let cluster = cluster.clone();
            async move {
                let mut config = ClientConfig::new(&cluster, SECRET, vec![gateway]);
                config.discover = false;
                config.call_timeout = Duration::from_secs(10);
                let client = ClusterClient::connect(config).await.unwrap();
                let (object, _scores) = screen("fran");
                let fran = client.observe(object);
                let game = client.grain::<MatchGrain>("m6");
                assert_eq!(game.subscribe(fran.reference(), 60).await, Ok(1));
                (client, fran)
            }
        })
        .await
        .unwrap();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (blocked, is_blocked) = tokio::sync::oneshot::channel();
    client_runtime.spawn(async move {
        let _ = blocked.send(());
        let _ = released.recv();
    });
    is_blocked.await.unwrap();

    // Far more pushes than the connection's buffers hold: once the gateway holds
    // `OBSERVER_QUEUE` frames for the client, each push is refused at once with `QueueFull`;
    // the turn ends.
    let game = silo.client().grain::<MatchGrain>("m6");
    let (accepted, full) = tokio::time::timeout(Duration::from_secs(60), game.flood(300_000))
        .await
        .expect("no push waits on the client")
        .unwrap();
    assert!(full > 0, "accepted {accepted}, refused none");
    assert!(
        accepted as usize >= granary::OBSERVER_QUEUE,
        "accepted {accepted}"
    );
    // Hundreds of thousands of drops, one warning: the next says how many it held back.
    let dropped = warnings
        .lock()
        .unwrap()
        .iter()
        .filter(|line| line.contains("client is not keeping up"))
        .count();
    assert_eq!(dropped, 1, "{:?}", warnings.lock().unwrap());

    // The client reads again: it answers, and is still subscribed.
    release.send(()).unwrap();
    assert_eq!(game.roll_call().await, Ok(vec!["fran".to_owned()]));
    client_runtime
        .spawn(async move {
            drop(fran);
            client.close().await;
        })
        .await
        .unwrap();
    client_runtime.shutdown_background();
    silo.shutdown().await.unwrap();
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
    let cluster = unique_name("observers");
    let silos = gateway_and_host(&cluster).await;
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
    let cluster = unique_name("observers-failover");
    let mut silos = gateway_and_host(&cluster).await;
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
    // The new reference is told every goal. The old one is found gone and dropped once silo
    // b's view, too, has its gateway gone (the client may have learned it first, from the
    // leaving silo itself); until then a push to it fails without being sent, and it is kept.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    for goals in 2.. {
        let (delivered, _, _, left) = game.goal().await.unwrap();
        assert_eq!(delivered, 1);
        assert_eq!(scores.recv().await, Some((goals, 0)));
        if left == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the old reference is kept"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(game.roll_call().await, Ok(vec!["erin".to_owned()]));
    client.close().await;
    for silo in silos {
        silo.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_keeps_receiving_after_its_gateway_process_is_sigkilled() {
    let cluster = unique_name("observers-kill");
    let a = crate::processes::start(&cluster, "a", "random").await;
    let b = crate::processes::start(&cluster, "b", "random").await;
    let c = crate::processes::start(&cluster, "c", "random").await;
    let mut config = ClientConfig::new(&cluster, SECRET, vec![a.addr]);
    config.call_timeout = Duration::from_secs(3);
    config.refresh = Duration::from_millis(200);
    let client = ClusterClient::connect(config).await.unwrap();
    let mut home = client.observer_gateway();
    assert_eq!(home.borrow_and_update().name(), "a");
    // The client knows the other gateways before its own goes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while client.gateways().len() < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            client.gateways()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (object, mut scores) = screen("finn");
    let finn = client.observe(object);
    let game = client.grain::<MatchGrain>("m6");
    assert_eq!(game.subscribe(finn.reference(), 60).await, Ok(1));
    assert_eq!(game.goal().await.map(|p| p.0), Ok(1));
    assert_eq!(scores.recv().await, Some((1, 0)));

    a.signal("-KILL");
    tokio::time::timeout(Duration::from_secs(60), home.changed())
        .await
        .expect("the client fails over once the cluster declares its gateway dead")
        .unwrap();
    let moved_to = home.borrow().name().to_owned();
    assert!(moved_to == "b" || moved_to == "c", "{moved_to}");
    // Subscribe again (the match may have lived on the killed silo: retried until it is
    // served again), then the next goal reaches the client through its new gateway.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match game.subscribe(finn.reference(), 60).await {
            Ok(_) => break,
            Err(err) => assert!(tokio::time::Instant::now() < deadline, "{err:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every goal reaches the new reference. The old one is dropped once the match's silo,
    // too, sees its gateway gone (until then a push to it fails without being sent, and it
    // is kept).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (delivered, _, _, left) = match game.goal().await {
            Ok(pushed) => pushed,
            // A stale directory cache at a gateway (see below): the goal did not run.
            Err(err) if err.is_retryable() && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(err) => panic!("{err:?}"),
        };
        assert_eq!(delivered, 1, "the new reference is reached");
        let (home_goals, _) = scores.recv().await.unwrap();
        assert!(home_goals >= 2);
        if left == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the old reference is kept"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A gateway whose directory cache still names the killed silo as the match's host fails
    // the call before sending it (retryable) until it learns better.
    loop {
        match game.roll_call().await {
            Ok(names) => {
                assert_eq!(names, vec!["finn".to_owned()]);
                break;
            }
            Err(err) if err.is_retryable() && tokio::time::Instant::now() < deadline => {}
            Err(err) => panic!("{err:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    client.close().await;
    drop((b, c));
}

/// Installs this process's tracing subscriber (nextest runs each test in a process of its own),
/// keeping each warning line of the runtime.
fn capture_warnings() -> Arc<Mutex<Vec<String>>> {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    #[derive(Clone)]
    struct Lines(Arc<Mutex<Vec<String>>>);
    impl std::io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let line = String::from_utf8_lossy(bytes).into_owned();
            self.0.lock().unwrap().push(line);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let lines = Arc::new(Mutex::new(Vec::new()));
    let writer = Lines(lines.clone());
    let subscriber = tracing_subscriber::registry().with(
        tracing_subscriber::fmt::layer()
            .with_writer(move || writer.clone())
            .with_filter(tracing_subscriber::filter::LevelFilter::WARN),
    );
    subscriber
        .try_init()
        .expect("no other subscriber in this test's process");
    lines
}

/// Two clustered silos on the shared Redis, both active in each other's view: "a" is only a
/// gateway (it hosts no grain type), "b" hosts the matches.
async fn gateway_and_host(cluster: &str) -> Vec<Silo> {
    let silos = vec![
        clustered(cluster, "a", false).await,
        clustered(cluster, "b", true).await,
    ];
    crate::multi_silo::all_see_each_other(&silos).await;
    silos
}

/// A silo named `name` in `cluster` on the shared Redis, hosting the matches if `matches`.
async fn clustered(cluster: &str, name: &str, matches: bool) -> Silo {
    let config = SiloConfig {
        name: name.to_owned(),
        ..SiloConfig::test_profile()
    };
    let url = shared_redis_url().await;
    let mut builder = crate::multi_silo::silo_builder(&url, cluster, config, |c| c).await;
    if matches {
        builder = builder.register::<MatchGrain>();
    }
    builder.start().await.unwrap()
}

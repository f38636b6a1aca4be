//! Events to grains (subscriptions) on a real Redis: a leaderboard subscribed to
//! `sub.match.ended` gets every arena's matches once, in commit order per arena, however often
//! the relay redelivers them; a failing key function or handler dead-letters only its event;
//! and across `test-silo` processes the leaderboard counts every match once through a silo
//! SIGKILLed mid-stream.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use granary::provider::{GrainDirectory, Outbox};
use granary::{GrainId, Silo, SiloConfig};
use granary_events::{Outgoing, Relay, RelayConfig, Sink, SinkError};
use granary_redis::{RedisConfig, RedisStore};
use granary_testkit::redis_server::{shared_redis_url, unique_name};
use granary_tests::subscribed::{ArenaGrain, LeaderboardGrain, MatchEnded, subscribe};

/// A sink that is never available: a relay with it after the grains delivers to the grains
/// and never acknowledges anything, as a relay that dies before its acknowledgement.
struct Unreachable {
    calls: AtomicUsize,
}

impl Sink for Unreachable {
    fn name(&self) -> &str {
        "unreachable"
    }

    fn publish<'a>(&'a self, _events: &'a [Outgoing]) -> BoxFuture<'a, Result<(), SinkError>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async {
            Err(SinkError::Unavailable {
                sink: "unreachable".into(),
                reason: "down for the test".into(),
            })
        })
    }
}

/// Quick retries, two refusals before the dead letters.
fn relay_config() -> RelayConfig {
    RelayConfig {
        retry_min: Duration::from_millis(10),
        retry_max: Duration::from_millis(100),
        max_refusals: 2,
        ..RelayConfig::default()
    }
}

/// A silo on its own cluster's keys in the shared Redis, with the subscription registered.
async fn silo() -> (Silo, Arc<RedisStore>) {
    let store = Arc::new(
        RedisStore::connect(RedisConfig::new(
            shared_redis_url().await,
            unique_name("subs"),
        ))
        .await
        .unwrap(),
    );
    let silo = subscribe(Silo::builder())
        .config(SiloConfig {
            idle_timeout: Duration::from_secs(600),
            ..SiloConfig::test_profile()
        })
        .storage(store.clone())
        .start()
        .await
        .unwrap();
    (silo, store)
}

/// The board's counted matches once it has at least `n` (checked as they commit, under a
/// deadline).
async fn counted_at_least(
    board: &granary_tests::subscribed::LeaderboardRef,
    n: usize,
    within: Duration,
) -> (Vec<(i64, u64)>, u64) {
    let deadline = Instant::now() + within;
    loop {
        match board.counted().await {
            Ok((counted, skipped)) if counted.len() >= n => return (counted, skipped),
            Ok((counted, _)) => assert!(
                Instant::now() < deadline,
                "the board counted {} of {n} matches: {counted:?}",
                counted.len()
            ),
            Err(err) => assert!(Instant::now() < deadline, "the board fails: {err}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every `(arena, number)` for `number` in `1..=ended[arena]` counted exactly once, each
/// arena's in ascending order.
fn assert_each_once_in_order(counted: &[(i64, u64)], ended: &BTreeMap<i64, u64>) {
    let distinct: BTreeSet<(i64, u64)> = counted.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        counted.len(),
        "a match counted twice: {counted:?}"
    );
    let expected: BTreeSet<(i64, u64)> = ended
        .iter()
        .flat_map(|(&arena, &n)| (1..=n).map(move |number| (arena, number)))
        .collect();
    assert_eq!(
        distinct, expected,
        "the board counted other matches than were committed"
    );
    for &arena in ended.keys() {
        let numbers: Vec<u64> = counted
            .iter()
            .filter(|(a, _)| *a == arena)
            .map(|(_, n)| *n)
            .collect();
        assert!(
            numbers.windows(2).all(|w| w[0] < w[1]),
            "arena {arena}'s matches out of commit order: {numbers:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribed_grain_applies_every_event_once_in_commit_order_per_source() {
    let (silo, store) = silo().await;
    let unreachable = Arc::new(Unreachable {
        calls: AtomicUsize::new(0),
    });
    // The first relay delivers to the grains, then to a sink that never takes anything: it
    // acknowledges nothing, so the next relay delivers every event again.
    let first_relay = silo
        .deliver_subscriptions(Relay::builder(store.clone()).config(relay_config()))
        .subscriber(
            <MatchEnded as granary::Event>::TYPE_NAME,
            unreachable.clone(),
        )
        .start();
    let client = silo.client();
    let board_key = "board-order";
    let (arenas, matches) = (6i64, 10u64);
    let publishers: Vec<_> = (0..arenas)
        .map(|arena| {
            let arena_ref = client.grain::<ArenaGrain>(arena);
            tokio::spawn(async move {
                for _ in 0..matches {
                    arena_ref
                        .end_match(board_key.into(), format!("p{arena}"))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for publisher in publishers {
        publisher.await.unwrap();
    }
    let board = client.grain::<LeaderboardGrain>(board_key);
    let total = usize::try_from(arenas as u64 * matches).unwrap();
    // The first relay's first delivery reached the board once the unreachable sink, after
    // the grains, was tried (the relay then retries it without end and reads nothing more).
    let deadline = Instant::now() + Duration::from_secs(30);
    while unreachable.calls.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "the first relay delivered nothing"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (first, skipped) = board.counted().await.unwrap();
    assert!(
        !first.is_empty(),
        "the grains got the delivery before the unreachable sink"
    );
    assert_eq!(skipped, 0, "nothing was delivered twice yet");
    assert_eq!(
        first_relay.delivered(),
        0,
        "the first relay acknowledged nothing"
    );
    first_relay.stop().await;
    // The next relay delivers all of it: what the board had counted comes again and is
    // skipped, the rest is counted, each match once, in order per arena.
    let relay = silo
        .deliver_subscriptions(Relay::builder(store.clone()).config(relay_config()))
        .start();
    relay
        .delivered_at_least(u64::try_from(total).unwrap())
        .await;
    let (counted, skipped) = board.counted().await.unwrap();
    let ended: BTreeMap<i64, u64> = (0..arenas).map(|a| (a, matches)).collect();
    assert_each_once_in_order(&counted, &ended);
    assert!(
        skipped >= u64::try_from(first.len()).unwrap(),
        "the {} events counted before came again and were skipped: {skipped} skipped",
        first.len()
    );
    assert_eq!(relay.dead_lettered(), 0);
    drop(relay);
    silo.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_key_function_or_handler_dead_letters_only_its_event() {
    let (silo, store) = silo().await;
    let relay = silo
        .deliver_subscriptions(Relay::builder(store.clone()).config(relay_config()))
        .start();
    let client = silo.client();
    let board_key = "board-dead";
    let arena = client.grain::<ArenaGrain>(7);
    let winners = [
        "ann",
        "no-key",
        "bob",
        "key-panics",
        "cy",
        "reject-me",
        "di",
        "board-panics",
        "ed",
    ];
    for winner in winners {
        arena
            .end_match(board_key.into(), winner.into())
            .await
            .unwrap();
    }
    let board = client.grain::<LeaderboardGrain>(board_key);
    let (counted, _) = counted_at_least(&board, 5, Duration::from_secs(30)).await;
    assert_eq!(
        counted,
        [(7, 1), (7, 3), (7, 5), (7, 7), (7, 9)],
        "the events around the failing ones arrive, in order"
    );
    relay.delivered_at_least(5).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while relay.dead_lettered() < 4 {
        assert!(
            Instant::now() < deadline,
            "{} dead letters",
            relay.dead_lettered()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut letters = Vec::new();
    for shard in 0..store.shards() {
        letters.extend(store.dead_letters(shard, 100).await.unwrap());
    }
    let mut reasons: Vec<(u64, String)> = letters
        .iter()
        .map(|l| (l.id.as_ref().unwrap().version, l.reason.clone()))
        .collect();
    reasons.sort();
    assert_eq!(
        reasons.iter().map(|(v, _)| *v).collect::<Vec<_>>(),
        [2, 4, 6, 8],
        "the four failing matches, and only they, are dead letters: {reasons:?}"
    );
    let expect = [
        "the key function of the subscription of sub.board to sub.match.ended failed: match 2 has no board",
        "the key function of the subscription of sub.board to sub.match.ended panicked: the key function cannot read match 4",
        "this board refuses it",
        "the board cannot take this match",
    ];
    for ((_, reason), expected) in reasons.iter().zip(expect) {
        assert!(
            reason.contains("grains refused it 2 times") && reason.contains(expected),
            "{reason:?} does not say {expected:?}"
        );
    }
    assert_eq!(relay.dead_lettered(), 4);
    drop(relay);
    silo.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaderboard_counts_every_match_once_through_a_silo_kill() {
    let cluster = unique_name("subkill");
    let mut silos = Vec::new();
    for i in 0..3 {
        silos.push(crate::processes::start(&cluster, &format!("k{i}"), "hash").await);
    }
    let client = crate::processes::client(&cluster, silos.iter().map(|s| s.addr).collect()).await;
    let board_key = "board-kill";
    let arenas: i64 = 12;
    let (phase_tx, phase) = tokio::sync::watch::channel(0u8);
    let writers: Vec<_> = (0..arenas)
        .map(|a| {
            let arena = client.grain::<ArenaGrain>(a);
            let phase = phase.clone();
            tokio::spawn(async move {
                let mut after_kill = 0;
                while after_kill < 10 {
                    match arena.end_match(board_key.into(), format!("p{a}")).await {
                        Ok(_) if *phase.borrow() == 1 => after_kill += 1,
                        Ok(_) => {}
                        // The dead silo's arenas come back once it is declared dead; a call
                        // cut short may have committed (the arena's count says).
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            })
        })
        .collect();
    // Matches are flowing and counted: kill the silo that hosts the leaderboard.
    let board = client.grain::<LeaderboardGrain>(board_key);
    counted_at_least(&board, 30, Duration::from_secs(30)).await;
    let store = RedisStore::connect(RedisConfig::new(shared_redis_url().await, &cluster))
        .await
        .unwrap();
    let owner = store
        .lookup(&GrainId::new("sub.board", board_key))
        .await
        .unwrap()
        .expect("the counting board is active");
    let victim = silos.remove(
        silos
            .iter()
            .position(|s| s.name == owner.silo.name())
            .unwrap(),
    );
    victim.signal("-KILL");
    phase_tx.send_replace(1);
    for writer in writers {
        tokio::time::timeout(Duration::from_secs(90), writer)
            .await
            .expect("every arena ends matches again after the kill")
            .unwrap();
    }
    // What was committed: each arena's count, read back.
    let mut ended = BTreeMap::new();
    for a in 0..arenas {
        ended.insert(a, client.grain::<ArenaGrain>(a).ended().await.unwrap());
    }
    let total: u64 = ended.values().sum();
    let (counted, _) = counted_at_least(
        &board,
        usize::try_from(total).unwrap(),
        Duration::from_secs(90),
    )
    .await;
    assert_each_once_in_order(&counted, &ended);
    let moved = store
        .lookup(&GrainId::new("sub.board", board_key))
        .await
        .unwrap()
        .expect("the board is active");
    assert_ne!(
        moved.silo.name(),
        victim.name,
        "the board lives on a surviving silo"
    );
    client.close().await;
}

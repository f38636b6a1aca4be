//! Durable reminders: on one silo and on silos sharing a store (a reminder fires while its
//! grain is deactivated, reports the ticks missed while no silo ran, is delivered once per due
//! time however many times it is sent; bad requests are typed errors), and across `test-silo`
//! processes on a real Redis (the owning silo SIGKILLed, every silo restarted).

use std::sync::Arc;
use std::time::{Duration, Instant};

use granary::provider::MemoryStore;
use granary::{
    CallError, DeactivationReason, GrainId, REMINDER_METHOD, ReminderError, Silo, SiloConfig,
    SiloEvent, TypedRef,
};
use granary_tests::{ReminderGrain, Tick};

/// A silo whose idle collection never races the test (grains rest on request).
async fn silo_on(store: Arc<MemoryStore>) -> Silo {
    Silo::builder()
        .config(SiloConfig {
            idle_timeout: Duration::from_secs(600),
            ..SiloConfig::test_profile()
        })
        .storage(store)
        .register::<ReminderGrain>()
        .start()
        .await
        .unwrap()
}

/// The grain's ticks once it has at least `n` (checked as ticks commit, under a deadline).
async fn ticks_at_least(silo: &Silo, key: i64, n: usize) -> Vec<Tick> {
    let grain = silo.client().grain::<ReminderGrain>(key);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ticks = grain.ticks().await.unwrap();
        if ticks.len() >= n {
            return ticks;
        }
        assert!(
            Instant::now() < deadline,
            "only {} ticks: {ticks:?}",
            ticks.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reminder_fires_while_its_grain_is_deactivated() {
    let silo = silo_on(Arc::new(MemoryStore::new())).await;
    let grain = silo.client().grain::<ReminderGrain>(1);
    let id = GrainId::new("cluster.reminded", 1i64);
    let mut events = silo.events().with_deadline(Duration::from_secs(20));
    grain.register("regen".into(), 2_000, 1_000).await.unwrap();
    grain.rest().await.unwrap();
    events
        .wait_for(
            |e| matches!(e, SiloEvent::Deactivated(g, DeactivationReason::Requested) if *g == id),
        )
        .await
        .unwrap();
    // Nothing calls the grain: only its reminder can activate it again.
    events
        .wait_for(|e| matches!(e, SiloEvent::Activated(g) if *g == id))
        .await
        .unwrap();
    let ticks = ticks_at_least(&silo, 1, 2).await;
    assert_eq!(ticks[0].name, "regen");
    assert_eq!(ticks[1].due_ms, ticks[0].due_ms + 1_000, "one period apart");
    assert!(ticks.iter().all(|t| t.fired_at_ms >= t.due_ms));
    silo.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_reminder_requests_are_typed_errors() {
    let silo = silo_on(Arc::new(MemoryStore::new())).await;
    let grain = silo.client().grain::<ReminderGrain>(2);
    let reason = |err: CallError| match err {
        CallError::Reminder { source, .. } => source,
        other => panic!("expected a reminder error, got {other}"),
    };
    for period in [0, 999] {
        let err = grain.register("r".into(), 0, period).await.unwrap_err();
        assert!(
            matches!(reason(err), ReminderError::PeriodTooShort { .. }),
            "{period}"
        );
    }
    for name in [String::new(), "n".repeat(129)] {
        let err = grain.register(name, 1_000, 1_000).await.unwrap_err();
        assert!(matches!(
            reason(err),
            ReminderError::InvalidName { max: 128, .. }
        ));
    }
    let err = grain
        .register("far".into(), u64::MAX, 1_000)
        .await
        .unwrap_err();
    assert!(matches!(reason(err), ReminderError::OutOfRange));
    for n in 0..granary::provider::MAX_REMINDERS_PER_GRAIN {
        grain
            .register(format!("r{n}"), 3_600_000, 3_600_000)
            .await
            .unwrap();
    }
    let err = grain
        .register("one-too-many".into(), 3_600_000, 3_600_000)
        .await
        .unwrap_err();
    assert!(matches!(reason(err), ReminderError::TooMany { limit: 256 }));
    // Replacing an existing one is not one more.
    grain
        .register("r0".into(), 7_200_000, 3_600_000)
        .await
        .unwrap();
    assert_eq!(grain.reminder_names().await.unwrap().len(), 256);
    silo.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unregister_inside_a_failed_turn_does_not_happen() {
    let silo = silo_on(Arc::new(MemoryStore::new())).await;
    let grain = silo.client().grain::<ReminderGrain>(3);
    grain.register("daily".into(), 1_000, 1_000).await.unwrap();
    let err = grain
        .unregister_then_fail("daily".into())
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::Rejected { .. }), "{err}");
    assert_eq!(grain.reminder_names().await.unwrap(), vec!["daily"]);
    // Still registered in the store: it fires.
    let ticks = ticks_at_least(&silo, 3, 1).await;
    assert_eq!(ticks[0].name, "daily");
    // A successful unregister does happen.
    grain.unregister("daily".into()).await.unwrap();
    assert!(grain.reminder_names().await.unwrap().is_empty());
    silo.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tick_sent_twice_is_delivered_once() {
    let silo = silo_on(Arc::new(MemoryStore::new())).await;
    let grain = silo.client().grain::<ReminderGrain>(4);
    // Due in an hour: the silo's own service leaves it alone during the test.
    grain
        .register("auction".into(), 3_600_000, 3_600_000)
        .await
        .unwrap();
    let due = grain.next_due("auction".into()).await.unwrap().unwrap();
    // Two silos that both believe they own the shard (a hand-over) send the same tick.
    let raw = grain.grain_ref().clone();
    let send = |r: granary::GrainRef| async move {
        r.call::<Option<u64>>(&REMINDER_METHOD, ("auction".to_owned(), due))
            .await
    };
    let (a, b) = tokio::join!(send(raw.clone()), send(raw.clone()));
    let next = due + 3_600_000;
    assert_eq!(a.unwrap(), Some(next));
    assert_eq!(
        b.unwrap(),
        Some(next),
        "the second learns the next due time"
    );
    let ticks = grain.ticks().await.unwrap();
    assert_eq!(ticks.len(), 1, "delivered once: {ticks:?}");
    assert_eq!(ticks[0].due_ms, due);
    // A late duplicate after a reactivation is refused as well (the advance is stored).
    grain.rest().await.unwrap();
    assert_eq!(send(raw.clone()).await.unwrap(), Some(next));
    assert_eq!(grain.ticks().await.unwrap().len(), 1);
    // A tick for a reminder that is gone answers `None`.
    grain.unregister("auction".into()).await.unwrap();
    assert_eq!(send(raw).await.unwrap(), None);
    silo.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticks_missed_while_no_silo_ran_are_reported() {
    let store = Arc::new(MemoryStore::new());
    let first = silo_on(store.clone()).await;
    first
        .client()
        .grain::<ReminderGrain>(5)
        .register("energy".into(), 1_000, 1_000)
        .await
        .unwrap();
    first.shutdown().await.unwrap();
    // The downtime is the scenario: no silo runs for three and a half periods.
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let second = silo_on(store).await;
    let ticks = ticks_at_least(&second, 5, 2).await;
    assert!(ticks[0].missed >= 2, "{ticks:?}");
    assert!(ticks[0].fired_at_ms >= ticks[0].due_ms + 2_000);
    // The next tick is due one period after the last missed one, not once per missed tick.
    assert_eq!(
        ticks[1].due_ms,
        ticks[0].due_ms + (ticks[0].missed + 1) * 1_000
    );
    second.shutdown().await.unwrap();
}

/// The ticks of each of `keys` through `client`, once `done` holds for every grain's ticks
/// (checked as ticks commit, under a deadline; calls failing meanwhile, while a dead silo's
/// grains move, are tried again).
async fn ticks_until(
    client: &granary::ClusterClient,
    keys: std::ops::Range<i64>,
    deadline: Duration,
    done: impl Fn(&[Tick]) -> bool,
) -> Vec<Vec<Tick>> {
    let deadline = Instant::now() + deadline;
    loop {
        let mut all = Vec::new();
        for key in keys.clone() {
            match client.grain::<ReminderGrain>(key).ticks().await {
                Ok(ticks) if done(&ticks) => all.push(ticks),
                _ => break,
            }
        }
        if all.len() == keys.clone().count() {
            return all;
        }
        assert!(Instant::now() < deadline, "reminders did not fire in time");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Each due time once per grain, in order.
fn assert_delivered_once(all: &[Vec<Tick>]) {
    for ticks in all {
        assert!(
            ticks.windows(2).all(|w| w[0].due_ms < w[1].due_ms),
            "a due time was delivered twice or out of order: {ticks:?}"
        );
    }
}

fn now_ms() -> u64 {
    granary::provider::unix_ms(std::time::SystemTime::now())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reminders_survive_sigkill_of_their_owning_silo() {
    use crate::processes::{client, start};
    let cluster = granary_testkit::redis_server::unique_name("remkill");
    let mut silos = vec![
        start(&cluster, "r0", "hash").await,
        start(&cluster, "r1", "hash").await,
    ];
    let client = client(&cluster, silos.iter().map(|s| s.addr).collect()).await;
    let keys = 0..8;
    for key in keys.clone() {
        client
            .grain::<ReminderGrain>(key)
            .register("beat".into(), 1_000, 1_000)
            .await
            .unwrap();
    }
    ticks_until(&client, keys.clone(), Duration::from_secs(30), |t| {
        t.len() >= 2
    })
    .await;
    // With two silos each owns about half of the 64 shards: the eight grains' reminders are
    // fired by both. Kill one: the survivor takes its shards over.
    let victim = silos.remove(1);
    victim.signal("-KILL");
    let killed_at = now_ms();
    let all = ticks_until(&client, keys, Duration::from_secs(60), |t| {
        t.iter().any(|t| t.due_ms > killed_at + 2_000)
    })
    .await;
    assert_delivered_once(&all);
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reminders_fire_again_after_every_silo_restarts() {
    use crate::processes::{client, start};
    let cluster = granary_testkit::redis_server::unique_name("remall");
    let first = vec![
        start(&cluster, "a0", "hash").await,
        start(&cluster, "a1", "hash").await,
    ];
    let before = client(&cluster, first.iter().map(|s| s.addr).collect()).await;
    let keys = 100..104;
    for key in keys.clone() {
        before
            .grain::<ReminderGrain>(key)
            .register("season".into(), 1_000, 1_000)
            .await
            .unwrap();
    }
    ticks_until(&before, keys.clone(), Duration::from_secs(30), |t| {
        !t.is_empty()
    })
    .await;
    before.close().await;
    for silo in &first {
        silo.signal("-KILL");
    }
    let stopped_at = now_ms();
    drop(first);
    // The whole cluster is down for a few periods.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let second = [
        start(&cluster, "b0", "hash").await,
        start(&cluster, "b1", "hash").await,
    ];
    let after = client(&cluster, second.iter().map(|s| s.addr).collect()).await;
    let all = ticks_until(&after, keys, Duration::from_secs(90), |t| {
        t.iter().any(|t| t.fired_at_ms > stopped_at + 3_000)
    })
    .await;
    for ticks in &all {
        let resumed = ticks
            .iter()
            .find(|t| t.fired_at_ms > stopped_at + 3_000)
            .unwrap();
        assert!(
            resumed.missed >= 1,
            "the downtime's ticks are reported: {ticks:?}"
        );
    }
    assert_delivered_once(&all);
    after.close().await;
}

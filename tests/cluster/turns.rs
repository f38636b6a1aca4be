//! Turns: exclusive across awaits, read-only interleaving, reentrancy and cycles, panics,
//! deadlines and timers.

use std::sync::Arc;
use std::time::Duration;

use granary::{CallError, GrainId, SiloEvent};

use crate::probe::{Counters, EchoGrain, ProbeGrain, silo};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turns_are_exclusive_across_awaits() {
    let counters = Arc::new(Counters::default());
    let silo = silo(&counters).await;
    let probe = silo.client().grain::<ProbeGrain>("exclusive");
    let calls: Vec<_> = (0..30)
        .map(|_| {
            let probe = probe.clone();
            tokio::spawn(async move { probe.slow_increment(2).await })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    // Each turn reads, sleeps, writes: an interleaving would lose increments.
    assert_eq!(probe.count().await.unwrap(), 30);
    assert_eq!(
        Counters::get(&counters.max_in_turn),
        1,
        "never two turns at once"
    );
    silo.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_turns_interleave_with_each_other_only() {
    let counters = Arc::new(Counters::default());
    let silo = silo(&counters).await;
    let probe = silo.client().grain::<ProbeGrain>("reader");
    let reads: Vec<_> = (0..8)
        .map(|_| {
            let probe = probe.clone();
            tokio::spawn(async move { probe.slow_read(50).await })
        })
        .collect();
    for read in reads {
        read.await.unwrap().unwrap();
    }
    assert!(
        Counters::get(&counters.max_in_turn) >= 2,
        "read-only turns overlapped"
    );
    silo.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycle_between_non_reentrant_grains_fails_fast_and_names_the_chain() {
    let counters = Arc::new(Counters::default());
    let silo = silo(&counters).await;
    let a = silo
        .client()
        .grain::<ProbeGrain>("a")
        .with_timeout(Duration::from_secs(30));
    let started = tokio::time::Instant::now();
    let err = a.bounce("b".into()).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "failed fast, not at the 30 s deadline"
    );
    let CallError::Cycle { grain, chain } = &err else {
        panic!("expected a cycle, got {err}")
    };
    assert_eq!(*grain, GrainId::new("probe", "a"));
    let chain: Vec<String> = chain.iter().map(ToString::to_string).collect();
    assert_eq!(chain, ["probe/a", "probe/b", "probe/a"]);
    assert!(
        err.to_string().contains("probe/a -> probe/b -> probe/a"),
        "{err}"
    );
    // Both grains still work afterwards.
    assert_eq!(a.count().await.unwrap(), 0);
    silo.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_chain_reentrancy_completes_for_reentrant_grains() {
    let counters = Arc::new(Counters::default());
    let silo = silo(&counters).await;
    let a = silo.client().grain::<EchoGrain>("a");
    // a.bounce sets a's count to 7, then b asks a for its count on the same chain.
    assert_eq!(a.bounce("b".into()).await.unwrap(), 7);
    silo.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_is_contained_and_the_grain_comes_back_clean() {
    let counters = Arc::new(Counters::default());
    let silo = silo(&counters).await;
    let mut events = silo.events();
    let probe = silo.client().grain::<ProbeGrain>("fragile");
    let bystander = silo.client().grain::<ProbeGrain>("bystander");
    probe.set(5).await.unwrap();
    bystander.set(9).await.unwrap();
    let err = probe.explode().await.unwrap_err();
    assert!(
        matches!(&err, CallError::GrainPanicked { message, .. } if message.contains("boom")),
        "{err}"
    );
    let id = GrainId::new("probe", "fragile");
    events
        .wait_for(|e| matches!(e, SiloEvent::Deactivated(g, _) if *g == id))
        .await
        .unwrap();
    assert_eq!(
        probe.count().await.unwrap(),
        5,
        "the panicking turn's change was not kept"
    );
    assert_eq!(
        bystander.count().await.unwrap(),
        9,
        "other grains kept running"
    );
    assert_eq!(
        Counters::get(&counters.deactivations),
        0,
        "on_deactivate does not run after a panic"
    );
    silo.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_deadline_is_a_timeout_with_unknown_outcome() {
    let counters = Arc::new(Counters::default());
    let silo = silo(&counters).await;
    let probe = silo.client().grain::<ProbeGrain>("slow");
    let impatient = probe.clone().with_timeout(Duration::from_millis(50));
    let err = impatient.slow_increment(300).await.unwrap_err();
    assert!(matches!(err, CallError::Timeout { .. }), "{err}");
    assert!(err.to_string().contains("outcome is unknown"), "{err}");
    assert!(!err.is_retryable());
    assert!(err.outcome_unknown());
    // The turn was not cut short: it completes, as an unknown outcome may.
    assert_eq!(probe.count().await.unwrap(), 1);
    silo.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_never_overlap_and_die_with_the_activation() {
    let counters = Arc::new(Counters::default());
    let silo = silo(&counters).await;
    let mut events = silo.events();
    let probe = silo.client().grain::<ProbeGrain>("ticker");
    probe.start_ticking(5).await.unwrap(); // period 5 ms, each tick works 30 ms
    // Await ticks as they finish, under a deadline.
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let next = counters.tick_done.notified();
            if Counters::get(&counters.ticks) >= 4 {
                break;
            }
            next.await;
        }
    })
    .await
    .expect("four ticks within 10 s");
    assert_eq!(
        Counters::get(&counters.max_ticks_running),
        1,
        "a tick never overlaps the previous one"
    );
    probe.retire().await.unwrap();
    let id = GrainId::new("probe", "ticker");
    events
        .wait_for(|e| matches!(e, SiloEvent::Deactivated(g, _) if *g == id))
        .await
        .unwrap();
    let after = Counters::get(&counters.ticks);
    // An absence can only be observed over time: a timer that outlived its activation would
    // tick again within a few of its 5 ms periods.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        Counters::get(&counters.ticks),
        after,
        "no tick after deactivation"
    );
    assert!(
        !silo.silo().is_active(&id),
        "ticks alone did not reactivate the grain"
    );
    silo.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_errors_reach_the_caller() {
    let counters = Arc::new(Counters::default());
    let silo = silo(&counters).await;
    let err = silo
        .client()
        .grain::<ProbeGrain>("no")
        .refuse()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CallError::Rejected { reason, .. } if reason == "not today"),
        "{err}"
    );
    silo.shutdown().await.unwrap();
}

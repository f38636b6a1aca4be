//! Shutdown: bounded, persists what grains save on deactivation, refuses new work.

use std::sync::Arc;
use std::time::Duration;

use granary::{CallError, GrainId};
use granary_testkit::TestSilo;

use crate::probe::{Counters, ProbeGrain, ProbeState, silo};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_deactivates_every_grain_and_persists() {
    let counters = Arc::new(Counters::default());
    let silo = silo(&counters).await;
    let client = silo.client();
    for i in 0..50 {
        client
            .grain::<ProbeGrain>(format!("p{i}"))
            .set(i)
            .await
            .unwrap();
    }
    let store = silo.store().clone();
    let started = tokio::time::Instant::now();
    silo.shutdown().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "within the shutdown timeout"
    );
    assert_eq!(
        Counters::get(&counters.deactivations),
        50,
        "every grain ran on_deactivate"
    );
    for i in 0..50 {
        let (data, _) = store
            .stored(&GrainId::new("probe", format!("p{i}")))
            .unwrap();
        let state: ProbeState =
            granary::codec::state_codec::decode::<ProbeGrain>(&data.unwrap()).unwrap();
        assert_eq!((state.count, state.saved_on_deactivate), (i, 1));
    }
    // References outlive the silo and fail cleanly.
    let err = client
        .grain::<ProbeGrain>("late")
        .count()
        .await
        .unwrap_err();
    assert_eq!(err, CallError::ShuttingDown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_refuses_new_activations_but_finishes_running_turns() {
    let counters = Arc::new(Counters::default());
    let silo = silo(&counters).await;
    let probe = silo.client().grain::<ProbeGrain>("busy");
    probe.set(1).await.unwrap();
    let running = tokio::spawn({
        let probe = probe.clone();
        async move { probe.slow_increment(100).await }
    });
    // Let the slow turn start before shutting down.
    while Counters::get(&counters.in_turn) == 0 {
        tokio::task::yield_now().await;
    }
    let client = silo.client();
    let shutdown = tokio::spawn(silo.shutdown());
    assert_eq!(
        running.await.unwrap().unwrap(),
        2,
        "the running turn finished"
    );
    shutdown.await.unwrap().unwrap();
    assert_eq!(
        client.grain::<ProbeGrain>("new").count().await.unwrap_err(),
        CallError::ShuttingDown
    );
}

#[tokio::test]
async fn duplicate_type_names_are_refused_at_start() {
    let err = TestSilo::start(|b| {
        b.register::<crate::probe::EchoGrain>()
            .register::<crate::probe::EchoGrain>()
    })
    .await
    .unwrap_err();
    assert!(err.to_string().contains("echo"), "{err}");
}

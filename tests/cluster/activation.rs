//! Activation: exactly one per grain, state loaded before the first turn, kept across
//! deactivation.

use std::sync::Arc;
use std::time::Duration;

use granary::{DeactivationReason, GrainId, SiloEvent};

use crate::probe::{Counters, ProbeGrain, ProbeState, silo, silo_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_calls_make_exactly_one_activation() {
    let counters = Arc::new(Counters::default());
    let silo = silo(&counters).await;
    let client = silo.client();
    let calls = (0..64).map(|_| {
        let probe = client.grain::<ProbeGrain>("cold");
        tokio::spawn(async move { probe.slow_increment(0).await })
    });
    let mut results: Vec<u32> = Vec::new();
    for call in calls {
        results.push(call.await.unwrap().unwrap());
    }
    results.sort_unstable();
    assert_eq!(
        results,
        (1..=64).collect::<Vec<_>>(),
        "every call ran once, one after the other"
    );
    assert_eq!(Counters::get(&counters.activations), 1);
    assert_eq!(silo.silo().activation_count(), 1);
    silo.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_grains_deactivate_and_come_back_with_their_state() {
    let counters = Arc::new(Counters::default());
    let silo = silo_with(&counters, Duration::ZERO, |c| c).await; // test profile: 200 ms idle
    let mut events = silo.events();
    let probe = silo.client().grain::<ProbeGrain>("sleepy");
    probe.set(41).await.unwrap();
    let id = GrainId::new("probe", "sleepy");
    events
        .wait_for(|e| matches!(e, SiloEvent::Deactivated(g, DeactivationReason::Idle) if *g == id))
        .await
        .unwrap();
    assert!(!silo.silo().is_active(&id));
    assert_eq!(
        probe.slow_increment(0).await.unwrap(),
        42,
        "state survived the deactivation"
    );
    assert_eq!(
        probe.saved().await.unwrap(),
        1,
        "on_deactivate ran and its write was kept"
    );
    assert_eq!(Counters::get(&counters.activations), 2);
    silo.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_racing_a_deactivation_are_rerouted_to_the_next_activation() {
    let counters = Arc::new(Counters::default());
    // on_deactivate takes 100 ms: calls arriving meanwhile must wait for it and then reach a
    // fresh activation that sees what it saved.
    let silo = silo_with(&counters, Duration::from_millis(100), |c| {
        granary::SiloConfig {
            idle_timeout: Duration::from_secs(60),
            ..c
        }
    })
    .await;
    let mut events = silo.events();
    let client = silo.client();
    let probe = client.grain::<ProbeGrain>("racer");
    probe.set(10).await.unwrap();
    probe.retire().await.unwrap();
    let racing: Vec<_> = (0..20)
        .map(|_| {
            let probe = probe.clone();
            tokio::spawn(async move { probe.slow_increment(1).await })
        })
        .collect();
    let mut results = Vec::new();
    for call in racing {
        results.push(
            call.await
                .unwrap()
                .expect("no racing call is dropped or failed"),
        );
    }
    results.sort_unstable();
    assert_eq!(results, (11..=30).collect::<Vec<_>>());
    let id = GrainId::new("probe", "racer");
    events
        .wait_for(
            |e| matches!(e, SiloEvent::Deactivated(g, DeactivationReason::Requested) if *g == id),
        )
        .await
        .unwrap();
    assert_eq!(
        probe.saved().await.unwrap(),
        1,
        "the next activation loaded what on_deactivate saved"
    );
    assert_eq!(Counters::get(&counters.activations), 2);
    assert_eq!(Counters::get(&counters.deactivations), 1);
    silo.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_activation_fails_every_waiting_call_and_is_retried_later() {
    let counters = Arc::new(Counters::default());
    let silo = silo(&counters).await;
    let broken = silo.client().grain::<crate::probe::BrokenGrain>("b");
    let calls: Vec<_> = (0..5)
        .map(|_| broken.clone())
        .map(|b| tokio::spawn(async move { b.hello().await }))
        .collect();
    for call in calls {
        let err = call.await.unwrap().unwrap_err();
        assert!(
            matches!(err, granary::CallError::ActivationFailed { .. }),
            "{err}"
        );
        assert!(
            err.to_string().contains("no database"),
            "the reason reaches the caller: {err}"
        );
    }
    assert_eq!(
        silo.silo().activation_count(),
        0,
        "the failed activation is gone"
    );
    assert!(
        matches!(
            broken.hello().await,
            Err(granary::CallError::ActivationFailed { .. })
        ),
        "and is tried again"
    );
    silo.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_stored_state_fails_activation_without_overwriting_it() {
    let counters = Arc::new(Counters::default());
    let silo = silo(&counters).await;
    let id = GrainId::new("probe", "corrupt");
    silo.store().put_raw(&id, vec![0xc1, 0xde, 0xad]);
    let err = silo
        .client()
        .grain::<ProbeGrain>("corrupt")
        .count()
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            granary::CallError::Storage {
                source: granary::StorageError::Corrupt { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("probe/corrupt"), "{err}");
    let (data, _) = silo.store().stored(&id).unwrap();
    assert_eq!(
        data,
        Some(vec![0xc1, 0xde, 0xad]),
        "the bad blob is left for a human, not replaced by a default"
    );
    silo.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn references_kept_in_state_come_back_bound() {
    let counters = Arc::new(Counters::default());
    let silo = silo(&counters).await;
    let mut events = silo.events();
    let client = silo.client();
    client.grain::<ProbeGrain>("friend").set(12).await.unwrap();
    let probe = client.grain::<ProbeGrain>("keeper");
    probe.befriend("friend".into()).await.unwrap();
    probe.retire().await.unwrap();
    let id = GrainId::new("probe", "keeper");
    events
        .wait_for(|e| matches!(e, SiloEvent::Deactivated(g, _) if *g == id))
        .await
        .unwrap();
    // Reloaded from storage: the reference was deserialized and must call through this silo.
    assert_eq!(probe.ask_friend().await.unwrap(), 12);
    silo.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_that_fails_with_unsaved_changes_leaves_nothing_behind() {
    let counters = Arc::new(Counters::default());
    let silo = silo(&counters).await;
    let mut events = silo.events();
    let probe = silo.client().grain::<ProbeGrain>("fickle");
    probe.set(7).await.unwrap();
    // A failure that changed nothing keeps the activation.
    assert!(probe.refuse().await.is_err());
    assert_eq!(Counters::get(&counters.activations), 1);
    let err = probe.set_then_fail(99).await.unwrap_err();
    assert!(err.to_string().contains("changed my mind"), "{err}");
    let id = GrainId::new("probe", "fickle");
    events
        .wait_for(|e| matches!(e, SiloEvent::Deactivated(g, DeactivationReason::FailedWithUnsavedState) if *g == id))
        .await
        .unwrap();
    assert_eq!(
        probe.count().await.unwrap(),
        7,
        "the next call sees the committed state, not the failed turn's change"
    );
    assert_eq!(Counters::get(&counters.activations), 2);
    assert_eq!(
        Counters::get(&counters.deactivations),
        0,
        "on_deactivate did not run on the unsaved state"
    );
    silo.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_write_is_a_conflict_and_the_next_call_reloads() {
    let counters = Arc::new(Counters::default());
    let silo = silo(&counters).await;
    let mut events = silo.events();
    let probe = silo.client().grain::<ProbeGrain>("contested");
    probe.set(1).await.unwrap();
    // Someone else commits behind the activation's back (as a zombie's rival would).
    let id = GrainId::new("probe", "contested");
    let rival = ProbeState {
        count: 50,
        ..ProbeState::default()
    };
    silo.store().put_raw(
        &id,
        granary::codec::state_codec::encode::<ProbeGrain>(&rival).unwrap(),
    );
    let err = probe.set(2).await.unwrap_err();
    assert!(
        matches!(err, granary::CallError::StorageConflict { .. }),
        "{err}"
    );
    assert!(err.is_retryable());
    events
        .wait_for(|e| matches!(e, SiloEvent::Deactivated(g, DeactivationReason::StorageConflict) if *g == id))
        .await
        .unwrap();
    assert_eq!(
        probe.count().await.unwrap(),
        50,
        "the next activation loaded the rival's state"
    );
    assert_eq!(
        Counters::get(&counters.deactivations),
        0,
        "on_deactivate did not run on stale state"
    );
    silo.shutdown().await.unwrap();
}

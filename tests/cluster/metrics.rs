//! A silo's metrics in the Prometheus text format.

use std::sync::Arc;

use crate::probe::{Counters, ProbeGrain, silo};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_activations_and_durations_are_counted_by_type_and_method() {
    let counters = Arc::new(Counters::default());
    let silo = silo(&counters).await;
    for key in ["a", "b", "c"] {
        let probe = silo.client().grain::<ProbeGrain>(key);
        probe.count().await.unwrap();
        probe.count().await.unwrap();
    }
    silo.client().grain::<ProbeGrain>("a").set(5).await.unwrap();
    let text = silo.silo().metrics().render().unwrap();
    for line in [
        r#"granary_calls_total{grain_type="probe",method="count"} 6"#,
        r#"granary_calls_total{grain_type="probe",method="set"} 1"#,
        r#"granary_activations{grain_type="probe"} 3"#,
        "granary_queued_requests 0",
        "granary_storage_conflicts_total 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in:\n{text}"
        );
    }
    assert!(
        text.contains(
            r#"granary_call_duration_seconds_count{grain_type="probe",method="count"} 6"#
        ),
        "{text}"
    );
    let metrics = silo.silo().metrics();
    silo.shutdown().await.unwrap();
    assert_eq!(metrics.render(), None, "a handle outlives nothing");
}

//! Tests of the sharded call counters.

use std::sync::Arc;
use std::time::Duration;

use super::{BUCKETS, CallStats, bucket_of, upper_bound_seconds};

#[test]
fn a_duration_lands_in_the_first_bucket_whose_bound_holds_it() {
    for (nanos, bucket) in [
        (0, 0),
        (10_000, 0),
        (10_001, 1),
        (20_000, 1),
        (20_001, 2),
        (10_000 << 19, 19),
        ((10_000 << 19) + 1, BUCKETS),
        (u64::MAX, BUCKETS),
    ] {
        assert_eq!(bucket_of(nanos), bucket, "{nanos} ns");
    }
    assert!((upper_bound_seconds(0) - 0.000_01).abs() < 1e-12);
    assert!(upper_bound_seconds(BUCKETS).is_infinite());
}

#[test]
fn calls_from_many_threads_are_all_counted_and_only_timed_ones_are_in_the_histogram() {
    let stats = Arc::new(CallStats::default());
    let threads: Vec<_> = (0..12)
        .map(|t| {
            let stats = stats.clone();
            std::thread::spawn(move || {
                for i in 0..1_000_u64 {
                    // Every other call is one-way (not timed); the timed ones take 1 µs or 1 s.
                    let took = (i % 2 == 0).then(|| {
                        if t == 0 && i == 0 {
                            Duration::from_secs(1)
                        } else {
                            Duration::from_micros(1)
                        }
                    });
                    stats.record(took, i % 10 == 0);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let snap = stats.snapshot();
    assert_eq!(snap.calls, 12_000);
    assert_eq!(snap.errors, 1_200, "every tenth call failed");
    assert_eq!(snap.timed, 6_000);
    assert_eq!(snap.buckets.len(), BUCKETS + 1);
    assert_eq!(snap.buckets[0].1, 5_999);
    // 1 s is over 10 µs · 2^16 = 0.65 s and under 10 µs · 2^17 = 1.31 s.
    assert_eq!(snap.buckets[17].1, 1);
    let expected = 1.0 + 5_999.0 * 0.000_001;
    assert!(
        (snap.sum_seconds - expected).abs() < 1e-9,
        "{}",
        snap.sum_seconds
    );
}

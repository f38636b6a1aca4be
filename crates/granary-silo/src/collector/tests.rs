//! The collection schedule: pass interval and passes per type.

use std::time::Duration;

use granary_core::IdleAfter;

use super::Schedule;

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn types_without_their_own_policy_use_the_silo_default() {
    let schedule = Schedule::new(
        900 * SECOND,
        60 * SECOND,
        &[("a", IdleAfter::SiloDefault), ("b", IdleAfter::SiloDefault)],
    );
    assert_eq!(schedule.quantum(), 60 * SECOND);
    // 15 passes make 15 minutes; one more because the stamp may be a whole pass old.
    assert_eq!(schedule.passes("a"), 16);
    assert_eq!(schedule.passes("b"), 16);
    assert_eq!(schedule.passes("unregistered"), 16);
}

#[test]
fn a_shorter_type_shrinks_the_quantum_and_keeps_the_others_times() {
    let schedule = Schedule::new(
        900 * SECOND,
        60 * SECOND,
        &[
            ("fast", IdleAfter::After(30 * SECOND)),
            ("slow", IdleAfter::After(3600 * SECOND)),
            ("other", IdleAfter::SiloDefault),
        ],
    );
    assert_eq!(schedule.quantum(), 30 * SECOND);
    assert_eq!(schedule.passes("fast"), 2);
    assert_eq!(schedule.passes("slow"), 121);
    assert_eq!(schedule.passes("other"), 31);
}

#[test]
fn never_is_never_reached_and_tiny_times_do_not_spin() {
    let schedule = Schedule::new(
        SECOND,
        SECOND,
        &[
            ("kept", IdleAfter::Never),
            ("tiny", IdleAfter::After(Duration::from_nanos(1))),
            ("huge", IdleAfter::After(Duration::MAX)),
        ],
    );
    assert_eq!(schedule.passes("kept"), u64::MAX);
    assert_eq!(schedule.quantum(), Duration::from_millis(1));
    assert_eq!(schedule.passes("tiny"), 2);
    assert!(
        schedule.passes("huge") < u64::MAX,
        "a finite time is collected eventually"
    );
}

//! The checker against handmade histories: a clean one, and one per violation it must catch.

use std::time::Duration;

use super::*;
use crate::history::{Attempt, EventRecord, FaultKind, Injection, ListDigest, Outcome};
use crate::unavailability::{Percentiles, Window, windows};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// An acknowledged append of `value` to `key` that returned `list`, from `start` to `end` ms.
fn acked(key: i64, value: u64, list: &[u64], start: u64, end: u64) -> Attempt {
    Attempt {
        key,
        value,
        start: ms(start),
        end: ms(end),
        outcome: Outcome::Acked(ListDigest::of(list)),
    }
}

fn failed(key: i64, value: u64, start: u64, end: u64) -> Attempt {
    Attempt {
        key,
        value,
        start: ms(start),
        end: ms(end),
        outcome: Outcome::Failed("Timeout".into()),
    }
}

fn event(key: i64, value: u64) -> EventRecord {
    EventRecord {
        id: format!("chaos.list:int:{key}:{value}:0"),
        key,
        value,
    }
}

/// Key 1 gets 10, 11 (acknowledged) and 12 (failed, but committed); key 2 gets 20; every
/// committed value has its event.
fn clean() -> History {
    History {
        attempts: vec![
            acked(1, 10, &[10], 0, 5),
            acked(1, 11, &[10, 11], 6, 9),
            failed(1, 12, 10, 30),
            failed(2, 21, 12, 40),
            acked(2, 20, &[20], 41, 45),
        ],
        injections: vec![Injection {
            at: ms(8),
            fault: FaultKind::Kill,
        }],
        final_lists: [(1, vec![10, 11, 12]), (2, vec![20])].into(),
        events: vec![event(1, 10), event(1, 11), event(1, 12), event(2, 20)],
        end: ms(50),
    }
}

#[test]
fn a_clean_history_has_no_violation() {
    let verdict = check(&clean());
    assert_eq!(verdict.violations(), 0, "{verdict:?}");
    assert!(verdict.examples.is_empty());
}

#[test]
fn a_lost_acknowledged_append_is_caught() {
    let mut history = clean();
    history.final_lists.insert(1, vec![10, 12]);
    history.events.retain(|e| e.value != 11);
    let verdict = check(&history);
    assert_eq!(verdict.lost, 1, "{verdict:?}");
    // [10, 11] is no longer a prefix of the final list either.
    assert_eq!(verdict.divergent, 1, "{verdict:?}");
    assert_eq!(verdict.violations(), 2, "{verdict:?}");
    assert!(
        verdict.examples[1].starts_with("lost: key 1 value 11"),
        "{verdict:?}"
    );
}

#[test]
fn a_divergent_acknowledged_list_is_caught() {
    let mut history = clean();
    // The append of 11 answered [11] (as if 10 were not there), yet the final list keeps 10.
    history.attempts[1] = acked(1, 11, &[11], 6, 9);
    let verdict = check(&history);
    assert_eq!(
        (verdict.divergent, verdict.violations()),
        (1, 1),
        "{verdict:?}"
    );
    // An acknowledged list that does not end with its own value diverges too.
    let mut history = clean();
    history.attempts[1] = acked(1, 11, &[10], 6, 9);
    assert_eq!(check(&history).divergent, 1);
}

#[test]
fn a_phantom_value_is_caught() {
    let mut history = clean();
    history.final_lists.insert(2, vec![20, 99]);
    history.events.push(event(2, 99));
    let verdict = check(&history);
    assert_eq!(
        (verdict.phantom, verdict.violations()),
        (1, 1),
        "{verdict:?}"
    );
    // A value attempted on another key is a phantom here too.
    let mut history = clean();
    history.final_lists.insert(2, vec![20, 10]);
    history.events.push(event(2, 10));
    assert_eq!(check(&history).phantom, 1);
}

#[test]
fn a_duplicate_value_is_caught() {
    let mut history = clean();
    history.final_lists.insert(1, vec![10, 11, 12, 11]);
    history.events.push(EventRecord {
        id: "another commit".into(),
        key: 1,
        value: 11,
    });
    let verdict = check(&history);
    assert_eq!(verdict.duplicates, 1, "{verdict:?}");
    assert_eq!(verdict.events_duplicate, 1, "{verdict:?}");
    assert_eq!(verdict.violations(), 2, "{verdict:?}");
}

#[test]
fn a_missing_event_is_caught_even_for_a_failed_call_that_committed() {
    let mut history = clean();
    history.events.retain(|e| e.value != 12);
    let verdict = check(&history);
    assert_eq!(
        (verdict.events_missing, verdict.violations()),
        (1, 1),
        "{verdict:?}"
    );
}

#[test]
fn an_event_of_an_uncommitted_value_is_caught() {
    let mut history = clean();
    // 21 failed and is not in the final list, but an event says it was committed.
    history.events.push(event(2, 21));
    let verdict = check(&history);
    assert_eq!(
        (verdict.events_phantom, verdict.violations()),
        (1, 1),
        "{verdict:?}"
    );
    // One id naming two different values is a phantom too.
    let mut history = clean();
    let mut twin = event(1, 10);
    twin.value = 11;
    history.events.push(twin);
    assert_eq!(check(&history).events_phantom, 1);
}

#[test]
fn redeliveries_of_one_event_id_are_allowed_and_counted() {
    let mut history = clean();
    history.events.push(event(1, 10));
    history.events.push(event(1, 10));
    let verdict = check(&history);
    assert_eq!(verdict.violations(), 0, "{verdict:?}");
    assert_eq!(verdict.event_redeliveries, 2);
}

#[test]
fn windows_run_from_a_failure_to_the_next_success_that_started_after_it() {
    let history = clean();
    let key1: Vec<_> = history.attempts.iter().filter(|a| a.key == 1).collect();
    // 12 failed at 10 and no success followed: open until the end of the run.
    assert_eq!(windows(&key1, ms(50)), vec![window(10, 30, 50)]);
    let key2: Vec<_> = history.attempts.iter().filter(|a| a.key == 2).collect();
    assert_eq!(windows(&key2, ms(50)), vec![window(12, 40, 45)]);
    // Failures inside an open window belong to it; a success that started before the
    // failure does not close it.
    let attempts = [
        acked(3, 1, &[1], 0, 100),
        failed(3, 2, 10, 20),
        failed(3, 3, 15, 25),
        acked(3, 4, &[1, 4], 30, 35),
        failed(3, 5, 40, 41),
        acked(3, 6, &[1, 4, 6], 42, 43),
    ];
    let refs: Vec<_> = attempts.iter().collect();
    assert_eq!(
        windows(&refs, ms(50)),
        vec![window(10, 20, 35), window(40, 41, 43)]
    );
}

fn window(opened: u64, noticed: u64, closed: u64) -> Window {
    Window {
        opened: ms(opened),
        noticed: ms(noticed),
        closed: ms(closed),
    }
}

#[test]
fn windows_are_attributed_to_the_latest_fault_before_their_first_failure_ended() {
    let verdict = check(&clean());
    // Both windows opened after the kill at 8 ms: 40 ms (key 1) and 33 ms (key 2).
    assert_eq!(
        verdict.unavailability_ms,
        [(
            "kill".to_owned(),
            Percentiles {
                windows: 2,
                p50: 33,
                p99: 40,
                max: 40
            }
        )]
        .into()
    );
    // A call that started before the fault and failed because of it: the kill's window.
    let mut history = clean();
    history.injections[0].at = ms(29);
    assert_eq!(check(&history).unavailability_ms["kill"].windows, 2);
    // A failure seen before any fault is nobody's.
    history.injections[0].at = ms(35);
    let verdict = check(&history);
    assert_eq!(verdict.unavailability_ms["none"].windows, 1);
    assert_eq!(verdict.unavailability_ms["kill"].windows, 1);
}

#[test]
fn percentiles_use_the_nearest_rank() {
    assert_eq!(Percentiles::of(Vec::new()), Percentiles::default());
    let p = Percentiles::of((1..=200).rev().collect());
    assert_eq!((p.windows, p.p50, p.p99, p.max), (200, 100, 198, 200));
}

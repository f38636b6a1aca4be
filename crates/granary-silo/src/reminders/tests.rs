//! The reminder service's schedule, without a runtime.

use super::*;

fn grain(n: u32) -> GrainId {
    GrainId::new("t.reminded", i64::from(n))
}

fn table() -> crate::memory::MemoryStore {
    crate::memory::MemoryStore::new()
}

#[test]
fn the_schedule_gives_the_earliest_live_entry_and_keeps_one_slot_per_reminder() {
    let mut schedule = Schedule::default();
    schedule.put(grain(1), "a".into(), 300, 300);
    schedule.put(grain(2), "a".into(), 100, 100);
    assert_eq!(schedule.next_at(), Some(100));
    // Rescheduling replaces the reminder's slot: the old heap entry is stale and skipped.
    schedule.put(grain(2), "a".into(), 100, 500);
    assert_eq!(schedule.next_at(), Some(300));
    assert_eq!(schedule.slots.len(), 2);
    assert!(schedule.contains(&grain(2), "a"));
    assert!(!schedule.contains(&grain(2), "b"));
}

#[test]
fn an_in_flight_tick_is_not_sent_again_and_its_failure_retries_the_same_due_time() {
    let mut schedule = Schedule::default();
    schedule.put(grain(1), "a".into(), 100, 100);
    let Reverse((_, seq)) = schedule.heap.pop().expect("an entry");
    schedule.slots.get_mut(&seq).expect("live").in_flight = true;
    assert_eq!(schedule.next_at(), None, "in flight: not sent twice");
    assert!(
        schedule.contains(&grain(1), "a"),
        "a scan does not add it again"
    );
    let owns = |_: u32| true;
    let table = table();
    settle(
        &mut schedule,
        seq,
        Err(CallError::ShuttingDown),
        &table,
        &owns,
        &Window {
            now: unix_ms(std::time::SystemTime::now()),
            lookahead: 1_000,
            retry: 50,
        },
    );
    let seq = schedule.by_key[&(grain(1), "a".to_owned())];
    assert_eq!(schedule.slots[&seq].due_ms, 100, "the same tick");
    assert!(
        schedule.next_at().expect("scheduled") > 100,
        "after the retry delay"
    );
}

#[test]
fn a_delivered_tick_schedules_the_next_only_when_due_soon_and_owned() {
    let table = table();
    let now = unix_ms(std::time::SystemTime::now());
    for (next, owned, expected) in [
        (Some(now + 10), true, true),
        (Some(now + 10), false, false),
        (Some(now + 1_000_000), true, false),
        (None, true, false),
    ] {
        let mut schedule = Schedule::default();
        schedule.put(grain(1), "a".into(), 100, 100);
        let seq = schedule.by_key[&(grain(1), "a".to_owned())];
        let owns = move |_: u32| owned;
        let window = Window {
            now,
            lookahead: 5_000,
            retry: 50,
        };
        settle(&mut schedule, seq, Ok(next), &table, &owns, &window);
        assert_eq!(
            schedule.contains(&grain(1), "a"),
            expected,
            "{next:?} {owned}"
        );
    }
}

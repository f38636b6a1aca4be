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

#[tokio::test]
async fn a_scan_reads_every_page_of_the_owned_shards_and_keeps_what_is_scheduled() {
    use granary_core::provider::{
        Claim, Commit, GrainAddress, Reminder, ReminderChange, StateChange, StateStore,
    };
    use granary_core::{ActivationId, SiloId};
    let table = table();
    // More than a page: the scan must ask for the next one.
    let (grains, per_grain) = (21_u32, 100_u64);
    for g in 0..grains {
        let address = GrainAddress {
            grain: grain(g),
            silo: SiloId::new("t", 1),
            activation: ActivationId::new(),
        };
        let Claim::Won(loaded) = table.claim(&address, None).await.unwrap() else {
            panic!("a fresh grain is free");
        };
        let reminders = (0..per_grain)
            .map(|i| {
                ReminderChange::Set(Reminder {
                    name: format!("r{i}"),
                    period_ms: 1_000,
                    next_due_ms: 1_000 + i,
                })
            })
            .collect();
        table
            .commit(Commit {
                grain: address.grain.clone(),
                activation: address.activation,
                expected_version: loaded.version,
                change: StateChange::Unchanged,
                events: Vec::new(),
                reminders,
            })
            .await
            .unwrap();
    }
    assert!(u64::from(grains) * per_grain > PAGE as u64);
    let mut schedule = Schedule::default();
    // Already scheduled (a retry after a failure, say): the scan leaves it alone.
    schedule.put(grain(0), "r0".into(), 1_000, 7_000);
    let owns = |_: u32| true;
    let mut scan = Scan::start(&table, &owns, 5_000);
    let mut pages = 0;
    while let Some(mut current) = scan {
        let page = current.page.as_mut().await;
        pages += 1;
        scan = current.next(page, &owns, &mut schedule);
    }
    assert_eq!(pages, 2);
    assert_eq!(
        schedule.slots.len(),
        (u64::from(grains) * per_grain) as usize
    );
    let seq = schedule.by_key[&(grain(0), "r0".to_owned())];
    assert_eq!(schedule.slots[&seq].due_ms, 1_000);
    assert_eq!(
        schedule.next_at(),
        Some(1_000),
        "the others, from their due times"
    );
    assert!(
        Scan::start(&table, &|_: u32| false, 5_000).is_none(),
        "a silo that owns no shard reads nothing"
    );
}

//! The state-store conformance suite: the same tests for every [`StateStore`].
//!
//! A store passes when [`store_conformance_tests!`](crate::store_conformance_tests) generates a
//! green test module for it. The in-memory store runs the suite in this crate's tests, the Redis
//! store in `granary-redis`'s, against a real Redis. The cases cover what a grain relies on:
//! missing state, write and read back, version conflicts, racing activations (only one
//! commits), a replaced activation (it commits neither state nor events), clear, the outbox
//! (atomic with the state, stable ids, ack), and, through a real silo, corrupt blobs and schema
//! upgrades. [`membership_rows_keep_hosted_types_and_roles`] checks a membership table's rows
//! (the in-memory and the Redis table run it).
//!
//! ```text
//! granary_testkit::store_conformance_tests!(async { MyHarness::new().await });
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::future::{BoxFuture, join_all};
use granary::codec::state_codec::{self, StateBlob, StateError};
use granary::provider::{
    Claim, Commit, DueReminder, GrainAddress, GrainDirectory, Loaded, MembershipEntry,
    MembershipTable, Outbox, OutboxEntry, Reminder, ReminderChange, ReminderTable, ShardRead,
    SiloStatus, StateChange, StateStore,
};
use granary::{
    ActivationId, CallError, GrainContext, GrainId, PublishedEvent, Silo, SiloConfig, SiloId,
    StorageError,
};
use serde::{Deserialize, Serialize};

/// A store under test, with the back doors the suite needs.
pub trait StoreUnderTest: Send + Sync + 'static {
    /// The store.
    type Store: StateStore + GrainDirectory + Outbox;

    /// The store (the same one on every call).
    fn store(&self) -> Arc<Self::Store>;

    /// Writes raw state bytes for `grain`, outside any activation, advancing its version.
    fn put_raw<'a>(&'a self, grain: &'a GrainId, data: &'a [u8]) -> BoxFuture<'a, ()>;

    /// The stored bytes and version of `grain`.
    fn read_raw<'a>(&'a self, grain: &'a GrainId) -> BoxFuture<'a, (Option<Vec<u8>>, u64)>;
}

/// Generates one `#[tokio::test]` per conformance case, each on a fresh harness made by
/// `$make` (an expression evaluating to a future of a [`StoreUnderTest`]).
///
/// `store_conformance_tests!(in_one_test <name>, $factory)` generates instead one test named
/// `<name>` that runs every case in turn, each on a fresh harness made by calling `$factory`
/// (an expression, evaluated once inside the test, giving a closure that returns a future of a
/// harness): for stores whose server is costly to start, e.g. a private Redis Cluster that the
/// closure holds and all cases share.
#[macro_export]
macro_rules! store_conformance_tests {
    (in_one_test $test:ident, $factory:expr) => {
        $crate::store_conformance_tests!(@list [one $test $factory]);
    };
    (@list [$($how:tt)*]) => {
        $crate::store_conformance_tests!(@cases $($how)*;
            missing_state_loads_as_nothing,
            a_commit_is_read_back_by_the_next_activation,
            a_stale_version_conflicts_and_writes_nothing,
            racing_activations_only_one_claims_and_commits,
            a_replaced_activation_commits_neither_state_nor_events,
            clear_deletes_the_state_and_advances_the_version,
            events_commit_without_a_state_change,
            the_outbox_is_never_ahead_of_or_behind_the_state,
            acked_events_leave_the_outbox,
            a_read_after_held_entries_returns_what_follows_them,
            dead_letters_leave_the_outbox_and_come_back_when_redriven,
            the_directory_names_the_owner_and_unregisters_only_it,
            a_corrupt_blob_fails_activation_and_is_left_alone,
            an_old_schema_is_upgraded_on_load_and_stored_new_on_write,
            reminders_commit_with_the_grain_and_are_indexed_by_due_time,
            a_refused_commit_changes_no_reminder,
            due_reminders_page_through_a_shard,
        );
    };
    (@cases each $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::conformance::$case(&$make.await).await;
            }
        )*
    };
    (@cases one $test:ident $factory:expr; $($case:ident),* $(,)?) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $test() {
            let make = $factory;
            $(
                eprintln!("conformance case {}", stringify!($case));
                $crate::conformance::$case(&make().await).await;
            )*
        }
    };
    ($make:expr) => {
        $crate::store_conformance_tests!(@list [each $make]);
    };
}

fn address(grain: &GrainId, silo: &str) -> GrainAddress {
    GrainAddress {
        grain: grain.clone(),
        silo: SiloId::new(silo, 1),
        activation: ActivationId::new(),
    }
}

/// A grain id no other test uses.
fn fresh(type_name: &'static str) -> GrainId {
    GrainId::new(type_name, uuid::Uuid::now_v7())
}

fn event(n: u64) -> PublishedEvent {
    PublishedEvent {
        type_name: "conformance.happened".into(),
        payload: format!("{{\"n\":{n}}}").into_bytes(),
        trace: None,
    }
}

fn write(a: &GrainAddress, expected: u64, data: &[u8], events: Vec<PublishedEvent>) -> Commit {
    Commit {
        grain: a.grain.clone(),
        activation: a.activation,
        expected_version: expected,
        change: StateChange::Write(data.to_vec()),
        events,
        reminders: Vec::new(),
    }
}

fn reminder(name: &str, period_ms: u64, next_due_ms: u64) -> Reminder {
    Reminder {
        name: name.to_owned(),
        period_ms,
        next_due_ms,
    }
}

fn reminder_commit(a: &GrainAddress, expected: u64, changes: Vec<ReminderChange>) -> Commit {
    Commit {
        grain: a.grain.clone(),
        activation: a.activation,
        expected_version: expected,
        change: StateChange::Unchanged,
        events: Vec::new(),
        reminders: changes,
    }
}

fn table<S: StoreUnderTest>(store: &S::Store) -> &dyn ReminderTable {
    store.reminders().expect("the store keeps reminders")
}

/// Every reminder of `shard` due by `until`, in pages of 7, as (grain, name, due) of `grains`.
async fn all_due(
    table: &dyn ReminderTable,
    shard: u32,
    until: u64,
    grains: &[&GrainId],
) -> Vec<(GrainId, String, u64)> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let page = table.due(shard, until, offset, 7).await.expect("due");
        offset += page.len();
        let last = page.len() < 7;
        // Another test's commit between two pages may shift an entry into the next page
        // again: keep each once.
        for DueReminder {
            grain,
            name,
            due_ms,
        } in page
        {
            let entry = (grain, name, due_ms);
            if grains.contains(&&entry.0) && !out.contains(&entry) {
                out.push(entry);
            }
        }
        if last {
            return out;
        }
    }
}

/// A far-future base for due times, so that other tests' reminders (due now) sort before.
const FAR: u64 = 4_000_000_000_000;

async fn claim_won<S: StoreUnderTest>(h: &S, a: &GrainAddress) -> Loaded {
    match h.store().claim(a, None).await {
        Ok(Claim::Won(loaded)) => loaded,
        other => panic!("claim of a free grain: {other:?}"),
    }
}

async fn events_of<S: StoreUnderTest>(h: &S, grain: &GrainId) -> Vec<OutboxEntry> {
    let all = h.store().pending(100_000).await.expect("outbox readable");
    all.into_iter().filter(|e| e.id.grain == *grain).collect()
}

/// A grain never written loads as no data at version 0.
pub async fn missing_state_loads_as_nothing<S: StoreUnderTest>(h: &S) {
    let a = address(&fresh("conformance.c"), "s1");
    let loaded = claim_won(h, &a).await;
    assert_eq!(
        loaded,
        Loaded {
            data: None,
            version: 0
        }
    );
}

/// Versions count commits; the next activation loads the last committed bytes and version.
pub async fn a_commit_is_read_back_by_the_next_activation<S: StoreUnderTest>(h: &S) {
    let grain = fresh("conformance.c");
    let a = address(&grain, "s1");
    claim_won(h, &a).await;
    let store = h.store();
    assert_eq!(store.commit(write(&a, 0, b"one", vec![])).await, Ok(1));
    assert_eq!(store.commit(write(&a, 1, b"two", vec![])).await, Ok(2));
    store.unregister(&a).await.expect("unregister");
    let b = address(&grain, "s2");
    assert_eq!(
        claim_won(h, &b).await,
        Loaded {
            data: Some(b"two".to_vec()),
            version: 2
        }
    );
    assert_eq!(h.read_raw(&grain).await, (Some(b"two".to_vec()), 2));
}

/// A commit against an old version fails with `Conflict` and changes nothing: no state, no
/// events.
pub async fn a_stale_version_conflicts_and_writes_nothing<S: StoreUnderTest>(h: &S) {
    let grain = fresh("conformance.c");
    let a = address(&grain, "s1");
    claim_won(h, &a).await;
    let store = h.store();
    assert_eq!(
        store.commit(write(&a, 0, b"one", vec![event(1)])).await,
        Ok(1)
    );
    assert_eq!(
        store.commit(write(&a, 0, b"stale", vec![event(2)])).await,
        Err(StorageError::Conflict {
            expected: 0,
            actual: 1
        })
    );
    assert_eq!(h.read_raw(&grain).await, (Some(b"one".to_vec()), 1));
    let events = events_of(h, &grain).await;
    assert_eq!(
        events.len(),
        1,
        "the refused commit's event is not in the outbox"
    );
    assert_eq!(events[0].event, event(1));
}

/// Activations on eight silos race for the same cold grain, twenty times: exactly one claim wins
/// each time, the others learn who owns the grain, and only the owner's commit applies.
pub async fn racing_activations_only_one_claims_and_commits<S: StoreUnderTest>(h: &S) {
    let store = h.store();
    for _ in 0..20 {
        let grain = fresh("conformance.c");
        let rivals: Vec<GrainAddress> = (0..8).map(|i| address(&grain, &format!("s{i}"))).collect();
        let claims = join_all(rivals.iter().map(|a| store.claim(a, None))).await;
        let winners: Vec<&GrainAddress> = rivals
            .iter()
            .zip(&claims)
            .filter(|(_, c)| matches!(c, Ok(Claim::Won(_))))
            .map(|(a, _)| a)
            .collect();
        assert_eq!(winners.len(), 1, "exactly one claim wins: {claims:?}");
        let winner = winners[0];
        for claim in &claims {
            if let Ok(Claim::Owned(owner)) = claim {
                assert_eq!(owner, winner, "a losing claim names the winner");
            }
        }
        let commits = join_all(
            rivals
                .iter()
                .map(|a| store.commit(write(a, 0, a.silo.name().as_bytes(), vec![event(0)]))),
        )
        .await;
        let ok: Vec<_> = commits.iter().filter(|c| c.is_ok()).collect();
        assert_eq!(ok.len(), 1, "only the owner commits: {commits:?}");
        assert!(
            commits
                .iter()
                .all(|c| matches!(c, Ok(1) | Err(StorageError::NotOwner))),
            "{commits:?}"
        );
        assert_eq!(
            h.read_raw(&grain).await,
            (Some(winner.silo.name().as_bytes().to_vec()), 1)
        );
        assert_eq!(events_of(h, &grain).await.len(), 1, "one commit's events");
    }
}

/// Once a new activation replaced an old one (whose silo was declared dead), the old one can
/// commit neither state nor events, whatever version it names.
pub async fn a_replaced_activation_commits_neither_state_nor_events<S: StoreUnderTest>(h: &S) {
    let grain = fresh("conformance.c");
    let old = address(&grain, "zombie");
    claim_won(h, &old).await;
    let store = h.store();
    assert_eq!(
        store.commit(write(&old, 0, b"old", vec![event(1)])).await,
        Ok(1)
    );
    let new = address(&grain, "survivor");
    assert_eq!(
        store.claim(&new, None).await,
        Ok(Claim::Owned(old.clone())),
        "a live owner is not replaced without naming it"
    );
    assert_eq!(
        store.claim(&new, Some(&old)).await,
        Ok(Claim::Won(Loaded {
            data: Some(b"old".to_vec()),
            version: 1
        }))
    );
    for expected in [0, 1, 2] {
        assert_eq!(
            store
                .commit(write(&old, expected, b"zombie", vec![event(9)]))
                .await,
            Err(StorageError::NotOwner),
            "the replaced activation is fenced (expected version {expected})"
        );
    }
    assert_eq!(
        store.commit(write(&new, 1, b"new", vec![event(2)])).await,
        Ok(2)
    );
    assert_eq!(h.read_raw(&grain).await, (Some(b"new".to_vec()), 2));
    let events: Vec<PublishedEvent> = events_of(h, &grain)
        .await
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(events, vec![event(1), event(2)], "no zombie event");
}

/// `Clear` removes the state; the version still advances, so event ids stay unique.
pub async fn clear_deletes_the_state_and_advances_the_version<S: StoreUnderTest>(h: &S) {
    let grain = fresh("conformance.c");
    let a = address(&grain, "s1");
    claim_won(h, &a).await;
    let store = h.store();
    store
        .commit(write(&a, 0, b"x", vec![]))
        .await
        .expect("write");
    let clear = Commit {
        change: StateChange::Clear,
        events: vec![event(1)],
        reminders: Vec::new(),
        ..write(&a, 1, b"", vec![])
    };
    assert_eq!(store.commit(clear).await, Ok(2));
    assert_eq!(h.read_raw(&grain).await, (None, 2));
    store.unregister(&a).await.expect("unregister");
    let b = address(&grain, "s2");
    assert_eq!(
        claim_won(h, &b).await,
        Loaded {
            data: None,
            version: 2
        }
    );
    let ids: Vec<u64> = events_of(h, &grain)
        .await
        .iter()
        .map(|e| e.id.version)
        .collect();
    assert_eq!(ids, vec![2]);
}

/// A commit of events alone advances the version and leaves the state as it is.
pub async fn events_commit_without_a_state_change<S: StoreUnderTest>(h: &S) {
    let grain = fresh("conformance.c");
    let a = address(&grain, "s1");
    claim_won(h, &a).await;
    let store = h.store();
    store
        .commit(write(&a, 0, b"x", vec![]))
        .await
        .expect("write");
    let only_events = Commit {
        change: StateChange::Unchanged,
        events: vec![event(1), event(2)],
        reminders: Vec::new(),
        ..write(&a, 1, b"", vec![])
    };
    assert_eq!(store.commit(only_events).await, Ok(2));
    assert_eq!(h.read_raw(&grain).await, (Some(b"x".to_vec()), 2));
    let ids: Vec<(u64, u32)> = events_of(h, &grain)
        .await
        .iter()
        .map(|e| (e.id.version, e.id.index))
        .collect();
    assert_eq!(
        ids,
        vec![(2, 0), (2, 1)],
        "stable ids (grain, version, index)"
    );
}

/// While one activation commits 200 turns (each a state write and two events) and every third
/// turn also tries a stale commit, an observer never sees the outbox ahead of the state (an
/// event whose state is not stored) nor behind it (a stored version without its events). In
/// the end the outbox holds exactly the committed turns' events, in commit order.
pub async fn the_outbox_is_never_ahead_of_or_behind_the_state<S: StoreUnderTest>(h: &S) {
    const TURNS: u64 = 200;
    let grain = fresh("conformance.c");
    let a = address(&grain, "s1");
    claim_won(h, &a).await;
    let done = Arc::new(AtomicBool::new(false));
    let observe = async {
        let mut observations = 0u32;
        while !done.load(Ordering::Acquire) || observations == 0 {
            // Events never ahead: every event read belongs to a version stored by then.
            let events = events_of(h, &grain).await;
            let (_, stored) = h.read_raw(&grain).await;
            if let Some(newest) = events.iter().map(|e| e.id.version).max() {
                assert!(
                    newest <= stored,
                    "event of version {newest} seen while the state is at {stored}"
                );
            }
            // Never behind: every version stored has both its events.
            let (_, stored) = h.read_raw(&grain).await;
            let events = events_of(h, &grain).await;
            let seen = events.iter().filter(|e| e.id.version <= stored).count();
            assert_eq!(
                seen as u64,
                2 * stored,
                "state at {stored} without all its events"
            );
            observations += 1;
            tokio::task::yield_now().await;
        }
        observations
    };
    let commit = async {
        let store = h.store();
        for v in 0..TURNS {
            let data = v.to_le_bytes();
            if v % 3 == 0 && v > 0 {
                let stale = store
                    .commit(write(&a, v - 1, &data, vec![event(999)]))
                    .await;
                assert!(
                    matches!(stale, Err(StorageError::Conflict { .. })),
                    "{stale:?}"
                );
            }
            let ok = store
                .commit(write(&a, v, &data, vec![event(2 * v), event(2 * v + 1)]))
                .await;
            assert_eq!(ok, Ok(v + 1));
        }
        done.store(true, Ordering::Release);
    };
    let (observations, ()) = tokio::join!(observe, commit);
    assert!(observations > 0);
    let events = events_of(h, &grain).await;
    let ns: Vec<u64> = events
        .iter()
        .map(|e| {
            let json = String::from_utf8(e.event.payload.clone()).expect("utf-8");
            json.trim_start_matches("{\"n\":")
                .trim_end_matches('}')
                .parse()
                .expect("n")
        })
        .collect();
    assert_eq!(
        ns,
        (0..2 * TURNS).collect::<Vec<_>>(),
        "every committed event once, in order"
    );
    let ids: BTreeMap<(u64, u32), ()> = events
        .iter()
        .map(|e| ((e.id.version, e.id.index), ()))
        .collect();
    assert_eq!(ids.len(), events.len(), "ids are unique");
}

/// Acknowledged entries leave the outbox; the others stay.
pub async fn acked_events_leave_the_outbox<S: StoreUnderTest>(h: &S) {
    let grain = fresh("conformance.c");
    let a = address(&grain, "s1");
    claim_won(h, &a).await;
    let store = h.store();
    store
        .commit(write(&a, 0, b"x", vec![event(1), event(2), event(3)]))
        .await
        .expect("commit");
    let events = events_of(h, &grain).await;
    assert_eq!(events.len(), 3);
    store
        .ack(&[events[0].position.clone(), events[2].position.clone()])
        .await
        .expect("ack");
    let left: Vec<PublishedEvent> = events_of(h, &grain)
        .await
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(left, vec![event(2)]);
}

/// `pending_in_after` returns the shard's entries after the held ones (the shard's oldest, as
/// an earlier read returned them), oldest first and at most `max`; whether the held entries are
/// still there or were acknowledged meanwhile.
pub async fn a_read_after_held_entries_returns_what_follows_them<S: StoreUnderTest>(h: &S) {
    let grain = fresh("conformance.c");
    let a = address(&grain, "s1");
    claim_won(h, &a).await;
    let store = h.store();
    store
        .commit(write(&a, 0, b"x", (1..=5).map(event).collect()))
        .await
        .expect("commit");
    let shard = events_of(h, &grain).await[0].position.shard;
    // The fresh store's shard holds only this grain's events.
    let held: Vec<_> = store
        .pending_in(shard, 2)
        .await
        .expect("read")
        .into_iter()
        .map(|e| e.position)
        .collect();
    let after = |max: usize| {
        let (store, held) = (store.clone(), held.clone());
        async move {
            store
                .pending_in_after(shard, &held, max)
                .await
                .expect("read after")
                .into_iter()
                .map(|e| e.event)
                .collect::<Vec<PublishedEvent>>()
        }
    };
    assert_eq!(after(2).await, vec![event(3), event(4)], "at most max");
    assert_eq!(after(10).await, vec![event(3), event(4), event(5)]);
    // Several reads at once: each answered as `pending_in_after` answers it, in order.
    let empty = (0..store.shards()).find(|&s| s != shard);
    let mut reads = vec![
        ShardRead {
            shard,
            held: &held,
            max: 2,
        },
        ShardRead {
            shard,
            held: &[],
            max: 1,
        },
    ];
    reads.extend(empty.map(|shard| ShardRead {
        shard,
        held: &[],
        max: 10,
    }));
    let each: Vec<Vec<PublishedEvent>> = store
        .pending_in_each(&reads)
        .await
        .expect("reads at once")
        .into_iter()
        .map(|read| read.into_iter().map(|e| e.event).collect())
        .collect();
    let mut expected = vec![vec![event(3), event(4)], vec![event(1)]];
    expected.extend(empty.map(|_| Vec::new()));
    assert_eq!(each, expected, "pending_in_each");
    let nothing = store.pending_in_each(&[]).await.expect("no reads");
    assert!(nothing.is_empty(), "no reads, no entries");
    // A relay whose delivery was all dead-lettered acknowledges nothing: that succeeds.
    store.ack(&[]).await.expect("acknowledging nothing");
    store.ack(&held[..1]).await.expect("ack");
    assert_eq!(
        after(10).await,
        vec![event(3), event(4), event(5)],
        "one held entry acknowledged meanwhile"
    );
    store.ack(&held).await.expect("ack");
    assert_eq!(
        after(10).await,
        vec![event(3), event(4), event(5)],
        "all acknowledged"
    );
    let none_held: Vec<PublishedEvent> = store
        .pending_in_after(shard, &[], 2)
        .await
        .expect("read")
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(
        none_held,
        vec![event(3), event(4)],
        "nothing held: the oldest"
    );
}

/// An entry moved to the dead-letter stream leaves the outbox, is listed with its reason, id
/// and type, and moves back to the end of the outbox (same id, payload and commit time) when
/// re-driven; moving an entry that is no longer there does nothing.
pub async fn dead_letters_leave_the_outbox_and_come_back_when_redriven<S: StoreUnderTest>(h: &S) {
    let grain = fresh("conformance.d");
    let a = address(&grain, "s1");
    claim_won(h, &a).await;
    let store = h.store();
    store
        .commit(write(&a, 0, b"x", vec![event(1), event(2), event(3)]))
        .await
        .expect("commit");
    let events = events_of(h, &grain).await;
    assert_eq!(events.len(), 3);
    let poison = events[1].clone();
    let shard = poison.position.shard;
    let dead_of =
        |letters: Vec<granary::provider::DeadLetter>| -> Vec<granary::provider::DeadLetter> {
            letters
                .into_iter()
                .filter(|l| l.id.as_ref().is_some_and(|id| id.grain == grain))
                .collect()
        };
    let set_aside = [(poison.position.clone(), "refused by the test".to_owned())];
    store.dead_letter(&set_aside).await.expect("dead-letter");
    // Again: it is no longer in the outbox, so nothing happens.
    store
        .dead_letter(&set_aside)
        .await
        .expect("dead-letter again");
    let left: Vec<PublishedEvent> = events_of(h, &grain)
        .await
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(left, vec![event(1), event(3)], "it left the outbox");
    let dead = dead_of(store.dead_letters(shard, 1000).await.expect("list"));
    assert_eq!(dead.len(), 1, "listed once: {dead:?}");
    assert_eq!(dead[0].reason, "refused by the test");
    assert_eq!(dead[0].id.as_ref(), Some(&poison.id));
    assert_eq!(
        dead[0].type_name.as_deref(),
        Some(poison.event.type_name.as_str())
    );
    assert_eq!(dead[0].position.shard, shard);
    assert!(dead[0].dead_ms > 0);

    assert_eq!(store.redrive(&[dead[0].position.clone()]).await, Ok(1));
    assert_eq!(
        store.redrive(&[dead[0].position.clone()]).await,
        Ok(0),
        "already re-driven"
    );
    assert!(dead_of(store.dead_letters(shard, 1000).await.expect("list")).is_empty());
    let back = events_of(h, &grain).await;
    assert_eq!(back.len(), 3);
    let last = &back[2];
    assert_eq!(
        (&last.id, &last.event, last.committed_ms),
        (&poison.id, &poison.event, poison.committed_ms),
        "back at the end of the outbox, unchanged"
    );
    assert_ne!(last.position, poison.position, "a new outbox entry");
}

/// `lookup` names the owner; `unregister` removes the entry only if it still names the caller.
pub async fn the_directory_names_the_owner_and_unregisters_only_it<S: StoreUnderTest>(h: &S) {
    let grain = fresh("conformance.c");
    let store = h.store();
    assert_eq!(store.lookup(&grain).await, Ok(None));
    let a = address(&grain, "s1");
    claim_won(h, &a).await;
    assert_eq!(store.lookup(&grain).await, Ok(Some(a.clone())));
    let stranger = address(&grain, "s2");
    store.unregister(&stranger).await.expect("unregister");
    assert_eq!(
        store.lookup(&grain).await,
        Ok(Some(a.clone())),
        "not the stranger's entry"
    );
    store.unregister(&a).await.expect("unregister");
    assert_eq!(store.lookup(&grain).await, Ok(None));
}

/// The suite's grain state, at schema version 2.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CounterState {
    /// The count.
    pub count: i64,
    /// Added in version 2; version-1 `hits` become `count`.
    pub note: String,
}

/// The suite's grain state as it was at schema version 1.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CounterStateV1 {
    /// The count, as version 1 called it.
    pub hits: i32,
}

/// The grain the silo-level cases activate.
#[derive(Debug, Default)]
pub struct CounterGrain;

#[granary::grain(
    name = "conformance.counter",
    state = CounterState,
    state_version = 2,
    upgrade = upgrade_counter
)]
impl CounterGrain {
    /// The state.
    pub async fn get(&self, ctx: &GrainContext<Self>) -> granary::Result<CounterState> {
        Ok(ctx.state().clone())
    }

    /// Adds one and writes the state.
    pub async fn bump(&self, ctx: &GrainContext<Self>) -> granary::Result<i64> {
        let count = {
            let mut state = ctx.state();
            state.count += 1;
            state.count
        };
        ctx.write_state().await?;
        Ok(count)
    }
}

fn upgrade_counter(from: u32, blob: &StateBlob) -> Result<StateBlob, String> {
    match from {
        1 => {
            let old: CounterStateV1 = blob.decode().map_err(|e| e.to_string())?;
            StateBlob::encode(&CounterState {
                count: i64::from(old.hits),
                note: "upgraded from v1".into(),
            })
            .map_err(|e| e.to_string())
        }
        _ => Err(format!("no step from {from}")),
    }
}

async fn silo_on<S: StoreUnderTest>(h: &S) -> Silo {
    Silo::builder()
        .config(SiloConfig::test_profile())
        .storage(h.store())
        .register::<CounterGrain>()
        .start()
        .await
        .expect("silo starts")
}

/// A blob that fails its checks fails the activation with `StorageError::Corrupt` naming the
/// grain, is never replaced by default state, and the grain works again once the data is fixed.
pub async fn a_corrupt_blob_fails_activation_and_is_left_alone<S: StoreUnderTest>(h: &S) {
    let silo = silo_on(h).await;
    let key = uuid::Uuid::now_v7();
    let grain = GrainId::new("conformance.counter", key);
    let good = state_codec::encode::<CounterGrain>(&CounterState {
        count: 41,
        note: String::new(),
    })
    .expect("encode");
    let mut damaged = good.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 0x40;
    type Expect = fn(&StateError) -> bool;
    let cases: [(&[u8], Expect); 3] = [
        (&damaged, |p| matches!(p, StateError::Checksum { .. })),
        (b"definitely not state", |p| {
            matches!(p, StateError::BadMagic)
        }),
        (&good[..7], |p| {
            matches!(p, StateError::Truncated { len: 7 })
        }),
    ];
    for (bytes, expected) in cases {
        h.put_raw(&grain, bytes).await;
        let stored = h.read_raw(&grain).await;
        let err = silo
            .client()
            .grain::<CounterGrain>(key)
            .bump()
            .await
            .expect_err("a corrupt state must not activate");
        match &err {
            CallError::Storage {
                source: StorageError::Corrupt { grain: g, problem },
                ..
            } => {
                assert_eq!(*g, grain, "the error names the grain");
                assert!(expected(problem), "{problem:?}");
            }
            other => panic!("expected a Corrupt storage error, got {other}"),
        }
        assert!(err.to_string().contains(&key.to_string()), "{err}");
        assert_eq!(h.read_raw(&grain).await, stored, "the blob was left alone");
    }
    h.put_raw(&grain, &good).await;
    let count = silo.client().grain::<CounterGrain>(key).bump().await;
    assert_eq!(count.expect("fixed data activates"), 42);
    silo.shutdown().await.expect("shutdown");
}

/// A state stored at schema version 1 loads through the upgrade step; the next write stores
/// version 2.
pub async fn an_old_schema_is_upgraded_on_load_and_stored_new_on_write<S: StoreUnderTest>(h: &S) {
    let silo = silo_on(h).await;
    let key = uuid::Uuid::now_v7();
    let grain = GrainId::new("conformance.counter", key);
    let v1 = StateBlob::encode(&CounterStateV1 { hits: 7 }).expect("encode");
    h.put_raw(&grain, &state_codec::seal(1, v1.as_bytes()))
        .await;
    let counter = silo.client().grain::<CounterGrain>(key);
    assert_eq!(
        counter.get().await.expect("upgraded on load"),
        CounterState {
            count: 7,
            note: "upgraded from v1".into()
        }
    );
    let (data, _) = h.read_raw(&grain).await;
    assert_eq!(
        state_codec::open(&data.expect("stored")).expect("valid").0,
        1,
        "loading alone does not rewrite the state"
    );
    assert_eq!(counter.bump().await.expect("bump"), 8);
    let (data, _) = h.read_raw(&grain).await;
    let data = data.expect("stored");
    assert_eq!(
        state_codec::open(&data).expect("valid").0,
        2,
        "written at version 2"
    );
    assert_eq!(
        state_codec::decode::<CounterGrain>(&data)
            .expect("decodes")
            .count,
        8
    );
    silo.shutdown().await.expect("shutdown");
}

/// Reminder changes commit with the grain's commit: set (and replaced), listed per grain,
/// indexed in the grain's shard by next due time, removed from both.
pub async fn reminders_commit_with_the_grain_and_are_indexed_by_due_time<S: StoreUnderTest>(h: &S) {
    let store = h.store();
    let table = table::<S>(&store);
    let grain = fresh("conformance.r");
    let shard = table.reminder_shard_of(&grain);
    assert!(shard < table.reminder_shards());
    let a = address(&grain, "s1");
    claim_won(h, &a).await;
    assert_eq!(table.reminders_of(&grain).await.expect("read"), vec![]);
    let v = store
        .commit(reminder_commit(
            &a,
            0,
            vec![
                ReminderChange::Set(reminder("daily", 86_400_000, FAR + 50)),
                ReminderChange::Set(reminder("regen", 1_000, FAR + 10)),
                ReminderChange::Set(reminder("gone", 1_000, FAR + 20)),
                ReminderChange::Remove("gone".into()),
            ],
        ))
        .await
        .expect("commit");
    let mut listed = table.reminders_of(&grain).await.expect("read");
    listed.sort_by(|x, y| x.name.cmp(&y.name));
    assert_eq!(
        listed,
        vec![
            reminder("daily", 86_400_000, FAR + 50),
            reminder("regen", 1_000, FAR + 10)
        ]
    );
    assert_eq!(
        all_due(table, shard, FAR + 49, &[&grain]).await,
        vec![(grain.clone(), "regen".into(), FAR + 10)],
        "only what is due by then"
    );
    // Advancing a reminder moves it in the index; removing one removes it from both.
    store
        .commit(reminder_commit(
            &a,
            v,
            vec![
                ReminderChange::Set(reminder("regen", 1_000, FAR + 100)),
                ReminderChange::Remove("daily".into()),
            ],
        ))
        .await
        .expect("commit");
    assert_eq!(
        table.reminders_of(&grain).await.expect("read"),
        vec![reminder("regen", 1_000, FAR + 100)]
    );
    assert_eq!(
        all_due(table, shard, FAR + 1_000, &[&grain]).await,
        vec![(grain.clone(), "regen".into(), FAR + 100)]
    );
    // A reminder commit is a commit: it advances the version.
    assert_eq!(h.read_raw(&grain).await.1, v + 1);
}

/// A commit refused by its fence (stale version, replaced activation) changes no reminder.
pub async fn a_refused_commit_changes_no_reminder<S: StoreUnderTest>(h: &S) {
    let store = h.store();
    let table = table::<S>(&store);
    let grain = fresh("conformance.r");
    let shard = table.reminder_shard_of(&grain);
    let a = address(&grain, "s1");
    claim_won(h, &a).await;
    let set = |name: &str| vec![ReminderChange::Set(reminder(name, 1_000, FAR + 1))];
    store
        .commit(reminder_commit(&a, 0, set("kept")))
        .await
        .expect("commit");
    assert!(matches!(
        store.commit(reminder_commit(&a, 0, set("stale"))).await,
        Err(StorageError::Conflict { .. })
    ));
    let b = address(&grain, "s2");
    assert!(matches!(store.claim(&b, Some(&a)).await, Ok(Claim::Won(_))));
    let removal = vec![ReminderChange::Remove("kept".into())];
    assert_eq!(
        store.commit(reminder_commit(&a, 1, removal)).await,
        Err(StorageError::NotOwner)
    );
    assert_eq!(
        table.reminders_of(&grain).await.expect("read"),
        vec![reminder("kept", 1_000, FAR + 1)]
    );
    assert_eq!(
        all_due(table, shard, FAR + 1, &[&grain]).await,
        vec![(grain.clone(), "kept".into(), FAR + 1)]
    );
}

/// Due reminders come earliest first, in pages (`offset`, `max`), each exactly once.
pub async fn due_reminders_page_through_a_shard<S: StoreUnderTest>(h: &S) {
    let store = h.store();
    let table = table::<S>(&store);
    // Grains of one shard: try ids until 5 land in the first one's shard.
    let first = fresh("conformance.r");
    let shard = table.reminder_shard_of(&first);
    let mut grains = vec![first];
    while grains.len() < 5 {
        let g = fresh("conformance.r");
        if table.reminder_shard_of(&g) == shard {
            grains.push(g);
        }
    }
    let mut expected = Vec::new();
    for (i, grain) in grains.iter().enumerate() {
        let a = address(grain, "s1");
        claim_won(h, &a).await;
        let changes = (0..4u64)
            .map(|n| {
                let due = FAR + 2_000 + n * 10 + i as u64;
                expected.push((grain.clone(), format!("r{n}"), due));
                ReminderChange::Set(reminder(&format!("r{n}"), 1_000, due))
            })
            .collect();
        store
            .commit(reminder_commit(&a, 0, changes))
            .await
            .expect("commit");
    }
    expected.sort_by_key(|(_, _, due)| *due);
    let refs: Vec<&GrainId> = grains.iter().collect();
    assert_eq!(all_due(table, shard, FAR + 10_000, &refs).await, expected);
}

impl StoreUnderTest for Arc<granary::provider::MemoryStore> {
    type Store = granary::provider::MemoryStore;

    fn store(&self) -> Arc<Self::Store> {
        self.clone()
    }

    fn put_raw<'a>(&'a self, grain: &'a GrainId, data: &'a [u8]) -> BoxFuture<'a, ()> {
        granary::provider::MemoryStore::put_raw(self, grain, data.to_vec());
        Box::pin(async {})
    }

    fn read_raw<'a>(&'a self, grain: &'a GrainId) -> BoxFuture<'a, (Option<Vec<u8>>, u64)> {
        let stored = self.stored(grain).unwrap_or((None, 0));
        Box::pin(async move { stored })
    }
}

/// Membership conformance: a row's hosted types and roles are read back as written (placement
/// depends on them), a row written without them (a silo of an earlier version) reads back as
/// "not stated", and a status change that carries the row over keeps them. Run it on a fresh,
/// empty table of the provider under test.
///
/// # Panics
/// When the table loses or changes what was written.
pub async fn membership_rows_keep_hosted_types_and_roles(table: &dyn MembershipTable) {
    let start = table.read().await.expect("table readable").version;
    let sim = MembershipEntry {
        hosts: Some(vec!["roles.game".into(), "roles.lobby".into()]),
        roles: vec!["sim".into(), "eu".into()],
        ..MembershipEntry::new(SiloId::new("sim", 1), "127.0.0.1:1", SiloStatus::Joining)
    };
    let old = MembershipEntry::new(SiloId::new("old", 1), "127.0.0.1:2", SiloStatus::Active);
    let v = table.upsert(sim.clone(), start).await.expect("upsert");
    let v = table.upsert(old.clone(), v).await.expect("upsert");
    let snapshot = table.read().await.expect("table readable");
    let row = |name: &str| {
        snapshot
            .entries
            .iter()
            .find(|e| e.silo.name() == name)
            .cloned()
            .expect("row present")
    };
    assert_eq!(
        row("sim"),
        sim,
        "hosted types and roles read back as written"
    );
    assert_eq!(
        row("old").hosts,
        None,
        "a row without hosted types stays without"
    );
    assert!(row("old").roles.is_empty());
    // Going active the way a silo does: the rest of the row carried over.
    let active = MembershipEntry {
        status: SiloStatus::Active,
        ..row("sim")
    };
    table.upsert(active.clone(), v).await.expect("upsert");
    let snapshot = table.read().await.expect("table readable");
    let back = snapshot
        .entries
        .iter()
        .find(|e| e.silo.name() == "sim")
        .expect("row present");
    assert_eq!(*back, active);
    assert!(back.hosts_type("roles.game") && !back.hosts_type("roles.player"));
    assert!(back.has_role("sim"));
}

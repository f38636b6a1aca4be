//! Tests of the admission rules.

use granary_core::{ChainId, GrainId};

use super::*;

fn me() -> GrainId {
    GrainId::new("player", "p-1")
}

fn class(read_only: bool, chain_id: ChainId, chain: &[GrainId]) -> Class<'_> {
    Class {
        read_only,
        chain_id,
        chain,
    }
}

fn active() -> Scheduler<u32> {
    let mut s = Scheduler::new();
    s.phase = Phase::Active;
    s
}

#[test]
fn requests_queue_while_activating() {
    let mut s: Scheduler<u32> = Scheduler::new();
    assert_eq!(
        s.admit(&me(), false, class(false, ChainId(1), &[])),
        Admission::Queue
    );
    assert_eq!(
        s.admit(&me(), false, class(true, ChainId(2), &[])),
        Admission::Queue
    );
}

#[test]
fn one_exclusive_turn_at_a_time() {
    let mut s = active();
    assert_eq!(
        s.admit(&me(), false, class(false, ChainId(1), &[])),
        Admission::Run { exclusive: true }
    );
    assert_eq!(
        s.admit(&me(), false, class(false, ChainId(2), &[])),
        Admission::Queue
    );
    assert_eq!(
        s.admit(&me(), false, class(true, ChainId(3), &[])),
        Admission::Queue,
        "readers wait for a writer"
    );
}

#[test]
fn read_only_turns_overlap_but_writers_wait_for_them() {
    let mut s = active();
    assert_eq!(
        s.admit(&me(), false, class(true, ChainId(1), &[])),
        Admission::Run { exclusive: false }
    );
    assert_eq!(
        s.admit(&me(), false, class(true, ChainId(2), &[])),
        Admission::Run { exclusive: false }
    );
    assert_eq!(s.running(), 2);
    assert_eq!(
        s.admit(&me(), false, class(false, ChainId(3), &[])),
        Admission::Queue
    );
    s.queue.push_back((3, false));
    // A reader arriving after a queued writer does not overtake it.
    assert_eq!(
        s.admit(&me(), false, class(true, ChainId(4), &[])),
        Admission::Queue
    );
    s.queue.push_back((4, true));
    s.finish(false, ChainId(1));
    assert!(
        s.next_runnable(|_| ChainId(9)).is_empty(),
        "one reader still runs"
    );
    s.finish(false, ChainId(2));
    let next = s.next_runnable(|q| ChainId(u128::from(*q)));
    assert_eq!(next, vec![(3, false)]);
    assert!(
        s.next_runnable(|_| ChainId(9)).is_empty(),
        "the writer runs alone"
    );
    s.finish(true, ChainId(3));
    assert_eq!(
        s.next_runnable(|q| ChainId(u128::from(*q))),
        vec![(4, true)]
    );
}

#[test]
fn consecutive_readers_start_together() {
    let mut s = active();
    assert_eq!(
        s.admit(&me(), false, class(false, ChainId(1), &[])),
        Admission::Run { exclusive: true }
    );
    s.queue
        .extend([(2, true), (3, true), (4, false), (5, true)]);
    s.finish(true, ChainId(1));
    let next: Vec<u32> = s
        .next_runnable(|q| ChainId(u128::from(*q)))
        .into_iter()
        .map(|(q, _)| q)
        .collect();
    assert_eq!(next, vec![2, 3]);
}

#[test]
fn reentering_a_waiting_chain_is_a_cycle_unless_reentrant() {
    let a = me();
    let b = GrainId::new("game", "g-1");
    let mut s = active();
    assert_eq!(
        s.admit(&a, false, class(false, ChainId(7), &[])),
        Admission::Run { exclusive: true }
    );
    let chain = [a.clone(), b.clone()];
    assert_eq!(
        s.admit(&a, false, class(false, ChainId(7), &chain)),
        Admission::Cycle
    );
    assert_eq!(
        s.admit(&a, true, class(false, ChainId(7), &chain)),
        Admission::Run { exclusive: false }
    );
    // The same grain on another chain just waits its turn.
    assert_eq!(
        s.admit(&a, true, class(false, ChainId(8), &[b])),
        Admission::Queue
    );
}

#[test]
fn a_call_back_into_on_activate_is_a_cycle_even_for_reentrant_grains() {
    let a = me();
    let mut s: Scheduler<u32> = Scheduler::new();
    s.start_lifecycle(ChainId(5));
    assert_eq!(
        s.admit(&a, true, class(false, ChainId(5), std::slice::from_ref(&a))),
        Admission::Cycle
    );
}

#[test]
fn pending_deactivation_stops_admission_and_closed_reroutes() {
    let mut s = active();
    s.deactivate_pending = true;
    assert_eq!(
        s.admit(&me(), false, class(false, ChainId(1), &[])),
        Admission::Queue
    );
    s.phase = Phase::Deactivating;
    assert_eq!(
        s.admit(&me(), false, class(false, ChainId(1), &[])),
        Admission::Queue
    );
    s.phase = Phase::Closed;
    assert_eq!(
        s.admit(&me(), false, class(false, ChainId(1), &[])),
        Admission::Reroute
    );
}

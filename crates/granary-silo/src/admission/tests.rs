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
    assert!(s.activate(|_| ChainId(0)).is_empty());
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
    s.enqueue(3, false);
    // A reader arriving after a queued writer does not overtake it.
    assert_eq!(
        s.admit(&me(), false, class(true, ChainId(4), &[])),
        Admission::Queue
    );
    s.enqueue(4, true);
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
    for (item, read_only) in [(2, true), (3, true), (4, false), (5, true)] {
        s.enqueue(item, read_only);
    }
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
    s.mark_deactivation();
    assert_eq!(
        s.admit(&me(), false, class(false, ChainId(1), &[])),
        Admission::Queue
    );
    assert!(s.begin_deactivation());
    assert_eq!(s.phase(), Phase::Deactivating);
    assert_eq!(
        s.admit(&me(), false, class(false, ChainId(1), &[])),
        Admission::Queue
    );
    assert!(s.close().is_empty());
    assert_eq!(
        s.admit(&me(), false, class(false, ChainId(1), &[])),
        Admission::Reroute
    );
}

#[test]
fn queued_requests_start_in_order_once_activated() {
    let mut s: Scheduler<u32> = Scheduler::new();
    for (item, read_only) in [(1, true), (2, true), (3, false)] {
        assert_eq!(
            s.admit(&me(), false, class(read_only, ChainId(item.into()), &[])),
            Admission::Queue
        );
        s.enqueue(item, read_only);
    }
    assert_eq!(s.queued(), 3);
    let started = s.activate(|q| ChainId(u128::from(*q)));
    assert_eq!(
        started,
        vec![(1, true), (2, true)],
        "the readers start together"
    );
    assert_eq!(s.running(), 2);
    assert!(
        s.activate(|_| ChainId(0)).is_empty(),
        "activating twice starts nothing"
    );
    assert_eq!(s.queued(), 1);
    assert_eq!(s.phase(), Phase::Active);
}

#[test]
fn deactivation_waits_for_running_turns_then_closing_hands_the_queue_back() {
    let mut s = active();
    assert_eq!(
        s.admit(&me(), false, class(false, ChainId(1), &[])),
        Admission::Run { exclusive: true }
    );
    assert!(s.request_deactivation());
    assert!(s.deactivation_pending());
    assert!(
        !s.collectable(),
        "a pending deactivation is not collected twice"
    );
    assert!(!s.begin_deactivation(), "a turn still runs");
    assert_eq!(
        s.admit(&me(), false, class(true, ChainId(2), &[])),
        Admission::Queue
    );
    s.enqueue(2, true);
    s.finish(true, ChainId(1));
    assert!(
        s.next_runnable(|_| ChainId(9)).is_empty(),
        "nothing starts while a deactivation is pending"
    );
    assert!(s.begin_deactivation());
    assert!(!s.begin_deactivation(), "it begins once");
    assert!(
        !s.request_deactivation(),
        "a deactivation under way is not asked again"
    );
    assert_eq!(s.close(), VecDeque::from([(2, true)]));
    assert_eq!(s.queued(), 0);
    assert!(!s.request_deactivation(), "closed");
    assert_eq!(
        s.admit(&me(), false, class(false, ChainId(3), &[])),
        Admission::Reroute
    );
}

#[test]
fn an_idle_active_activation_is_collectable_and_a_busy_one_is_not() {
    let mut s: Scheduler<u32> = Scheduler::new();
    assert!(!s.collectable(), "still activating");
    s.activate(|_| ChainId(0));
    assert!(s.collectable());
    assert_eq!(
        s.admit(&me(), false, class(true, ChainId(1), &[])),
        Admission::Run { exclusive: false }
    );
    assert!(!s.collectable(), "a turn runs");
    s.finish(false, ChainId(1));
    assert!(s.collectable());
    s.mark_deactivation();
    assert!(!s.collectable());
}

#[test]
fn pop_runnable_takes_what_next_runnable_would_one_at_a_time() {
    let mut s = active();
    assert_eq!(
        s.admit(&me(), false, class(false, ChainId(1), &[])),
        Admission::Run { exclusive: true }
    );
    for (item, read_only) in [(2, false), (3, true), (4, true), (5, false)] {
        s.enqueue(item, read_only);
    }
    let chain_of = |q: &u32| ChainId(u128::from(*q));
    assert_eq!(
        s.pop_runnable(chain_of),
        None,
        "the running writer holds it"
    );
    s.finish(true, ChainId(1));
    assert_eq!(s.pop_runnable(chain_of), Some((2, false)));
    assert_eq!(s.pop_runnable(chain_of), None, "one writer at a time");
    s.finish(true, ChainId(2));
    assert_eq!(s.pop_runnable(chain_of), Some((3, true)));
    assert_eq!(
        s.pop_runnable(chain_of),
        Some((4, true)),
        "readers start together"
    );
    assert_eq!(
        s.pop_runnable(chain_of),
        None,
        "the writer waits for the readers"
    );
    assert_eq!(s.running(), 2);
    s.finish(false, ChainId(3));
    assert_eq!(s.pop_runnable(chain_of), None);
    s.finish(false, ChainId(4));
    assert_eq!(s.pop_runnable(chain_of), Some((5, false)));
    assert!(s.queued() == 0 && s.running() == 1);
    s.mark_deactivation();
    s.enqueue(6, false);
    s.finish(true, ChainId(5));
    assert_eq!(
        s.pop_runnable(chain_of),
        None,
        "a pending deactivation admits nothing"
    );
}

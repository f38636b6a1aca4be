//! The metrics: P1 (local call), P2 (one-way message), P8 (memory per idle activation).
//! Each repetition runs the baseline(s) and the candidate back to back; medians are reported.

use crate::engines::{actix, floor, granary, kameo, ractor};
use crate::report::{Line, median};

/// P1: local grain call, grain active. (a) one caller, sequential, p50 latency against raw actix
/// on the same arbiter; (b) 1,000 grains, 8 callers, 2 worker threads, calls/s against the
/// grain-call floor, with ractor and kameo alongside.
pub(crate) fn p1(reps: usize, scale: usize) -> anyhow::Result<()> {
    let calls = 200_000 / scale;
    let (mut g, mut a, mut f, mut r, mut k) = (vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..reps {
        a.push(actix::p1a(calls));
        g.push(granary::p1a(calls));
        f.push(floor::p1a(calls));
        r.push(ractor::p1a(calls));
        k.push(kameo::p1a(calls));
    }
    let actix_p50 = median(&a);
    Line {
        id: "P1a",
        what: "sequential_call_p50",
        value: median(&g),
        baseline: actix_p50,
        baseline_name: "actix_same_arbiter",
        unit: "ns",
        goal: "ratio<=2.0",
    }
    .print();
    for (name, v) in [("floor", &f), ("ractor", &r), ("kameo", &k)] {
        Line {
            id: &format!("P1a-{name}"),
            what: "peer",
            value: median(v),
            baseline: actix_p50,
            baseline_name: "actix_same_arbiter",
            unit: "ns",
            goal: "info",
        }
        .print();
    }

    let (actors, callers, per_caller) = (1_000, 8, 200_000 / scale);
    let (mut g, mut a, mut f, mut r, mut k) = (vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..reps {
        f.push(floor::p1b(actors, callers, per_caller));
        g.push(granary::p1b(actors, callers, per_caller));
        r.push(ractor::p1b(actors, callers, per_caller));
        k.push(kameo::p1b(actors, callers, per_caller));
        a.push(actix::p1b(actors, callers, per_caller / 4));
    }
    let floor_rate = median(&f);
    Line {
        id: "P1b",
        what: "calls_per_sec_1000grains_8callers_2threads",
        value: median(&g),
        baseline: floor_rate,
        baseline_name: "tokio_task_dashmap_floor",
        unit: "calls/s",
        goal: "ratio>=0.75,above_ractor_and_kameo",
    }
    .print();
    for (name, v) in [("ractor", &r), ("kameo", &k), ("actix_2_arbiters", &a)] {
        Line {
            id: &format!("P1b-{name}"),
            what: "peer",
            value: median(v),
            baseline: floor_rate,
            baseline_name: "tokio_task_dashmap_floor",
            unit: "calls/s",
            goal: "info",
        }
        .print();
    }
    Ok(())
}

/// P2: one-way grain messages from one sender against actix `do_send` on the same arbiter.
pub(crate) fn p2(reps: usize, scale: usize) -> anyhow::Result<()> {
    let messages = 1_000_000 / scale;
    let (mut g, mut a, mut f) = (vec![], vec![], vec![]);
    for _ in 0..reps {
        a.push(actix::p2(messages));
        g.push(granary::p2(messages));
        f.push(floor::p2(messages));
    }
    let actix_rate = median(&a);
    Line {
        id: "P2",
        what: "one_way_msgs_per_sec",
        value: median(&g),
        baseline: actix_rate,
        baseline_name: "actix_do_send_same_arbiter",
        unit: "msgs/s",
        goal: "ratio>=0.5",
    }
    .print();
    Line {
        id: "P2-floor",
        what: "peer",
        value: median(&f),
        baseline: actix_rate,
        baseline_name: "actix_do_send_same_arbiter",
        unit: "msgs/s",
        goal: "info",
    }
    .print();
    Ok(())
}

/// P8: heap bytes per idle activation after one call each, 100k of them, against an idle actix
/// actor.
pub(crate) fn p8(reps: usize, scale: usize) -> anyhow::Result<()> {
    let actors = 100_000 / scale;
    let (mut g, mut a, mut f) = (vec![], vec![], vec![]);
    for _ in 0..reps {
        a.push(actix::p8(actors));
        g.push(granary::p8(actors));
        f.push(floor::p8(actors));
    }
    let actix_bytes = median(&a);
    Line {
        id: "P8",
        what: "bytes_per_idle_activation_100k",
        value: median(&g),
        baseline: actix_bytes,
        baseline_name: "idle_actix_actor",
        unit: "bytes",
        goal: "ratio<=1.5",
    }
    .print();
    Line {
        id: "P8-floor",
        what: "peer",
        value: median(&f),
        baseline: actix_bytes,
        baseline_name: "idle_actix_actor",
        unit: "bytes",
        goal: "info",
    }
    .print();
    Ok(())
}

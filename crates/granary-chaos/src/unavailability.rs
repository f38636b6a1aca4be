//! Per-key unavailability windows and their percentiles, per fault.
//!
//! A window opens at the start of a failed call on a key and closes at the end of the first
//! successful call on that key that started at or after it; failed calls that start inside an
//! open window belong to it. A window still open when the workload stopped closes there. Each
//! window is attributed to the latest fault injected before its first failed call ended (a
//! call that fails because of a fault may have started before it; `none` before the first
//! fault).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::history::{Attempt, Injection, Outcome};

/// Windows of one fault, in milliseconds (nearest-rank percentiles).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Percentiles {
    /// How many windows.
    pub windows: usize,
    /// The median window.
    pub p50: u64,
    /// The 99th percentile.
    pub p99: u64,
    /// The longest.
    pub max: u64,
}

impl Percentiles {
    /// The percentiles of `millis` (any order).
    #[must_use]
    pub fn of(mut millis: Vec<u64>) -> Self {
        millis.sort_unstable();
        let rank = |p: f64| -> u64 {
            if millis.is_empty() {
                return 0;
            }
            // Nearest rank: the smallest value with at least p of the values at or below it.
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss,
                reason = "a rank within the vector's length"
            )]
            let rank = ((p * millis.len() as f64).ceil() as usize).clamp(1, millis.len());
            millis[rank - 1]
        };
        Self {
            windows: millis.len(),
            p50: rank(0.50),
            p99: rank(0.99),
            max: millis.last().copied().unwrap_or(0),
        }
    }
}

/// One unavailability window of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// The start of the failed call that opened it.
    pub opened: Duration,
    /// The end of that call: when the failure was seen.
    pub noticed: Duration,
    /// The end of the first successful call that started at or after `opened`.
    pub closed: Duration,
}

/// The unavailability windows of one key's attempts.
#[must_use]
pub fn windows(attempts: &[&Attempt], end: Duration) -> Vec<Window> {
    let mut successes: Vec<(Duration, Duration)> = attempts
        .iter()
        .filter(|a| matches!(a.outcome, Outcome::Acked(_)))
        .map(|a| (a.start, a.end))
        .collect();
    successes.sort_unstable();
    // earliest_end[i]: the earliest end among successes[i..].
    let mut earliest_end = vec![end; successes.len() + 1];
    for i in (0..successes.len()).rev() {
        earliest_end[i] = earliest_end[i + 1].min(successes[i].1);
    }
    let mut failures: Vec<(Duration, Duration)> = attempts
        .iter()
        .filter(|a| matches!(a.outcome, Outcome::Failed(_)))
        .map(|a| (a.start, a.end))
        .collect();
    failures.sort_unstable();
    let mut out: Vec<Window> = Vec::new();
    for (start, failed_at) in failures {
        if out.last().is_some_and(|w| start <= w.closed) {
            continue;
        }
        let first_after = successes.partition_point(|(s, _)| *s < start);
        out.push(Window {
            opened: start,
            noticed: failed_at,
            closed: earliest_end[first_after].max(start),
        });
    }
    out
}

/// The windows of every key, attributed to faults, as percentiles per fault name.
#[must_use]
pub fn unavailability(
    attempts: &[Attempt],
    injections: &[Injection],
    end: Duration,
) -> BTreeMap<String, Percentiles> {
    let mut by_key: BTreeMap<i64, Vec<&Attempt>> = BTreeMap::new();
    for attempt in attempts {
        by_key.entry(attempt.key).or_default().push(attempt);
    }
    let mut by_fault: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for key_attempts in by_key.values() {
        for window in windows(key_attempts, end) {
            let fault = injections
                .iter()
                .rev()
                .find(|i| i.at <= window.noticed)
                .map_or("none", |i| i.fault.name());
            let open = window.closed - window.opened;
            let millis = u64::try_from(open.as_millis()).unwrap_or(u64::MAX);
            by_fault.entry(fault.to_owned()).or_default().push(millis);
        }
    }
    by_fault
        .into_iter()
        .map(|(fault, millis)| (fault, Percentiles::of(millis)))
        .collect()
}

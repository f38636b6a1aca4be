//! The history checker: pure logic over a [`History`], no I/O.
//!
//! What it checks, against the lists Redis holds at the end:
//! - every acknowledged append is in its key's final list (else **lost**), and no value is
//!   there twice (else **duplicate**);
//! - every acknowledged list (the list an append returned) is a prefix of its key's final
//!   list and ends with the appended value (else **divergent**);
//! - no final list holds a value never attempted on that key (else **phantom**);
//! - after dedupe by event id, every committed value has exactly one event in the Redis
//!   stream (else **event missing** or **event duplicate**), and no event names a value that
//!   is not committed (else **event phantom**). Redeliveries of one event id are allowed
//!   (at-least-once) and counted.
//!
//! A failed append may or may not have committed: its value may be in the final list (once)
//! or not.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::history::{History, Outcome, prefix_digests};
use crate::unavailability::{Percentiles, unavailability};

/// How many examples of each violation a [`Verdict`] keeps.
const EXAMPLES: usize = 3;

/// What the checker found.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Verdict {
    /// Acknowledged appends missing from their key's final list.
    pub lost: usize,
    /// Acknowledged lists that are not a prefix of their key's final list (or do not end with
    /// their own value).
    pub divergent: usize,
    /// Values in a final list that were never attempted on that key.
    pub phantom: usize,
    /// Values found more than once in a final list.
    pub duplicates: usize,
    /// Committed values without an event in the stream.
    pub events_missing: usize,
    /// Events (distinct ids) naming a value that is not committed on their grain.
    pub events_phantom: usize,
    /// Committed values with more than one distinct event id.
    pub events_duplicate: usize,
    /// Stream entries that repeat an event id already seen (allowed: at-least-once).
    pub event_redeliveries: usize,
    /// Per fault (the latest injected before a window opened; `none` before the first), the
    /// unavailability windows in milliseconds.
    pub unavailability_ms: BTreeMap<String, Percentiles>,
    /// A few examples of each violation, for a human.
    pub examples: Vec<String>,
}

impl Verdict {
    /// The data violations: everything but redeliveries and unavailability.
    #[must_use]
    pub fn violations(&self) -> usize {
        self.lost
            + self.divergent
            + self.phantom
            + self.duplicates
            + self.events_missing
            + self.events_phantom
            + self.events_duplicate
    }
}

/// Counts a violation and keeps an example while there are few.
fn note(count: &mut usize, examples: &mut Vec<String>, example: impl FnOnce() -> String) {
    *count += 1;
    if *count <= EXAMPLES {
        examples.push(example());
    }
}

/// Checks `history`.
#[must_use]
pub fn check(history: &History) -> Verdict {
    let mut v = Verdict::default();
    let mut examples = Vec::new();
    let empty = Vec::new();
    let final_of = |key: i64| history.final_lists.get(&key).unwrap_or(&empty);

    // Where each value sits in its final list (first position), and how often.
    let mut positions: HashMap<(i64, u64), (usize, usize)> = HashMap::new();
    for (key, list) in &history.final_lists {
        for (i, value) in list.iter().enumerate() {
            positions.entry((*key, *value)).or_insert((i, 0)).1 += 1;
        }
    }
    let digests: HashMap<i64, Vec<u64>> = history
        .final_lists
        .iter()
        .map(|(key, list)| (*key, prefix_digests(list)))
        .collect();
    let attempted: HashSet<(i64, u64)> =
        history.attempts.iter().map(|a| (a.key, a.value)).collect();

    for attempt in &history.attempts {
        let Outcome::Acked(acked) = &attempt.outcome else {
            continue;
        };
        let (key, value) = (attempt.key, attempt.value);
        if !positions.contains_key(&(key, value)) {
            note(&mut v.lost, &mut examples, || {
                format!(
                    "lost: key {key} value {value} was acknowledged at {:?}",
                    attempt.end
                )
            });
        }
        let prefix = digests.get(&key).and_then(|d| d.get(acked.len));
        if prefix != Some(&acked.hash) || acked.last != Some(value) {
            note(&mut v.divergent, &mut examples, || {
                format!(
                    "divergent: key {key}: the append of {value} returned a list of {} values \
                     (last {:?}) that is not a prefix of the final list of {}",
                    acked.len,
                    acked.last,
                    final_of(key).len()
                )
            });
        }
    }
    for ((key, value), (at, count)) in &positions {
        if *count > 1 {
            note(&mut v.duplicates, &mut examples, || {
                format!("duplicate: key {key} value {value} is {count} times in the final list")
            });
        }
        if !attempted.contains(&(*key, *value)) {
            note(&mut v.phantom, &mut examples, || {
                format!("phantom: key {key} value {value} (position {at}) was never attempted")
            });
        }
    }

    // Events: dedupe by id, then one id per committed value.
    let mut ids: HashMap<&str, (i64, u64)> = HashMap::new();
    let mut by_value: HashMap<(i64, u64), usize> = HashMap::new();
    for event in &history.events {
        let named = (event.key, event.value);
        match ids.get(event.id.as_str()) {
            Some(first) if *first == named => {
                v.event_redeliveries += 1;
                continue;
            }
            Some(first) => {
                let first = *first;
                note(&mut v.events_phantom, &mut examples, || {
                    format!(
                        "event phantom: id {} names {named:?} and also {first:?}",
                        event.id
                    )
                });
                continue;
            }
            None => {}
        }
        ids.insert(&event.id, named);
        *by_value.entry(named).or_default() += 1;
        if !positions.contains_key(&named) {
            note(&mut v.events_phantom, &mut examples, || {
                format!(
                    "event phantom: {} names key {} value {}, which is not committed",
                    event.id, event.key, event.value
                )
            });
        }
    }
    for (key, value) in positions.keys() {
        match by_value.get(&(*key, *value)) {
            None => note(&mut v.events_missing, &mut examples, || {
                format!("event missing: key {key} value {value} is committed, no event says so")
            }),
            Some(n) if *n > 1 => note(&mut v.events_duplicate, &mut examples, || {
                format!("event duplicate: key {key} value {value} has {n} distinct event ids")
            }),
            Some(_) => {}
        }
    }
    v.unavailability_ms = unavailability(&history.attempts, &history.injections, history.end);
    examples.sort();
    v.examples = examples;
    v
}

#[cfg(test)]
mod tests;

//! [`Delivery`], what a subscribed grain learns of each event besides the event itself, and
//! [`AppliedEvents`], the grain's record of the last event it applied from each source grain.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::envelope::{EventEnvelope, Source};

/// Where an event delivered to a subscribed grain comes from: its stable id, its source grain
/// and its place in that grain's commits. A grain call's argument (small: no payload), kept
/// by the receiving grain in [`AppliedEvents`] to apply each event once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// The event's stable id ([`EventEnvelope::id`]).
    pub id: String,
    /// The event's type name.
    pub type_name: String,
    /// The grain that published it.
    pub source: Source,
    /// The source grain's state version of the commit that carried it.
    pub version: u64,
    /// Its position among that commit's events.
    pub index: u32,
    /// Commit time, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
}

impl Delivery {
    /// The delivery of `event`.
    #[must_use]
    pub fn of(event: &EventEnvelope) -> Self {
        Self {
            id: event.id.clone(),
            type_name: event.type_name.clone(),
            source: event.source.clone(),
            version: event.version,
            index: event.index,
            timestamp_ms: event.timestamp_ms,
        }
    }

    /// The source grain as one string (`<type>/<key kind>:<key>`), the key of
    /// [`AppliedEvents`].
    #[must_use]
    pub fn source_id(&self) -> String {
        format!(
            "{}/{}:{}",
            self.source.type_name, self.source.key_kind, self.source.key
        )
    }
}

/// The last event applied from each source grain, kept in the receiving grain's state so that
/// it commits with the event's effect (in the same fenced commit): an event at or before the
/// last one applied from its source is a redelivery, recognised and skipped. Subscriptions
/// deliver each source grain's events in commit order, and a source's `(version, index)` only
/// grows (its version advances even when its state is cleared), so one position per source is
/// enough, whatever the number of events.
///
/// It remembers at most `capacity` sources, forgetting the one updated longest ago: size it
/// above the number of source grains that may publish to this grain between a delivery and
/// its redelivery (a retry, a relay that died before its acknowledgement). An event
/// re-driven from the dead letters after later events of its source were applied is older
/// than them and is skipped too: apply it by hand if it must count.
///
/// ```
/// # use granary_events::{AppliedEvents, Delivery, Source};
/// let from = |version| Delivery {
///     id: format!("6:player:s:alice:{version}:0"),
///     type_name: "match.ended".into(),
///     source: Source { type_name: "player".into(), key: "alice".into(), key_kind: "string".into() },
///     version,
///     index: 0,
///     timestamp_ms: 0,
/// };
/// let mut applied = AppliedEvents::default();
/// assert!(applied.first_time(&from(3)));
/// assert!(!applied.first_time(&from(3)), "a redelivery");
/// assert!(applied.first_time(&from(4)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedEvents {
    capacity: usize,
    /// Per source ([`Delivery::source_id`]): the last applied `(version, index)` and when it
    /// was updated (a counter), to forget the stalest source first.
    last: HashMap<String, (u64, u32, u64)>,
    clock: u64,
}

impl Default for AppliedEvents {
    fn default() -> Self {
        Self::with_capacity(4_096)
    }
}

impl AppliedEvents {
    /// Remembers the last event of at most `capacity` sources.
    #[must_use]
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            last: HashMap::new(),
            clock: 0,
        }
    }

    /// Records `delivery` as applied; false if it is at or before the last event applied from
    /// its source (a redelivery to skip).
    pub fn first_time(&mut self, delivery: &Delivery) -> bool {
        let at = (delivery.version, delivery.index);
        let source = delivery.source_id();
        if let Some(&(version, index, _)) = self.last.get(&source)
            && at <= (version, index)
        {
            return false;
        }
        self.clock += 1;
        if !self.last.contains_key(&source)
            && self.last.len() >= self.capacity
            && let Some(stalest) = self
                .last
                .iter()
                .min_by_key(|(_, (_, _, updated))| *updated)
                .map(|(s, _)| s.clone())
        {
            self.last.remove(&stalest);
        }
        self.last.insert(source, (at.0, at.1, self.clock));
        true
    }

    /// The sources remembered.
    #[must_use]
    pub fn sources(&self) -> usize {
        self.last.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(source: &str, version: u64, index: u32) -> Delivery {
        Delivery {
            id: format!("{source}:{version}:{index}"),
            type_name: "t".into(),
            source: Source {
                type_name: "match".into(),
                key: source.into(),
                key_kind: "string".into(),
            },
            version,
            index,
            timestamp_ms: 0,
        }
    }

    #[test]
    fn each_source_is_applied_in_order_once_and_the_stalest_source_is_forgotten() {
        let mut applied = AppliedEvents::with_capacity(2);
        assert!(applied.first_time(&delivery("a", 1, 0)));
        assert!(
            applied.first_time(&delivery("a", 1, 1)),
            "next in the commit"
        );
        assert!(!applied.first_time(&delivery("a", 1, 0)), "older: a repeat");
        assert!(
            !applied.first_time(&delivery("a", 1, 1)),
            "the same: a repeat"
        );
        assert!(applied.first_time(&delivery("b", 7, 0)), "another source");
        assert!(
            applied.first_time(&delivery("a", 2, 0)),
            "a is now the freshest"
        );
        assert!(
            applied.first_time(&delivery("c", 1, 0)),
            "evicts b, the stalest"
        );
        assert_eq!(applied.sources(), 2);
        assert!(
            !applied.first_time(&delivery("a", 2, 0)),
            "a is still known"
        );
        assert!(
            applied.first_time(&delivery("b", 7, 0)),
            "b was forgotten (the documented limit of the window)"
        );
    }
}

//! [`RecentEvents`]: dedupe inside a grain that receives events (a grain subscription).

use std::collections::{HashSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::envelope::EventEnvelope;

/// The ids of the last `capacity` events a grain applied, kept in the grain's state so that
/// the marker commits with the event's effect: a redelivered event (same id) is recognized and
/// skipped, which makes at-least-once delivery an exactly-once effect.
///
/// Redeliveries come soon after the first delivery (a retry, a consumer that died before its
/// acknowledgement), so a window of the last few thousand events is enough; size it above the
/// number of events the grain may receive between a delivery and its redelivery.
///
/// ```
/// # use granary_events::RecentEvents;
/// let mut seen = RecentEvents::with_capacity(2);
/// assert!(seen.first_time("a"));
/// assert!(!seen.first_time("a"));
/// assert!(seen.first_time("b"));
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecentEvents {
    capacity: usize,
    order: VecDeque<String>,
    #[serde(skip)]
    index: HashSet<String>,
}

impl PartialEq for RecentEvents {
    fn eq(&self, other: &Self) -> bool {
        self.capacity == other.capacity && self.order == other.order
    }
}

impl Eq for RecentEvents {}

impl Default for RecentEvents {
    fn default() -> Self {
        Self::with_capacity(4_096)
    }
}

impl RecentEvents {
    /// Remembers the last `capacity` ids.
    #[must_use]
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            order: VecDeque::new(),
            index: HashSet::new(),
        }
    }

    /// Records event `id`; false if it was recorded already (a repeat to skip).
    pub fn first_time(&mut self, id: &str) -> bool {
        if self.index.len() != self.order.len() {
            // Just loaded from storage: the index is not stored.
            self.index = self.order.iter().cloned().collect();
        }
        if self.index.contains(id) {
            return false;
        }
        if self.order.len() == self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.index.remove(&oldest);
        }
        self.order.push_back(id.to_owned());
        self.index.insert(id.to_owned());
        true
    }

    /// As [`first_time`](Self::first_time), for an envelope.
    pub fn first_time_of(&mut self, event: &EventEnvelope) -> bool {
        self.first_time(&event.id)
    }
}

//! Idle collection: every quantum, activations idle for their type's idle time are
//! deactivated.
//!
//! Each pass advances the runtime's epoch; a call stamps its activation with the epoch it
//! arrived in. An activation whose stamp is `ceil(idle_after / quantum) + 1` passes old has
//! had no call for at least `idle_after` (and at most one quantum more). A type's idle time is
//! the silo's `idle_timeout` unless the type sets its own (`#[grain(idle_after = "...")]`, or
//! `SiloBuilder::idle_after`); a type that says "never" is not collected for being idle.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use granary_core::IdleAfter;

use crate::router::Router;

/// The shortest pass interval: a type idle after a few microseconds must not make the
/// collector spin.
const MIN_QUANTUM: Duration = Duration::from_millis(1);

/// When activations are old enough to collect: the pass interval and, per grain type, how many
/// passes without a call make an activation idle.
#[derive(Debug)]
pub(crate) struct Schedule {
    quantum: Duration,
    default_passes: u64,
    /// Types whose policy is not the silo default (`u64::MAX`: never).
    per_type: HashMap<&'static str, u64>,
}

impl Schedule {
    /// The schedule of a silo with `idle_timeout` and `collection_quantum` hosting types with
    /// `policies`. The quantum shrinks to the shortest idle time, so that each type is
    /// collected within one quantum of its own idle time.
    pub(crate) fn new(
        idle_timeout: Duration,
        collection_quantum: Duration,
        policies: &[(&'static str, IdleAfter)],
    ) -> Self {
        let shortest = policies
            .iter()
            .filter_map(|(_, policy)| match policy {
                IdleAfter::After(after) => Some(*after),
                IdleAfter::SiloDefault | IdleAfter::Never => None,
            })
            .fold(idle_timeout, Duration::min);
        let quantum = collection_quantum.min(shortest).max(MIN_QUANTUM);
        let passes = |after: Duration| {
            let passes = after.as_nanos().div_ceil(quantum.as_nanos());
            u64::try_from(passes)
                .unwrap_or(u64::MAX - 1)
                .saturating_add(1)
                .min(u64::MAX - 1)
        };
        let per_type = policies
            .iter()
            .filter_map(|(name, policy)| match policy {
                IdleAfter::SiloDefault => None,
                IdleAfter::After(after) => Some((*name, passes(*after))),
                IdleAfter::Never => Some((*name, u64::MAX)),
            })
            .collect();
        Self {
            quantum,
            default_passes: passes(idle_timeout),
            per_type,
        }
    }

    /// The interval between two passes.
    pub(crate) fn quantum(&self) -> Duration {
        self.quantum
    }

    /// How many passes without a call make an activation of `type_name` idle (`u64::MAX`:
    /// never).
    pub(crate) fn passes(&self, type_name: &str) -> u64 {
        if self.per_type.is_empty() {
            return self.default_passes;
        }
        self.per_type
            .get(type_name)
            .copied()
            .unwrap_or(self.default_passes)
    }
}

/// Runs until the silo's shutdown token is cancelled.
pub(crate) async fn run(router: Arc<Router>) {
    let config = router.shared().config();
    let schedule = Schedule::new(
        config.idle_timeout,
        config.collection_quantum,
        &router.catalog().idle_policies(),
    );
    let stop = router.shared().shutdown().child_token();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(schedule.quantum()) => {}
        }
        let now = router.shared().advance_epoch();
        let idle = router.catalog().idle(now, |t| schedule.passes(t));
        tracing::debug!(
            scanned = router.catalog().len(),
            idle = idle.len(),
            now,
            "idle collection pass"
        );
        for (entry, passes) in idle {
            entry.collect_idle(now, passes);
        }
    }
}

#[cfg(test)]
mod tests;

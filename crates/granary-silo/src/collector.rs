//! Idle collection: every `collection_quantum`, activations idle for `idle_timeout` are
//! deactivated.
//!
//! Each pass advances the runtime's epoch; a call stamps its activation with the epoch it
//! arrived in. An activation whose stamp is `ceil(idle_timeout / quantum) + 1` passes old has
//! had no call for at least `idle_timeout` (and at most one quantum more).

use std::sync::Arc;

use crate::events::DeactivationReason;
use crate::runtime::Runtime;

/// Runs until the silo's shutdown token is cancelled.
pub(crate) async fn run(runtime: Arc<Runtime>) {
    let quantum = runtime
        .config
        .collection_quantum
        .min(runtime.config.idle_timeout);
    let passes = runtime
        .config
        .idle_timeout
        .as_nanos()
        .div_ceil(quantum.as_nanos().max(1));
    let idle_passes = u64::try_from(passes).unwrap_or(u64::MAX).saturating_add(1);
    let stop = runtime.shutdown.child_token();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(quantum) => {}
        }
        let now = runtime
            .epoch
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let idle: Vec<_> = runtime
            .catalog
            .iter()
            .filter(|e| e.idle_for(now).is_some_and(|passes| passes >= idle_passes))
            .map(|e| e.clone())
            .collect();
        tracing::debug!(
            scanned = runtime.catalog.len(),
            idle = idle.len(),
            now,
            "idle collection pass"
        );
        for entry in idle {
            entry.request_deactivation(DeactivationReason::Idle);
        }
    }
}

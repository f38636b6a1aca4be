//! Idle collection: every `collection_quantum`, activations idle for `idle_timeout` are
//! deactivated.
//!
//! Each pass advances the runtime's epoch; a call stamps its activation with the epoch it
//! arrived in. An activation whose stamp is `ceil(idle_timeout / quantum) + 1` passes old has
//! had no call for at least `idle_timeout` (and at most one quantum more).

use std::sync::Arc;

use crate::events::DeactivationReason;
use crate::router::Router;

/// Runs until the silo's shutdown token is cancelled.
pub(crate) async fn run(router: Arc<Router>) {
    let config = router.shared().config();
    let quantum = config.collection_quantum.min(config.idle_timeout);
    let passes = config
        .idle_timeout
        .as_nanos()
        .div_ceil(quantum.as_nanos().max(1));
    let idle_passes = u64::try_from(passes).unwrap_or(u64::MAX).saturating_add(1);
    let stop = router.shared().shutdown().child_token();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(quantum) => {}
        }
        let now = router.shared().advance_epoch();
        let idle = router.catalog().idle(now, idle_passes);
        tracing::debug!(
            scanned = router.catalog().len(),
            idle = idle.len(),
            now,
            "idle collection pass"
        );
        for entry in idle {
            entry.request_deactivation(DeactivationReason::Idle);
        }
    }
}

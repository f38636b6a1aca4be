//! Idle collection: every `collection_quantum`, activations idle for `idle_timeout` are
//! deactivated.

use std::sync::Arc;

use crate::events::DeactivationReason;
use crate::runtime::Runtime;

/// Runs until the silo's shutdown token is cancelled.
pub(crate) async fn run(runtime: Arc<Runtime>) {
    let quantum = runtime
        .config
        .collection_quantum
        .min(runtime.config.idle_timeout);
    let idle_ms = u64::try_from(runtime.config.idle_timeout.as_millis()).unwrap_or(u64::MAX);
    let stop = runtime.shutdown.child_token();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(quantum) => {}
        }
        let now = runtime.now_ms();
        let idle: Vec<_> = runtime
            .catalog
            .iter()
            .filter(|e| e.idle_for(now).is_some_and(|ms| ms >= idle_ms))
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

//! The workload: concurrent callers appending unique values to a few dozen keys through a
//! `ClusterClient`, recording every attempt.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use granary::{CallError, ClusterClient};
use tokio::task::JoinSet;

use crate::grain::ListGrain;
use crate::history::{Attempt, ListDigest, Outcome};

/// The shape of the load.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// Concurrent callers.
    pub callers: u32,
    /// Keys, `0..keys`.
    pub keys: u32,
    /// A caller's pause after a failed call (none after a success).
    pub retry_pause: Duration,
}

/// The running callers.
#[derive(Debug)]
pub struct Workload {
    stop: Arc<AtomicBool>,
    non_retryable: Arc<AtomicUsize>,
    callers: JoinSet<Vec<Attempt>>,
}

impl Workload {
    /// Starts `load.callers` callers on `client`; times are measured from `t0`.
    #[must_use]
    pub fn start(client: &ClusterClient, load: Load, t0: Instant) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let non_retryable = Arc::new(AtomicUsize::new(0));
        let mut callers = JoinSet::new();
        for caller in 0..load.callers {
            let (stop, non_retryable) = (stop.clone(), non_retryable.clone());
            callers.spawn(call(client.clone(), load, caller, t0, stop, non_retryable));
        }
        Self {
            stop,
            non_retryable,
            callers,
        }
    }

    /// How many calls so far failed with an error that is not
    /// [retryable](granary::CallError::is_retryable).
    #[must_use]
    pub fn non_retryable(&self) -> usize {
        self.non_retryable.load(Ordering::Relaxed)
    }

    /// Stops the callers after their current call and returns every attempt.
    pub async fn stop(mut self) -> Vec<Attempt> {
        self.stop.store(true, Ordering::Relaxed);
        let mut attempts = Vec::new();
        while let Some(done) = self.callers.join_next().await {
            if let Ok(mine) = done {
                attempts.extend(mine);
            }
        }
        attempts
    }
}

/// One caller: append unique values (`caller << 32 | n`) to random keys until told to stop.
async fn call(
    client: ClusterClient,
    load: Load,
    caller: u32,
    t0: Instant,
    stop: Arc<AtomicBool>,
    non_retryable: Arc<AtomicUsize>,
) -> Vec<Attempt> {
    let mut rng = fastrand::Rng::with_seed(u64::from(caller) ^ 0x5eed);
    let mut attempts = Vec::new();
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let key = i64::from(rng.u32(0..load.keys));
        let value = (u64::from(caller) << 32) | n;
        n += 1;
        let start = t0.elapsed();
        let result = client.grain::<ListGrain>(key).append(value).await;
        let end = t0.elapsed();
        let outcome = match result {
            Ok(list) => Outcome::Acked(ListDigest::of(&list)),
            Err(err) => {
                if !err.is_retryable() {
                    non_retryable.fetch_add(1, Ordering::Relaxed);
                }
                Outcome::Failed(kind(&err))
            }
        };
        let failed = matches!(outcome, Outcome::Failed(_));
        attempts.push(Attempt {
            key,
            value,
            start,
            end,
            outcome,
        });
        if failed {
            tokio::time::sleep(load.retry_pause).await;
        }
    }
    attempts
}

/// The variant name of `err` (`Timeout`, `SiloUnavailable`, ...).
#[must_use]
pub fn kind(err: &CallError) -> String {
    let debug = format!("{err:?}");
    debug
        .split(|c: char| !c.is_alphanumeric() && c != '_')
        .next()
        .unwrap_or_default()
        .to_owned()
}

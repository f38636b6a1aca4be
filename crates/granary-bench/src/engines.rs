//! The engines under test: Granary and its baselines, each with the same workloads.
//!
//! Every workload builds its own runtime, so that both sides of a comparison get the same
//! thread placement: `p1a` runs caller and actor on one thread (a current-thread runtime, or
//! the actix arbiter); `p1b` runs on two worker threads.

pub(crate) mod actix;
pub(crate) mod floor;
pub(crate) mod granary;
pub(crate) mod kameo;
pub(crate) mod ractor;

use std::sync::Arc;
use std::time::Instant;

/// A cheap xorshift generator for picking actors.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        usize::try_from(self.0 % n as u64).unwrap_or(0)
    }
}

/// Times `calls` sequential awaits of `call(i)` and returns the median latency in ns.
pub(crate) async fn p50_of<F, Fut>(calls: usize, mut call: F) -> f64
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = u64>,
{
    for i in 0..(calls / 10) as u64 {
        std::hint::black_box(call(i).await); // warm-up
    }
    let mut samples = Vec::with_capacity(calls);
    for i in 0..calls as u64 {
        let t = Instant::now();
        std::hint::black_box(call(i).await);
        samples.push(t.elapsed().as_nanos() as f64);
    }
    crate::report::median(&samples)
}

/// A multi-thread tokio runtime with `workers` threads.
pub(crate) fn multi_thread(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("runtime builds")
}

/// A current-thread tokio runtime.
pub(crate) fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime builds")
}

/// Something a P1 (b) caller can call: one request/response round trip.
pub(crate) trait Target: Send + Sync + 'static {
    /// Sends `x`, waits for the reply.
    fn call(&self, x: u64) -> impl Future<Output = u64> + Send;
}

/// Runs `callers` tasks on the current runtime, each making `per_caller` sequential calls to
/// targets picked at random; returns calls per second.
pub(crate) async fn drive_callers<T: Target>(
    targets: Vec<T>,
    callers: usize,
    per_caller: usize,
) -> f64 {
    let targets = Arc::new(targets);
    let start = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|c| {
            let targets = targets.clone();
            tokio::spawn(async move {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 + c as u64);
                for i in 0..per_caller as u64 {
                    std::hint::black_box(targets[rng.below(targets.len())].call(i).await);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("caller");
    }
    (callers * per_caller) as f64 / start.elapsed().as_secs_f64()
}

/// Runs one caller task per target on the current runtime, caller `i` making `per_caller`
/// sequential calls to `targets[i]`; returns calls per second.
pub(crate) async fn drive_own<T: Target>(targets: Vec<T>, per_caller: usize) -> f64 {
    let callers = targets.len();
    let start = Instant::now();
    let tasks: Vec<_> = targets
        .into_iter()
        .map(|target| {
            tokio::spawn(async move {
                for i in 0..per_caller as u64 {
                    std::hint::black_box(target.call(i).await);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("caller");
    }
    (callers * per_caller) as f64 / start.elapsed().as_secs_f64()
}

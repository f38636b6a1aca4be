//! The per-method call counters and duration histograms, sharded by thread.
//!
//! Every call of a method updates its counters, on whichever worker thread the call runs: one
//! shared atomic (or a histogram behind a lock) would bounce its cache line between the
//! workers on every call. Each thread updates a shard of its own (threads are spread over
//! [`SHARDS`] cache-line-aligned shards); a scrape sums the shards.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// How many shards a method's counters have: more than the worker threads of a silo usually
/// are, so that two workers rarely share one.
const SHARDS: usize = 8;

/// How many finite duration buckets there are: upper bounds of 10 µs doubling up to ~5.2 s,
/// then `+Inf`.
const BUCKETS: usize = 20;

/// The upper bound of the first duration bucket, in nanoseconds.
const FIRST_BOUND_NANOS: u64 = 10_000;

/// The counters of one method on the threads of one shard.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard {
    /// Calls handled (one-way and two-way).
    calls: AtomicU64,
    /// Calls whose turn ended in an error.
    errors: AtomicU64,
    /// The summed durations of the timed (two-way) calls, in nanoseconds.
    sum_nanos: AtomicU64,
    /// Timed calls per duration bucket (not cumulative); the last one is `+Inf`.
    buckets: [AtomicU64; BUCKETS + 1],
}

/// The call counter and duration histogram of one method.
#[derive(Debug, Default)]
pub(crate) struct CallStats {
    shards: [Shard; SHARDS],
}

/// What a scrape reads of one method: the shards summed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CallSnapshot {
    /// Calls handled.
    pub(crate) calls: u64,
    /// Calls whose turn ended in an error.
    pub(crate) errors: u64,
    /// The summed durations of the timed calls, in seconds.
    pub(crate) sum_seconds: f64,
    /// Timed calls.
    pub(crate) timed: u64,
    /// `(upper bound in seconds, timed calls in that bucket)`, the last bound `+Inf`.
    pub(crate) buckets: Vec<(f64, u64)>,
}

impl CallStats {
    /// Records one call, how long it took if it was timed, and whether it `failed`.
    pub(crate) fn record(&self, took: Option<Duration>, failed: bool) {
        let shard = &self.shards[shard_index()];
        shard.calls.fetch_add(1, Ordering::Relaxed);
        if failed {
            shard.errors.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(took) = took {
            let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
            shard.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
            shard.buckets[bucket_of(nanos)].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Calls handled so far.
    pub(crate) fn calls(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.calls.load(Ordering::Relaxed))
            .sum()
    }

    /// Calls whose turn ended in an error so far.
    pub(crate) fn errors(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.errors.load(Ordering::Relaxed))
            .sum()
    }

    /// The shards summed. Not one atomic snapshot: calls recorded meanwhile may be counted in
    /// some fields and not yet in others, as with any scrape of a running process.
    pub(crate) fn snapshot(&self) -> CallSnapshot {
        let mut per_bucket = [0_u64; BUCKETS + 1];
        let mut sum_nanos = 0_u64;
        for shard in &self.shards {
            sum_nanos = sum_nanos.wrapping_add(shard.sum_nanos.load(Ordering::Relaxed));
            for (total, bucket) in per_bucket.iter_mut().zip(&shard.buckets) {
                *total += bucket.load(Ordering::Relaxed);
            }
        }
        let buckets = per_bucket
            .iter()
            .enumerate()
            .map(|(i, n)| (upper_bound_seconds(i), *n))
            .collect();
        CallSnapshot {
            calls: self.calls(),
            errors: self.errors(),
            sum_seconds: Duration::from_nanos(sum_nanos).as_secs_f64(),
            timed: per_bucket.iter().sum(),
            buckets,
        }
    }
}

/// The bucket of a duration of `nanos`: the first whose upper bound is at least `nanos`.
fn bucket_of(nanos: u64) -> usize {
    let mut bound = FIRST_BOUND_NANOS;
    for i in 0..BUCKETS {
        if nanos <= bound {
            return i;
        }
        bound *= 2;
    }
    BUCKETS
}

/// The upper bound of bucket `i`, in seconds (`+Inf` for the last).
fn upper_bound_seconds(i: usize) -> f64 {
    if i >= BUCKETS {
        return f64::INFINITY;
    }
    Duration::from_nanos(FIRST_BOUND_NANOS << i).as_secs_f64()
}

/// The shard of the current thread: threads take the shards in turn as they first record.
fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|s| *s)
}

#[cfg(test)]
mod tests;

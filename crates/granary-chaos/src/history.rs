//! What a chaos run records: every append attempted and how it ended, every fault injected,
//! and what Redis held at the end (the lists and the events).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Serialize;

/// A fault the driver injects (`--fault`, combinable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// SIGKILL a random silo, then start it again.
    Kill,
    /// SIGSTOP a random silo until the cluster declares it dead (and at least
    /// `--stop-hold-ms`), then SIGCONT it: it must exit with status 3; then start it again.
    Stop,
    /// Kill the (private, AOF `always`) Redis and start it again on the same port and data.
    RedisRestart,
    /// Cut one silo off from the others (both directions) while every silo still reaches
    /// Redis, then heal.
    Partition,
    /// Restart every silo in turn, gracefully: SIGTERM, wait for it to exit (status 0
    /// expected), start it again and wait for its ready line before the next. No call may
    /// fail with a non-retryable error.
    Rolling,
}

impl FaultKind {
    /// The name used on the command line and in the summary.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Kill => "kill",
            Self::Stop => "stop",
            Self::RedisRestart => "redis-restart",
            Self::Partition => "partition",
            Self::Rolling => "rolling",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A list as an acknowledgement carried it, kept small: its length, a digest of its values in
/// order, and its last value. (Keeping every acknowledged list whole would take gigabytes: each
/// is as long as its key's list.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListDigest {
    /// How many values.
    pub len: usize,
    /// The digest of the values in order ([`digest_step`] from [`DIGEST_SEED`]).
    pub hash: u64,
    /// The last value, if any.
    pub last: Option<u64>,
}

impl ListDigest {
    /// The digest of `values`.
    #[must_use]
    pub fn of(values: &[u64]) -> Self {
        Self {
            len: values.len(),
            hash: values.iter().fold(DIGEST_SEED, |h, v| digest_step(h, *v)),
            last: values.last().copied(),
        }
    }
}

/// The digest of the empty list.
pub const DIGEST_SEED: u64 = 0x6a09_e667_f3bc_c908;

/// Extends a list digest `hash` by `value` (order-sensitive; 64-bit mixing, so two different
/// lists share a digest with odds of about 2^-64).
#[must_use]
pub fn digest_step(hash: u64, value: u64) -> u64 {
    mix(hash ^ mix(value.wrapping_add(0x9e37_79b9_7f4a_7c15)))
}

/// The digests of every prefix of `values`: element `i` is the digest of `values[..i]`.
#[must_use]
pub fn prefix_digests(values: &[u64]) -> Vec<u64> {
    let mut out = Vec::with_capacity(values.len() + 1);
    let mut hash = DIGEST_SEED;
    out.push(hash);
    for value in values {
        hash = digest_step(hash, *value);
        out.push(hash);
    }
    out
}

/// splitmix64's finalizer.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// How an append call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged, with the list the grain returned.
    Acked(ListDigest),
    /// Failed: the error's kind (the `CallError` variant). The append may or may not have
    /// committed.
    Failed(String),
}

/// One append call of the workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The grain key.
    pub key: i64,
    /// The value, unique across the run.
    pub value: u64,
    /// When the call started, since the run started.
    pub start: Duration,
    /// When it ended.
    pub end: Duration,
    /// How it ended.
    pub outcome: Outcome,
}

/// A fault injected at `at` (since the run started).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Injection {
    /// When.
    pub at: Duration,
    /// Which.
    pub fault: FaultKind,
}

/// One event read back from the Redis stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    /// The stable event id (the same on every redelivery).
    pub id: String,
    /// The key of the grain that published it.
    pub key: i64,
    /// The value it names.
    pub value: u64,
}

/// A whole run, as the checker reads it.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// Every append attempted.
    pub attempts: Vec<Attempt>,
    /// Every fault injected, in time order.
    pub injections: Vec<Injection>,
    /// The committed list of every key, read from Redis at the end.
    pub final_lists: BTreeMap<i64, Vec<u64>>,
    /// Every event of the Redis stream, redeliveries included.
    pub events: Vec<EventRecord>,
    /// When the workload stopped: a key still unavailable then is unavailable until here.
    pub end: Duration,
}

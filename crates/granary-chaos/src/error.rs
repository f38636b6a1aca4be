//! [`ChaosError`]: why a chaos run could not run or finish (not what it found: that is the
//! [`Verdict`](crate::Verdict)).

use std::time::Duration;

/// Why a chaos run stopped before it could report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChaosError {
    /// A silo process could not be started, or exited or stayed silent before its ready line.
    /// Its log file (see `--log-dir`) says why; check the silo binary's path and Redis.
    #[error("silo {name} did not start: {reason}")]
    SiloStart {
        /// The silo's name.
        name: String,
        /// What happened.
        reason: String,
    },
    /// Signalling a process or writing to its stdin failed.
    #[error("cannot {what}: {source}")]
    Process {
        /// What was attempted.
        what: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The client could not reach any silo.
    #[error("the client cannot reach the cluster: {0}")]
    Client(#[from] granary::ClientConnectError),
    /// Redis could not be reached to set up or read back the run; check `--redis`.
    #[error("redis: {0}")]
    Connect(#[from] granary_redis::ConnectError),
    /// Reading the final lists, the events or the membership from Redis failed.
    #[error("reading back from redis: {0}")]
    Storage(#[from] granary::StorageError),
    /// A final list is stored in a form `ListGrain` cannot read: the cluster id was reused
    /// by something else.
    #[error("the stored list of key {key} cannot be decoded: {reason}")]
    Decode {
        /// The grain key.
        key: i64,
        /// The decoder's message.
        reason: String,
    },
    /// The options cannot work together; the message says which and why.
    #[error("{0}")]
    Options(String),
    /// A step did not finish in time.
    #[error("{what} did not happen within {within:?}")]
    Timeout {
        /// The step.
        what: String,
        /// The deadline.
        within: Duration,
    },
}

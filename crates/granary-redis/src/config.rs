//! [`RedisConfig`]: where the store connects and how long it waits.

use std::time::Duration;

/// What a silo does when Redis holds no epoch for its cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Bootstrap {
    /// Create the cluster (its epoch) if Redis has none: right for the first start of a cluster
    /// and for development.
    #[default]
    CreateIfMissing,
    /// Refuse to start when Redis has no epoch for the cluster: right for production silos
    /// joining a cluster that is known to exist, so that a Redis that lost its data while every
    /// silo was down is not taken for a new, empty cluster.
    RequireExisting,
}

/// How a [`RedisStore`](crate::RedisStore) connects.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// The Redis URL, e.g. `redis://127.0.0.1:6379` or `redis://:password@host:6379/0`.
    pub url: String,
    /// The cluster id: part of every key, so that clusters can share a Redis. Letters, digits,
    /// `-`, `_` and `.`, at most 64.
    pub cluster: String,
    /// Number of shards (hash tags) the grains are spread over; read from Redis when the cluster
    /// exists already. Each shard has one outbox stream. Default 64.
    pub shards: u32,
    /// Deadline of every command: a command without a reply by then fails with
    /// `StorageError::Unavailable` (its outcome unknown). Default 2 s.
    pub command_timeout: Duration,
    /// Deadline of one connection attempt. Default 500 ms.
    pub connect_timeout: Duration,
    /// Attempts per reconnection before failing the commands that wait for it; the next command
    /// starts a new reconnection. Default 2.
    pub reconnect_attempts: usize,
    /// What to do when Redis holds no epoch for the cluster.
    pub bootstrap: Bootstrap,
}

impl RedisConfig {
    /// The defaults for `url` and `cluster`.
    #[must_use]
    pub fn new(url: impl Into<String>, cluster: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            cluster: cluster.into(),
            shards: 64,
            command_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_millis(500),
            reconnect_attempts: 2,
            bootstrap: Bootstrap::default(),
        }
    }

    /// Sets [`bootstrap`](Self::bootstrap).
    #[must_use]
    pub fn bootstrap(mut self, bootstrap: Bootstrap) -> Self {
        self.bootstrap = bootstrap;
        self
    }

    /// Sets [`shards`](Self::shards).
    #[must_use]
    pub fn shards(mut self, shards: u32) -> Self {
        self.shards = shards;
        self
    }

    /// Sets [`command_timeout`](Self::command_timeout).
    #[must_use]
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// The URL without its password, for messages.
    pub(crate) fn redacted_url(&self) -> String {
        match (self.url.find("://"), self.url.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                format!("{}://…@{}", &self.url[..scheme], &self.url[at + 1..])
            }
            _ => self.url.clone(),
        }
    }
}

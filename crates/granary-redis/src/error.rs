//! [`ConnectError`]: why a [`RedisStore`](crate::RedisStore) could not start.

/// Why [`RedisStore::connect`](crate::RedisStore::connect) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The configuration is invalid; the message says which setting.
    #[error("invalid Redis store configuration: {0}")]
    Config(String),
    /// Redis could not be reached.
    #[error(
        "cannot reach Redis at {url}: {reason}. Is it running? (locally: `redis-server --port 6379`)"
    )]
    Unreachable {
        /// The URL, without password.
        url: String,
        /// What failed.
        reason: String,
    },
    /// Redis holds no data for the cluster and [`Bootstrap::RequireExisting`](crate::Bootstrap)
    /// forbids creating it.
    #[error(
        "Redis at {url} holds no cluster {cluster:?}: it was never created there, or Redis lost its data. Restore the data, or start one silo with Bootstrap::CreateIfMissing to create the cluster"
    )]
    NoCluster {
        /// The cluster id.
        cluster: String,
        /// The URL, without password.
        url: String,
    },
    /// Redis holds part of the cluster's data: it lost some (a restart without persistence, a
    /// flush). Starting would re-create grains with default state.
    #[error(
        "Redis lost part of this cluster's data ({0}); refusing to start. Restore the data, or delete the cluster's keys to start it afresh"
    )]
    DataLost(String),
    /// Redis or the cluster's data is of a version this build does not support.
    #[error("{0}")]
    Incompatible(String),
    /// The Redis Cluster cannot serve the store: a seed is not a cluster node, or the
    /// cluster does not cover every slot (a node is down or slots were never assigned).
    #[error("Redis Cluster at {url}: {reason}")]
    Cluster {
        /// The URL, without password.
        url: String,
        /// What is wrong, and what to do.
        reason: String,
    },
}

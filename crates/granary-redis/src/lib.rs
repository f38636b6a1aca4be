//! Granary on Redis: grain state with fenced, versioned commits, a transactional outbox and the
//! grain directory, in one provider ([`RedisStore`]).
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use granary_redis::{RedisConfig, RedisStore};
//!
//! let store = RedisStore::connect(RedisConfig::new("redis://127.0.0.1:6379", "demo")).await?;
//! let silo = granary::Silo::builder()
//!     // .register::<PlayerGrain>()
//!     .storage(Arc::new(store))
//!     .start()
//!     .await?;
//! # silo.shutdown().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Promises
//!
//! - **No two activations of a grain ever commit.** An activation claims its grain (the owner
//!   field of the grain's hash, which is also its directory entry) and loads its state in one
//!   round trip (one script). Every commit is a script that applies only if the owner entry still names the
//!   activation *and* the stored version equals the version the activation loaded. Otherwise
//!   nothing is written, the call fails with `CallError::StorageConflict`, the activation is
//!   deactivated and the next call loads again. Nothing is retried blindly.
//! - **State and events commit together.** The events a turn published are appended to the
//!   outbox stream in the same script as the state write, each with the stable id
//!   `(grain, version, index)`; a commit that fails appends nothing.
//! - **A Redis that lost its data is noticed.** The cluster's epoch (a UUID written when the
//!   cluster is first created) is copied into every shard, and every script checks it. If Redis
//!   restarts empty or is flushed, claims and commits fail with `StorageError::DataLost` instead
//!   of re-creating grains with default state. A silo starting later against such a Redis would
//!   create a new epoch (a new, empty cluster) unless it is configured with
//!   [`Bootstrap::RequireExisting`], which production silos should use.
//!
//! # Key layout
//!
//! Grains are spread over `shards` (default 64) by `GrainId::stable_hash`. All keys of one
//! shard share the hash tag `{<cluster>:<shard>}`, so each script touches one Redis Cluster slot.
//! `<grain>` is `<type length>:<type>:<kind>:<key>` with kind `s`, `i` or `u` (string,
//! integer, UUID key), e.g. `6:player:s:alice`. No key has a TTL.
//!
//! | key | type | holds |
//! |-----|------|-------|
//! | `granary:<cluster>:meta` | hash | `epoch`, `shards`, `layout`, `ready` |
//! | `granary:<cluster>:membership` | hash | `#version`, and one JSON row per silo (`<name>#<generation>`): see [`RedisMembership`] |
//! | `granary:{<cluster>:<shard>}:epoch` | string | the shard's copy of the epoch |
//! | `granary:{<cluster>:<shard>}:grain:<grain>` | hash | `v` version (kept after a clear), `d` state blob, `a` owner: `<activation>\|<silo generation>\|<silo name>` (the directory entry) |
//! | `granary:{<cluster>:<shard>}:outbox` | stream | committed events: `g` grain, `v` version, `i` index, `t` type, `p` JSON payload (`ms`: the commit time, on an entry re-driven from the dead-letter stream) |
//! | `granary:{<cluster>:<shard>}:outbox:dead` | stream | the shard's dead letters: an outbox entry's fields as they were, plus `ms` (its commit time) and `reason` |
//!
//! The state blob is the checked envelope of `granary::codec::state_codec` (magic, format, codec,
//! schema version, CRC-32, named MessagePack).
//!
//! # What "committed" means
//!
//! A commit is acknowledged when Redis has run its script: the change is in Redis' memory and
//! no other activation can overwrite it. Whether it survives a Redis crash depends on how Redis
//! is run:
//!
//! | Redis durability | an acknowledged commit survives |
//! |------------------|----------------------------------|
//! | no persistence | nothing: a restart loses every grain (and is detected as `DataLost`) |
//! | RDB snapshots | only up to the last snapshot: a crash loses later commits, which looks like `DataLost` only if the epoch is lost too, so do not use RDB alone for player data |
//! | AOF `appendfsync everysec` | a Redis process crash; a machine crash may lose the last second |
//! | AOF `appendfsync always` | a process or machine crash: every acknowledged commit is on disk (tested) |
//! | replication | by default, what reached the replica: a failover may lose the last commits acknowledged by the old primary; the new activation's fence still holds |
//! | replication with [`RedisConfig::wait_replicas`] | every acknowledged commit, on a failover to a replica that acknowledged it: each commit is followed by `WAIT` on its primary, and fails with `StorageError::NotReplicated` if fewer replicas confirm in time (tested on a Redis Cluster by killing a primary) |
//!
//! # Redis Cluster
//!
//! A URL `redis+cluster://host1:port1,host2:port2` (seed nodes) connects to a Redis Cluster
//! through the `redis` crate's cluster client: each command goes to the primary of its key's
//! slot, `MOVED`/`ASK` redirections are followed (slots may move while silos run), and
//! commands on several shards (outbox reads, acknowledgements, a sink's batch) go as one
//! pipeline per key, all at once, instead of one pipeline. Every script touches the keys of one
//! shard (one hash tag, one slot); the metadata and membership are single keys. The relay polls
//! the outbox (a blocking read cannot span slots). Connecting fails with
//! [`ConnectError::Cluster`] if a seed is not a cluster node or the cluster does not serve every
//! slot, and with [`ConnectError::Config`] if a `redis://` URL names a cluster node.
//!
//! # Living with Redis
//!
//! Commands go over one auto-reconnecting [`redis::aio::ConnectionManager`] (on a Redis
//! Cluster, the cluster client's connection to each node). Each has a deadline
//! ([`RedisConfig::command_timeout`]); when Redis is down, calls fail fast with
//! `StorageError::Unavailable` and the store reconnects on its own when Redis returns. A commit
//! whose reply is lost has an unknown outcome: the activation is deactivated and the next call
//! loads what Redis holds. Scripts are loaded on first use and again after a Redis restart
//! (`NOSCRIPT` fallback). Redis 7 or later is required.

mod config;
mod conn;
mod consumer;
mod error;
mod keys;
mod membership;
mod scripts;
mod store;
mod streams;

pub use config::{Bootstrap, RedisConfig, WaitReplicas};
pub use conn::RedisConnection;
pub use consumer::{ConsumeError, ConsumerConfig, Idempotency, StreamConsumer};
pub use error::ConnectError;
pub use membership::RedisMembership;
/// The TLS certificates of a `rediss://` URL ([`RedisConfig::tls`]), from the redis crate.
pub use redis::{ClientTlsConfig, TlsCertificates};
pub use store::RedisStore;
pub use streams::{RedisPubSubSink, RedisStreamsSink};

#[doc(hidden)]
pub mod __private {
    //! The raw scripts, for the benchmarks that compare the store with them.
    #[must_use]
    pub fn commit_script() -> &'static str {
        crate::scripts::Scripts::commit_source()
    }
    #[must_use]
    pub fn claim_script() -> &'static str {
        crate::scripts::Scripts::claim_source()
    }
}

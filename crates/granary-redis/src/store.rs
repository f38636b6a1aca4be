//! [`RedisStore`]: the state store, outbox and grain directory on Redis.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::streams::StreamRangeReply;
use redis::{AsyncCommands, RedisError, Value};

use granary_core::provider::{
    Claim, Commit, DeadLetter, DueReminder, EventId, GrainAddress, GrainDirectory, Loaded, Outbox,
    OutboxEntry, OutboxPosition, Reminder, ReminderChange, ReminderTable, ShardRead, StateChange,
    StateStore,
};
use granary_core::{ActivationId, GrainId, PublishedEvent, SiloId, StorageError};

use crate::config::{Bootstrap, RedisConfig, Target, WaitReplicas};
use crate::conn::Conn;
use crate::error::ConnectError;
use crate::keys::{Keys, grain_field, parse_grain_field, parse_reminder_member, validate_cluster};
use crate::scripts::Scripts;

/// The envelope format the cluster's metadata records; a silo refuses a cluster of another.
const LAYOUT_VERSION: &str = "1";

/// Grain state, the transactional outbox and the grain directory in Redis.
///
/// Cheap to share behind an `Arc`; every operation uses one auto-reconnecting multiplexed
/// connection (to one Redis, or to each node of a Redis Cluster). See the crate docs for the
/// key layout and what "committed" means.
pub struct RedisStore {
    pub(crate) conn: Conn,
    pub(crate) keys: Keys,
    epoch: Arc<str>,
    /// `<cluster>.<epoch>`: the origin of this store's event ids.
    origin: Arc<str>,
    scripts: Scripts,
    pub(crate) url: String,
    pub(crate) timeout: Duration,
    /// Replica acknowledgement of commits, if configured.
    wait_replicas: Option<WaitReplicas>,
    /// The client of the blocking reads; `None` on a Redis Cluster, where a blocking read
    /// cannot span the shards' slots and the relay polls instead.
    client: Option<redis::Client>,
    /// Per outbox shard, the id after which [`Outbox::wait_for_entries`] waits for new entries:
    /// the last entry the latest read returned, or `0-0` when it found none, so that an entry
    /// appended between that read and the wait wakes the wait at once.
    read_up_to: std::sync::Mutex<HashMap<u32, String>>,
    /// A connection of its own for blocking reads (`XREAD BLOCK`), made on first use.
    blocking: tokio::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.url)
            .field("epoch", &self.epoch)
            .field("shards", &self.keys.shards())
            .field("cluster", &self.conn.is_cluster())
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to Redis, checks its version, and joins (or, per
    /// [`RedisConfig::bootstrap`], creates) the cluster's epoch.
    ///
    /// # Errors
    /// A [`ConnectError`] saying what is wrong: a bad config, Redis unreachable or too old, no
    /// cluster to join, or a Redis that lost the cluster's data.
    pub async fn connect(config: RedisConfig) -> Result<Self, ConnectError> {
        validate_cluster(&config.cluster).map_err(ConnectError::Config)?;
        if config.shards == 0 {
            return Err(ConnectError::Config("shards must be at least 1".into()));
        }
        if let Some(wait) = config.wait_replicas
            && (wait.replicas == 0 || wait.timeout >= config.command_timeout)
        {
            return Err(ConnectError::Config(format!(
                "wait_replicas needs at least 1 replica and a timeout shorter than the command \
                 timeout ({:?}); got {} replicas and {:?}",
                config.command_timeout, wait.replicas, wait.timeout
            )));
        }
        let url = config.redacted_url();
        // Commands are bounded by `bounded` on one Redis (one timer per command is enough);
        // a cluster connection gets its own deadline.
        let (mut conn, blocking_client) = open(&config, None, config.command_timeout).await?;
        let unreachable = |reason: String| ConnectError::Unreachable {
            url: url.clone(),
            reason,
        };
        check_version(&mut conn).await.map_err(|e| match e {
            VersionError::Redis(e) => unreachable(e.to_string()),
            VersionError::TooOld(v) => ConnectError::Incompatible(format!(
                "Redis {v} at {url} is too old: Granary needs Redis 7 or later"
            )),
            VersionError::ClusterNode => ConnectError::Config(format!(
                "{url} is a Redis Cluster node: a single-Redis URL would fail on every key \
                 another node holds. Write the cluster's seed nodes as \
                 redis+cluster://host1:port1,host2:port2"
            )),
        })?;
        let (epoch, shards) = join_epoch(&mut conn, &config).await.map_err(|e| match e {
            EpochError::Redis(e) => unreachable(e.to_string()),
            EpochError::Connect(e) => e,
        })?;
        tracing::info!(url = %url, cluster = %config.cluster, %epoch, shards, "joined the cluster's Redis store");
        Ok(Self {
            conn,
            keys: Keys::new(&config.cluster, shards),
            origin: format!("{}.{epoch}", config.cluster).into(),
            epoch: epoch.into(),
            scripts: Scripts::new(),
            url,
            timeout: config.command_timeout,
            wait_replicas: config.wait_replicas,
            client: blocking_client,
            read_up_to: std::sync::Mutex::default(),
            blocking: tokio::sync::Mutex::new(None),
        })
    }

    /// The origin of this store's event ids, `<cluster>.<epoch>`: see
    /// [`EventId::origin`](granary_core::provider::EventId::origin).
    #[must_use]
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The cluster epoch this store joined.
    #[must_use]
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// The number of shards (and outbox streams) of the cluster.
    #[must_use]
    pub fn shards(&self) -> u32 {
        self.keys.shards()
    }

    /// The raw state bytes and version of `grain`, read outside any activation (tools, tests).
    ///
    /// # Errors
    /// [`StorageError::Unavailable`] if Redis cannot be reached.
    pub async fn read_raw(&self, grain: &GrainId) -> Result<(Option<Vec<u8>>, u64), StorageError> {
        let key = self.keys.grain(grain).grain;
        let mut conn = self.conn.clone();
        let (version, data): (Option<u64>, Option<Vec<u8>>) = self
            .bounded(async move {
                redis::cmd("HMGET")
                    .arg(&key)
                    .arg("v")
                    .arg("d")
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        Ok((data, version.unwrap_or(0)))
    }

    /// Writes raw state bytes for `grain` outside any activation, advancing its version (tests:
    /// seed or corrupt data; tools: repair it). An active activation of the grain then
    /// conflicts on its next commit.
    ///
    /// # Errors
    /// [`StorageError::Unavailable`] if Redis cannot be reached.
    pub async fn put_raw(&self, grain: &GrainId, data: &[u8]) -> Result<u64, StorageError> {
        let key = self.keys.grain(grain).grain;
        let mut conn = self.conn.clone();
        let mut invocation = self.scripts.put_raw.prepare_invoke();
        invocation.key(key).arg(data);
        self.bounded(async move { invocation.invoke_async(&mut conn).await })
            .await
    }

    /// Whether Redis answers now: one `PING` under the command deadline. For health checks
    /// (`granary-node`'s readiness probe); the store's operations need no prior ping.
    ///
    /// # Errors
    /// [`StorageError::Unavailable`] if Redis does not answer in time or refuses the command.
    pub async fn ping(&self) -> Result<(), StorageError> {
        let mut conn = self.conn.clone();
        let _: String = self
            .bounded(async move { redis::cmd("PING").query_async(&mut conn).await })
            .await?;
        Ok(())
    }

    /// Runs one Redis operation under the command deadline.
    pub(crate) async fn bounded<T>(
        &self,
        op: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, StorageError> {
        match tokio::time::timeout(self.timeout, op).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err))
                if err.is_io_error() || err.is_timeout() || err.is_connection_dropped() =>
            {
                Err(StorageError::Unavailable(format!(
                    "Redis at {}: {err}",
                    self.url
                )))
            }
            Ok(Err(err)) => Err(StorageError::Unavailable(format!(
                "Redis at {} refused the command: {err}",
                self.url
            ))),
            Err(_) => Err(StorageError::Unavailable(format!(
                "Redis at {} did not answer within {:?}; the command's outcome is unknown",
                self.url, self.timeout
            ))),
        }
    }

    fn data_lost(&self, shard: u32, found: Option<&str>) -> StorageError {
        let found = match found {
            Some(epoch) => format!("epoch {epoch}"),
            None => "no epoch".to_owned(),
        };
        StorageError::DataLost(format!(
            "shard {shard} of Redis at {} holds {found}, this silo joined epoch {}",
            self.url, self.epoch
        ))
    }

    /// Claims `address.grain` if it has no owner or its owner is `replace`, and loads its state:
    /// one script, one round trip.
    async fn claim_grain(
        &self,
        address: &GrainAddress,
        replace: Option<&GrainAddress>,
    ) -> Result<Claim, StorageError> {
        let keys = self.keys.grain(&address.grain);
        let owner = owner_entry(address);
        let mut invocation = self.scripts.claim.prepare_invoke();
        invocation
            .key(&keys.epoch)
            .key(&keys.grain)
            .arg(&*self.epoch)
            .arg(&owner)
            .arg(
                replace
                    .map(|r| r.activation.to_string())
                    .unwrap_or_default(),
            );
        let mut conn = self.conn.clone();
        let reply: Vec<Value> = self
            .bounded(async move { invocation.invoke_async(&mut conn).await })
            .await?;
        let malformed = || StorageError::Malformed(format!("claim script replied {reply:?}"));
        match reply.first().and_then(as_string).as_deref() {
            Some("won") => {
                let version = reply.get(1).and_then(as_u64).ok_or_else(malformed)?;
                let data = match reply.get(2) {
                    Some(Value::BulkString(data)) => Some(data.clone()),
                    _ => None,
                };
                Ok(Claim::Won(Loaded { data, version }))
            }
            Some("owned") => reply
                .get(1)
                .and_then(as_string)
                .and_then(|o| parse_owner(&address.grain, &o))
                .map(Claim::Owned)
                .ok_or_else(malformed),
            Some("epoch") => {
                Err(self.data_lost(keys.shard, reply.get(1).and_then(as_string).as_deref()))
            }
            _ => Err(malformed()),
        }
    }

    async fn commit_turn(&self, commit: Commit) -> Result<u64, StorageError> {
        let keys = self.keys.grain(&commit.grain);
        let mut invocation = self.scripts.commit.prepare_invoke();
        let (change, data): (&str, &[u8]) = match &commit.change {
            StateChange::Write(data) => ("w", data),
            StateChange::Clear => ("c", &[]),
            StateChange::Unchanged => ("u", &[]),
        };
        invocation
            .key(&keys.epoch)
            .key(&keys.grain)
            .key(&keys.outbox)
            .arg(&*self.epoch)
            .arg(commit.activation.to_string())
            .arg(commit.expected_version)
            .arg(change)
            .arg(data)
            .arg(grain_field(&commit.grain))
            .arg(commit.events.len());
        for event in &commit.events {
            invocation
                .arg(&event.type_name)
                .arg(event.payload.as_slice())
                .arg(event.trace.map(|t| t.to_string()).unwrap_or_default());
        }
        if !commit.reminders.is_empty() {
            // The reminder keys only when used: a commit without reminder changes sends what
            // it sent before reminders existed.
            invocation
                .key(self.keys.reminders_of(&commit.grain))
                .key(self.keys.reminder_index(keys.shard))
                .arg(commit.reminders.len());
        }
        for change in &commit.reminders {
            match change {
                ReminderChange::Set(r) => invocation
                    .arg("s")
                    .arg(&r.name)
                    .arg(r.period_ms)
                    .arg(r.next_due_ms),
                ReminderChange::Remove(name) => invocation.arg("d").arg(name).arg("").arg(""),
            };
        }
        let mut conn = self.conn.clone();
        let reply: Vec<Value> = self
            .bounded(async move { invocation.invoke_async(&mut conn).await })
            .await?;
        let malformed = || StorageError::Malformed(format!("commit script replied {reply:?}"));
        match reply.first().and_then(as_string).as_deref() {
            Some("ok") => {
                let version = reply.get(1).and_then(as_u64).ok_or_else(malformed)?;
                if let Some(wait) = self.wait_replicas {
                    self.replicated(&keys.grain, wait).await?;
                }
                Ok(version)
            }
            Some("owner") => Err(StorageError::NotOwner),
            Some("conflict") => Err(StorageError::Conflict {
                expected: commit.expected_version,
                actual: reply.get(1).and_then(as_u64).ok_or_else(malformed)?,
            }),
            Some("epoch") => {
                Err(self.data_lost(keys.shard, reply.get(1).and_then(as_string).as_deref()))
            }
            _ => Err(malformed()),
        }
    }

    /// Waits until `wait.replicas` replicas of the primary holding `key` confirmed what this
    /// store wrote to it (the commit just run), or fails with [`StorageError::NotReplicated`].
    async fn replicated(&self, key: &str, wait: WaitReplicas) -> Result<(), StorageError> {
        let acked = self
            .bounded(self.conn.wait_replicas(key, wait.replicas, wait.timeout))
            .await?;
        let acked = u32::try_from(acked).unwrap_or(0);
        if acked < wait.replicas {
            return Err(StorageError::NotReplicated {
                wanted: wait.replicas,
                acked,
                timeout_ms: u64::try_from(wait.timeout.as_millis()).unwrap_or(u64::MAX),
            });
        }
        Ok(())
    }

    async fn pending_entries(&self, max: usize) -> Result<Vec<OutboxEntry>, StorageError> {
        self.pending_of(0..self.keys.shards(), "-", max).await
    }

    /// Up to `max` entries of `shard` after the stream entry `after`.
    async fn pending_after(
        &self,
        shard: u32,
        after: &str,
        max: usize,
    ) -> Result<Vec<OutboxEntry>, StorageError> {
        let from = id_after(shard, after)?;
        self.read_ranges(vec![(shard, from, max)], max)
            .await
            .map(|mut read| read.pop().unwrap_or_default())
    }

    /// Up to `max` entries of `shards`, from the stream id `from` (`-`: the oldest) in each.
    async fn pending_of(
        &self,
        shards: std::ops::Range<u32>,
        from: &str,
        max: usize,
    ) -> Result<Vec<OutboxEntry>, StorageError> {
        let reads = shards.map(|shard| (shard, from.to_owned(), max)).collect();
        let read = self.read_ranges(reads, max).await?;
        Ok(read.into_iter().flatten().collect())
    }

    /// Reads the outbox ranges `reads` (a shard, the stream id to start at, inclusive, and
    /// how many entries at most) in one round trip (one pipeline; on a Redis Cluster one per
    /// shard, sent together), up to `total` entries in all: per read, its entries, oldest
    /// first. An undecodable entry is moved to its shard's dead-letter stream and left out.
    async fn read_ranges(
        &self,
        reads: Vec<(u32, String, usize)>,
        total: usize,
    ) -> Result<Vec<Vec<OutboxEntry>>, StorageError> {
        let shards: Vec<u32> = reads.iter().map(|(shard, ..)| *shard).collect();
        let cmds = reads
            .into_iter()
            .map(|(shard, from, max)| {
                redis::cmd("XRANGE")
                    .arg(self.keys.outbox(shard))
                    .arg(from)
                    .arg("+")
                    .arg("COUNT")
                    .arg(max.min(i64::MAX as usize))
                    .clone()
            })
            .collect();
        let replies: Vec<StreamRangeReply> = self.bounded(self.conn.query_each(cmds)).await?;
        let mut read = Vec::with_capacity(replies.len());
        let mut taken_in_all = 0;
        let mut undecodable: Vec<(OutboxPosition, String)> = Vec::new();
        for (shard, reply) in shards.into_iter().zip(replies) {
            let taken = reply.ids.len().min(total - taken_in_all);
            let last = taken
                .checked_sub(1)
                .map_or_else(|| "0-0".to_owned(), |i| reply.ids[i].id.clone());
            if let Ok(mut read_up_to) = self.read_up_to.lock() {
                read_up_to.insert(shard, last);
            }
            taken_in_all += taken;
            let mut entries = Vec::with_capacity(taken);
            for stream_id in reply.ids.into_iter().take(taken) {
                match outbox_entry(&self.origin, shard, &stream_id.id, &stream_id.map) {
                    Ok(entry) => entries.push(entry),
                    Err(err) => {
                        tracing::error!(
                            shard,
                            entry = %stream_id.id,
                            cause = %err,
                            "undecodable outbox entry: moved to the shard's dead-letter stream"
                        );
                        undecodable.push((
                            OutboxPosition {
                                shard,
                                entry: stream_id.id,
                            },
                            format!("undecodable outbox entry: {err}"),
                        ));
                    }
                }
            }
            read.push(entries);
        }
        if !undecodable.is_empty() {
            // Set aside so that the shard goes on; if that fails, the next read tries again.
            self.dead_letter_entries(&undecodable).await?;
        }
        Ok(read)
    }

    async fn dead_letter_entries(
        &self,
        entries: &[(OutboxPosition, String)],
    ) -> Result<(), StorageError> {
        let mut by_shard: HashMap<u32, Vec<(&str, &str)>> = HashMap::new();
        for (position, reason) in entries {
            by_shard
                .entry(position.shard)
                .or_default()
                .push((&position.entry, reason));
        }
        for (shard, moves) in by_shard {
            let mut invocation = self.scripts.dead_letter.prepare_invoke();
            invocation
                .key(self.keys.outbox(shard))
                .key(self.keys.dead(shard));
            for (entry, reason) in moves {
                invocation.arg(entry).arg(reason);
            }
            let mut conn = self.conn.clone();
            self.bounded(async move { invocation.invoke_async::<i64>(&mut conn).await })
                .await?;
        }
        Ok(())
    }

    async fn dead_letters_of(
        &self,
        shard: u32,
        max: usize,
    ) -> Result<Vec<DeadLetter>, StorageError> {
        if shard >= self.keys.shards() || max == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let key = self.keys.dead(shard);
        let reply: StreamRangeReply = self
            .bounded(async move {
                redis::cmd("XRANGE")
                    .arg(&key)
                    .arg("-")
                    .arg("+")
                    .arg("COUNT")
                    .arg(max.min(i64::MAX as usize))
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        Ok(reply
            .ids
            .into_iter()
            .map(|stream_id| {
                let decoded = outbox_entry(&self.origin, shard, &stream_id.id, &stream_id.map);
                let reason = stream_id
                    .map
                    .get("reason")
                    .and_then(as_string)
                    .unwrap_or_default();
                let (id, type_name) = match decoded {
                    Ok(entry) => (Some(entry.id), Some(entry.event.type_name)),
                    Err(_) => (None, stream_id.map.get("t").and_then(as_string)),
                };
                DeadLetter {
                    dead_ms: entry_ms(&stream_id.id),
                    position: OutboxPosition {
                        shard,
                        entry: stream_id.id,
                    },
                    reason,
                    id,
                    type_name,
                }
            })
            .collect())
    }

    async fn redrive_entries(&self, dead: &[OutboxPosition]) -> Result<usize, StorageError> {
        let mut by_shard: HashMap<u32, Vec<&str>> = HashMap::new();
        for position in dead {
            by_shard
                .entry(position.shard)
                .or_default()
                .push(&position.entry);
        }
        let mut moved = 0;
        for (shard, ids) in by_shard {
            if shard >= self.keys.shards() {
                continue;
            }
            let mut invocation = self.scripts.redrive.prepare_invoke();
            invocation
                .key(self.keys.dead(shard))
                .key(self.keys.outbox(shard));
            for id in ids {
                invocation.arg(id);
            }
            let mut conn = self.conn.clone();
            let n = self
                .bounded(async move { invocation.invoke_async::<i64>(&mut conn).await })
                .await?;
            moved += usize::try_from(n).unwrap_or(0);
        }
        Ok(moved)
    }

    async fn ack_entries(&self, positions: &[OutboxPosition]) -> Result<(), StorageError> {
        let mut by_shard: HashMap<u32, Vec<&str>> = HashMap::new();
        for position in positions {
            by_shard
                .entry(position.shard)
                .or_default()
                .push(&position.entry);
        }
        let deletes = by_shard
            .into_iter()
            .map(|(shard, ids)| {
                redis::cmd("XDEL")
                    .arg(self.keys.outbox(shard))
                    .arg(ids)
                    .clone()
            })
            .collect();
        self.bounded(self.conn.query_each::<Value>(deletes))
            .await
            .map(drop)
    }

    /// Blocks (at most `timeout`) until an entry is appended to one of `shards`' outbox streams.
    async fn block_until_appended(
        &self,
        shards: &[u32],
        timeout: Duration,
    ) -> Result<(), RedisError> {
        let Some(client) = self.client.as_ref().filter(|_| !shards.is_empty()) else {
            // Nothing to wait for, or a Redis Cluster, where one blocking read cannot span the
            // shards' slots: wait the timeout (the relay's poll interval).
            tokio::time::sleep(timeout).await;
            return Ok(());
        };
        let mut slot = self.blocking.lock().await;
        if slot.is_none() {
            let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
            *slot = Some(
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?,
            );
        }
        let conn = slot.as_mut().expect("just made");
        let mut read = redis::cmd("XREAD");
        read.arg("COUNT")
            .arg(1)
            .arg("BLOCK")
            .arg(
                u64::try_from(timeout.as_millis())
                    .unwrap_or(u64::MAX)
                    .max(1),
            )
            .arg("STREAMS");
        for shard in shards {
            read.arg(self.keys.outbox(*shard));
        }
        {
            let read_up_to = self.read_up_to.lock().map_err(|_| {
                RedisError::from((redis::ErrorKind::Client, "outbox read positions poisoned"))
            })?;
            for shard in shards {
                // A shard not read yet: only what is appended from now on.
                read.arg(read_up_to.get(shard).map_or("$", String::as_str));
            }
        }
        let result: Result<Value, RedisError> = read.query_async(conn).await;
        if result.is_err() {
            *slot = None;
        }
        result.map(drop)
    }

    async fn lookup_owner(&self, grain: &GrainId) -> Result<Option<GrainAddress>, StorageError> {
        let key = self.keys.grain(grain).grain;
        let mut conn = self.conn.clone();
        let owner: Option<String> = self
            .bounded(async move { conn.hget(&key, "a").await })
            .await?;
        owner
            .map(|o| {
                parse_owner(grain, &o).ok_or_else(|| {
                    StorageError::Malformed(format!("owner entry of {grain}: {o:?}"))
                })
            })
            .transpose()
    }

    async fn unregister_owner(&self, address: &GrainAddress) -> Result<(), StorageError> {
        let key = self.keys.grain(&address.grain).grain;
        let mut invocation = self.scripts.unregister.prepare_invoke();
        invocation.key(key).arg(address.activation.to_string());
        let mut conn = self.conn.clone();
        self.bounded(async move { invocation.invoke_async::<i64>(&mut conn).await })
            .await
            .map(drop)
    }
}

impl StateStore for RedisStore {
    fn claim(
        &self,
        address: &GrainAddress,
        replace: Option<&GrainAddress>,
    ) -> BoxFuture<'_, Result<Claim, StorageError>> {
        let address = address.clone();
        let replace = replace.cloned();
        Box::pin(async move { self.claim_grain(&address, replace.as_ref()).await })
    }

    fn commit(&self, commit: Commit) -> BoxFuture<'_, Result<u64, StorageError>> {
        Box::pin(self.commit_turn(commit))
    }

    fn reminders(&self) -> Option<&dyn ReminderTable> {
        Some(self)
    }
}

impl RedisStore {
    async fn reminders_of_grain(&self, grain: &GrainId) -> Result<Vec<Reminder>, StorageError> {
        let key = self.keys.reminders_of(grain);
        let mut conn = self.conn.clone();
        let fields: Vec<(String, String)> = self
            .bounded(async move { redis::cmd("HGETALL").arg(&key).query_async(&mut conn).await })
            .await?;
        fields
            .into_iter()
            .map(|(name, value)| {
                let parsed = value
                    .split_once(':')
                    .and_then(|(p, n)| Some((p.parse().ok()?, n.parse().ok()?)));
                let (period_ms, next_due_ms) = parsed.ok_or_else(|| {
                    StorageError::Malformed(format!("reminder {name:?} of {grain} is {value:?}"))
                })?;
                Ok(Reminder {
                    name,
                    period_ms,
                    next_due_ms,
                })
            })
            .collect()
    }

    async fn due_reminders(
        &self,
        shard: u32,
        until_ms: u64,
        offset: usize,
        max: usize,
    ) -> Result<Vec<DueReminder>, StorageError> {
        let key = self.keys.reminder_index(shard);
        let mut conn = self.conn.clone();
        let found: Vec<(String, f64)> = self
            .bounded(async move {
                redis::cmd("ZRANGE")
                    .arg(&key)
                    .arg("-inf")
                    .arg(until_ms)
                    .arg("BYSCORE")
                    .arg("LIMIT")
                    .arg(offset)
                    .arg(max)
                    .arg("WITHSCORES")
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        found
            .into_iter()
            .map(|(member, score)| {
                let (grain, name) = parse_reminder_member(&member).ok_or_else(|| {
                    StorageError::Malformed(format!("reminder index entry {member:?}"))
                })?;
                #[allow(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    reason = "scores are whole milliseconds below 2^52, written by the commit script"
                )]
                let due_ms = score as u64;
                Ok(DueReminder {
                    grain,
                    name,
                    due_ms,
                })
            })
            .collect()
    }
}

impl ReminderTable for RedisStore {
    fn reminder_shards(&self) -> u32 {
        self.keys.shards()
    }

    fn reminder_shard_of(&self, grain: &GrainId) -> u32 {
        self.keys.shard_of(grain)
    }

    fn reminders_of<'a>(
        &'a self,
        grain: &'a GrainId,
    ) -> BoxFuture<'a, Result<Vec<Reminder>, StorageError>> {
        Box::pin(self.reminders_of_grain(grain))
    }

    fn due(
        &self,
        shard: u32,
        until_ms: u64,
        offset: usize,
        max: usize,
    ) -> BoxFuture<'_, Result<Vec<DueReminder>, StorageError>> {
        Box::pin(self.due_reminders(shard, until_ms, offset, max))
    }
}

impl Outbox for RedisStore {
    fn pending(&self, max: usize) -> BoxFuture<'_, Result<Vec<OutboxEntry>, StorageError>> {
        Box::pin(self.pending_entries(max))
    }

    fn shards(&self) -> u32 {
        self.keys.shards()
    }

    fn pending_in(
        &self,
        shard: u32,
        max: usize,
    ) -> BoxFuture<'_, Result<Vec<OutboxEntry>, StorageError>> {
        Box::pin(self.pending_of(shard..shard + 1, "-", max))
    }

    fn pending_in_after<'a>(
        &'a self,
        shard: u32,
        held: &'a [OutboxPosition],
        max: usize,
    ) -> BoxFuture<'a, Result<Vec<OutboxEntry>, StorageError>> {
        match held.last() {
            // Stream ids count up: what comes after the last held entry is what is not held.
            Some(last) => Box::pin(self.pending_after(shard, &last.entry, max)),
            None => Box::pin(self.pending_of(shard..shard + 1, "-", max)),
        }
    }

    fn pending_in_each<'a>(
        &'a self,
        reads: &'a [ShardRead<'a>],
    ) -> BoxFuture<'a, Result<Vec<Vec<OutboxEntry>>, StorageError>> {
        Box::pin(async move {
            let ranges = reads
                .iter()
                .map(|read| {
                    let from = match read.held.last() {
                        Some(last) => id_after(read.shard, &last.entry)?,
                        None => "-".to_owned(),
                    };
                    Ok((read.shard, from, read.max))
                })
                .collect::<Result<Vec<_>, StorageError>>()?;
            self.read_ranges(ranges, usize::MAX).await
        })
    }

    fn wait_for_entries<'a>(&'a self, shards: &'a [u32], timeout: Duration) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if self.block_until_appended(shards, timeout).await.is_err() {
                // No blocking read possible (Redis down): wait the timeout instead.
                tokio::time::sleep(timeout).await;
            }
        })
    }

    fn ack(&self, entries: &[OutboxPosition]) -> BoxFuture<'_, Result<(), StorageError>> {
        let entries = entries.to_vec();
        Box::pin(async move { self.ack_entries(&entries).await })
    }

    fn dead_letter<'a>(
        &'a self,
        entries: &'a [(OutboxPosition, String)],
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(self.dead_letter_entries(entries))
    }

    fn dead_letters(
        &self,
        shard: u32,
        max: usize,
    ) -> BoxFuture<'_, Result<Vec<DeadLetter>, StorageError>> {
        Box::pin(self.dead_letters_of(shard, max))
    }

    fn redrive<'a>(
        &'a self,
        dead: &'a [OutboxPosition],
    ) -> BoxFuture<'a, Result<usize, StorageError>> {
        Box::pin(self.redrive_entries(dead))
    }
}

impl GrainDirectory for RedisStore {
    fn lookup(&self, grain: &GrainId) -> BoxFuture<'_, Result<Option<GrainAddress>, StorageError>> {
        let grain = grain.clone();
        Box::pin(async move { self.lookup_owner(&grain).await })
    }

    fn unregister(&self, address: &GrainAddress) -> BoxFuture<'_, Result<(), StorageError>> {
        let address = address.clone();
        Box::pin(async move { self.unregister_owner(&address).await })
    }
}

/// The smallest stream id above `after` (`ms-seq`) of `shard`'s outbox, as the start of an
/// inclusive range.
fn id_after(shard: u32, after: &str) -> Result<String, StorageError> {
    after
        .split_once('-')
        .and_then(|(ms, seq)| Some((ms.parse::<u64>().ok()?, seq.parse::<u64>().ok()?)))
        .map(|(ms, seq)| match seq.checked_add(1) {
            Some(seq) => format!("{ms}-{seq}"),
            None => format!("{}-0", ms.saturating_add(1)),
        })
        .ok_or_else(|| {
            StorageError::Malformed(format!(
                "outbox entry id {after:?} of shard {shard} is not a stream id"
            ))
        })
}

fn as_string(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

fn as_u64(value: &Value) -> Option<u64> {
    as_string(value)?.parse().ok()
}

/// A grain's owner entry: `<activation>|<silo generation>|<silo name>`. The scripts compare
/// the part before the first `|`.
fn owner_entry(address: &GrainAddress) -> String {
    format!(
        "{}|{}|{}",
        address.activation,
        address.silo.generation(),
        address.silo.name()
    )
}

/// Parses what [`owner_entry`] wrote.
fn parse_owner(grain: &GrainId, entry: &str) -> Option<GrainAddress> {
    let mut parts = entry.splitn(3, '|');
    let activation = uuid::Uuid::parse_str(parts.next()?).ok()?;
    let generation = parts.next()?.parse().ok()?;
    let silo = parts.next()?;
    Some(GrainAddress {
        grain: grain.clone(),
        silo: SiloId::new(silo, generation),
        activation: ActivationId(activation),
    })
}

fn outbox_entry(
    origin: &Arc<str>,
    shard: u32,
    entry: &str,
    fields: &HashMap<String, Value>,
) -> Result<OutboxEntry, StorageError> {
    let field = |name: &str| fields.get(name);
    let parsed = (|| {
        let grain = parse_grain_field(&as_string(field("g")?)?)?;
        let version = as_u64(field("v")?)?;
        let index = u32::try_from(as_u64(field("i")?)?).ok()?;
        let type_name = as_string(field("t")?)?;
        let payload = match field("p")? {
            Value::BulkString(bytes) => bytes.clone(),
            _ => return None,
        };
        Some(OutboxEntry {
            id: EventId {
                origin: origin.clone(),
                grain,
                version,
                index,
            },
            event: PublishedEvent {
                type_name,
                payload,
                trace: field("tr")
                    .and_then(as_string)
                    .and_then(|t| u128::from_str_radix(&t, 16).ok())
                    .map(granary_core::TraceId),
            },
            position: OutboxPosition {
                shard,
                entry: entry.to_owned(),
            },
            // A stream entry id starts with the milliseconds of its XADD: the commit time,
            // unless the entry came back from the dead-letter stream (`ms` kept it).
            committed_ms: field("ms")
                .and_then(as_u64)
                .unwrap_or_else(|| entry_ms(entry)),
        })
    })();
    parsed.ok_or_else(|| {
        StorageError::Malformed(format!("outbox entry {entry} of shard {shard}: {fields:?}"))
    })
}

/// The milliseconds a stream entry id starts with (the time of its `XADD`).
fn entry_ms(entry: &str) -> u64 {
    entry
        .split_once('-')
        .and_then(|(ms, _)| ms.parse().ok())
        .unwrap_or(0)
}

enum VersionError {
    Redis(RedisError),
    TooOld(String),
    ClusterNode,
}

/// The slots of a Redis Cluster.
const CLUSTER_SLOTS: u32 = 16384;

/// Connects to the Redis or Redis Cluster `config` names: one Redis through a
/// [`ConnectionManager`] whose commands wait at most `response_timeout` for their reply
/// (`None`: as long as they take), with its client (for connections of its own); a cluster
/// through a cluster connection whose commands wait at most `cluster_response_timeout`.
pub(crate) async fn open(
    config: &RedisConfig,
    response_timeout: Option<Duration>,
    cluster_response_timeout: Duration,
) -> Result<(Conn, Option<redis::Client>), ConnectError> {
    let url = config.redacted_url();
    // Over TLS, a port without TLS only times out or resets: say what to check.
    let tls_hint = if url.starts_with("rediss://") {
        " (over TLS: is this Redis's TLS port, and its certificate signed by a trusted CA?)"
    } else {
        ""
    };
    let unreachable = |reason: String| ConnectError::Unreachable {
        url: url.clone(),
        reason: format!("{reason}{tls_hint}"),
    };
    let target = config.target().map_err(ConnectError::Config)?;
    let deadline = config.connect_timeout * 4 + config.command_timeout;
    match target {
        Target::Single(_) => {
            // The URL with its TLS certificates, if any (`rediss://`).
            let client = config.client().map_err(ConnectError::Config)?;
            let manager = ConnectionManagerConfig::new()
                .set_response_timeout(response_timeout)
                .set_connection_timeout(Some(config.connect_timeout))
                .set_number_of_retries(config.reconnect_attempts)
                .set_max_delay(Duration::from_millis(250));
            let connect = ConnectionManager::new_with_config(client.clone(), manager);
            let conn = tokio::time::timeout(deadline, connect)
                .await
                .map_err(|_| unreachable(format!("no connection within {deadline:?}")))?
                .map_err(|e| unreachable(e.to_string()))?;
            Ok((Conn::Single(conn), Some(client)))
        }
        Target::Cluster(seeds) => {
            let conn =
                connect_cluster(&seeds, config, &url, deadline, cluster_response_timeout).await?;
            Ok((Conn::Cluster(conn), None))
        }
    }
}

/// Connects to a Redis Cluster through its seed nodes and checks that it serves every slot.
async fn connect_cluster(
    seeds: &[String],
    config: &RedisConfig,
    url: &str,
    deadline: Duration,
    response_timeout: Duration,
) -> Result<redis::cluster_async::ClusterConnection, ConnectError> {
    let cluster_error = |reason: String| ConnectError::Cluster {
        url: url.to_owned(),
        reason,
    };
    let unreachable = |reason: String| ConnectError::Unreachable {
        url: url.to_owned(),
        reason,
    };
    let client = ClusterClientBuilder::new(seeds.iter().map(String::as_str))
        .connection_timeout(config.connect_timeout)
        .response_timeout(response_timeout)
        .build()
        .map_err(|e| ConnectError::Config(format!("invalid Redis Cluster URL {url}: {e}")))?;
    let conn = tokio::time::timeout(deadline, client.get_async_connection())
        .await
        .map_err(|_| unreachable(format!("no connection within {deadline:?}")))?
        .map_err(|e| {
            if e.to_string().contains("cluster support disabled") {
                cluster_error(format!(
                    "a seed node is not a Redis Cluster node ({e}). For a single Redis write \
                     redis://host:port; for a cluster, list nodes started with \
                     `cluster-enabled yes`"
                ))
            } else {
                unreachable(e.to_string())
            }
        })?;
    let info: String = tokio::time::timeout(
        config.command_timeout,
        Conn::Cluster(conn.clone()).any_node(redis::cmd("CLUSTER").arg("INFO").clone()),
    )
    .await
    .map_err(|_| {
        unreachable(format!(
            "CLUSTER INFO unanswered within {:?}",
            config.command_timeout
        ))
    })?
    .map_err(|e| unreachable(e.to_string()))?;
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.trim().strip_prefix(name)?.strip_prefix(':'))
            .unwrap_or("?")
            .to_owned()
    };
    let (state, served) = (field("cluster_state"), field("cluster_slots_ok"));
    if state != "ok" || served.parse::<u32>().ok() != Some(CLUSTER_SLOTS) {
        return Err(cluster_error(format!(
            "the cluster does not serve every slot (cluster_state:{state}, {served} of \
             {CLUSTER_SLOTS} slots served): a node is down or slots are unassigned. Check it \
             with `redis-cli --cluster check <node>` and repair it (bring the node back, or \
             `redis-cli --cluster fix <node>`)"
        )));
    }
    Ok(conn)
}

/// Scripts start with `#!lua` (Redis 7): older servers are refused at connect time. A
/// single-Redis URL naming a cluster node is refused too.
async fn check_version(conn: &mut Conn) -> Result<(), VersionError> {
    let mut info = redis::cmd("INFO");
    info.arg("server").arg("cluster");
    let info: String = conn.any_node(info).await.map_err(VersionError::Redis)?;
    if !conn.is_cluster() && info.lines().any(|l| l.trim() == "cluster_enabled:1") {
        return Err(VersionError::ClusterNode);
    }
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap_or("unknown")
        .trim()
        .to_owned();
    let major: u32 = version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major < 7 {
        return Err(VersionError::TooOld(version));
    }
    Ok(())
}

enum EpochError {
    Redis(RedisError),
    Connect(ConnectError),
}

impl From<RedisError> for EpochError {
    fn from(err: RedisError) -> Self {
        Self::Redis(err)
    }
}

/// Reads the cluster's epoch and shard count, creating them if allowed, and checks that every
/// shard carries the epoch.
async fn join_epoch(conn: &mut Conn, config: &RedisConfig) -> Result<(String, u32), EpochError> {
    let meta_key = Keys::new(&config.cluster, config.shards).meta();
    let mut meta: HashMap<String, String> = conn.hgetall(&meta_key).await?;
    if meta.is_empty() {
        if config.bootstrap == Bootstrap::RequireExisting {
            return Err(EpochError::Connect(ConnectError::NoCluster {
                cluster: config.cluster.clone(),
                url: config.redacted_url(),
            }));
        }
        let epoch = uuid::Uuid::now_v7().to_string();
        // HSETNX: when silos bootstrap at once, the first epoch written wins.
        redis::pipe()
            .hset_nx(&meta_key, "epoch", &epoch)
            .hset_nx(&meta_key, "shards", config.shards)
            .hset_nx(&meta_key, "layout", LAYOUT_VERSION)
            .query_async::<()>(conn)
            .await?;
        meta = conn.hgetall(&meta_key).await?;
    }
    let lost = |what: String| EpochError::Connect(ConnectError::DataLost(what));
    let (Some(epoch), Some(shards)) = (
        meta.get("epoch").cloned(),
        meta.get("shards").and_then(|s| s.parse::<u32>().ok()),
    ) else {
        return Err(lost(format!(
            "the cluster metadata {meta_key} is incomplete: {meta:?}"
        )));
    };
    if meta.get("layout").map(String::as_str) != Some(LAYOUT_VERSION) {
        return Err(EpochError::Connect(ConnectError::Incompatible(format!(
            "cluster {} uses key layout {:?}; this build uses {LAYOUT_VERSION}",
            config.cluster,
            meta.get("layout")
        ))));
    }
    if shards != config.shards {
        tracing::info!(
            configured = config.shards,
            cluster = shards,
            "using the cluster's shard count"
        );
    }
    let keys = Keys::new(&config.cluster, shards);
    if !meta.contains_key("ready") {
        // Finish the bootstrap (perhaps one a crashed silo began): SET NX keeps what exists.
        // `ready` only once every shard has its epoch.
        let set = (0..shards)
            .map(|shard| {
                redis::cmd("SET")
                    .arg(keys.epoch(shard))
                    .arg(&epoch)
                    .arg("NX")
                    .clone()
            })
            .collect();
        conn.query_each::<Value>(set).await?;
        conn.hset::<_, _, _, ()>(&meta_key, "ready", "1").await?;
    }
    let get = (0..shards)
        .map(|shard| redis::cmd("GET").arg(keys.epoch(shard)).clone())
        .collect();
    let found: Vec<Option<String>> = conn.query_each(get).await?;
    if let Some((shard, value)) = (0..)
        .zip(&found)
        .find(|(_, e)| e.as_deref() != Some(&epoch))
    {
        return Err(lost(format!(
            "shard {shard} holds {} but the cluster's epoch is {epoch}",
            value.as_deref().unwrap_or("no epoch")
        )));
    }
    Ok((epoch, shards))
}

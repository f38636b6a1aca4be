//! [`StreamConsumer`]: reads events from a Redis stream in a consumer group, with manual ack,
//! retries, a dead-letter stream, and [`Idempotency`] to process each event once.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use granary_events::EventEnvelope;
use redis::streams::StreamReadReply;
use redis::{RedisError, Value};
use tokio_util::sync::CancellationToken;

use crate::{ConnectError, RedisConnection};

/// How long an [`Idempotency`] command waits for its reply.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection that could not be made, as the client's error (what the consumer retries).
fn connect_error(err: &ConnectError) -> RedisError {
    RedisError::from((
        redis::ErrorKind::Io,
        "cannot connect to Redis",
        err.to_string(),
    ))
}

/// How a [`StreamConsumer`] reads and retries.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Entries read at a time. Default 64.
    pub batch: usize,
    /// How long one read waits for new entries. Default 1 s.
    pub block: Duration,
    /// Deliveries of one entry before it goes to the dead-letter stream. Default 5.
    pub max_attempts: u32,
    /// How long a failed (or stuck: its consumer died) entry waits before it is delivered
    /// again; the wait doubles with each delivery (at most a minute). Default 2 s.
    pub retry_after: Duration,
    /// The dead-letter stream; default `<stream>:dead`.
    pub dead_letter: Option<String>,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            batch: 64,
            block: Duration::from_secs(1),
            max_attempts: 5,
            retry_after: Duration::from_secs(2),
            dead_letter: None,
        }
    }
}

/// Why a consumer stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsumeError {
    /// Redis could not be reached or refused a command.
    #[error("redis stream consumer on {stream}: {source}")]
    Redis {
        /// The stream.
        stream: String,
        /// The client's error.
        #[source]
        source: RedisError,
    },
}

/// Records the events a consumer processed, in Redis, so that a redelivered event (same id) is
/// dropped: `SET <prefix><event id>` with a time to live, written after the handler succeeded.
/// Two consumers handed the same event at the same moment may both process it (at least once);
/// an event processed and acknowledged is never processed again within the time to live.
#[derive(Clone)]
pub struct Idempotency {
    conn: RedisConnection,
    prefix: String,
    ttl: Duration,
}

impl std::fmt::Debug for Idempotency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idempotency")
            .field("prefix", &self.prefix)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Idempotency {
    /// Connects to `url` (one Redis, or a Redis Cluster: see [`RedisConnection`]); processed
    /// ids are kept under `<prefix><id>` for `ttl`.
    ///
    /// # Errors
    /// The client's error if the URL is wrong or Redis cannot be reached.
    pub async fn connect(url: &str, prefix: &str, ttl: Duration) -> Result<Self, RedisError> {
        let conn = RedisConnection::open(url, Some(COMMAND_TIMEOUT))
            .await
            .map_err(|e| connect_error(&e))?;
        Ok(Self {
            conn,
            prefix: prefix.to_owned(),
            ttl,
        })
    }

    /// Whether the event `id` was processed already.
    ///
    /// # Errors
    /// The client's error if Redis cannot be reached.
    pub async fn seen(&self, id: &str) -> Result<bool, RedisError> {
        let mut conn = self.conn.clone();
        redis::cmd("EXISTS")
            .arg(format!("{}{id}", self.prefix))
            .query_async(&mut conn)
            .await
    }

    /// Records that the event `id` was processed.
    ///
    /// # Errors
    /// The client's error if Redis cannot be reached.
    pub async fn mark(&self, id: &str) -> Result<(), RedisError> {
        let mut conn = self.conn.clone();
        redis::cmd("SET")
            .arg(format!("{}{id}", self.prefix))
            .arg(1)
            .arg("PX")
            .arg(u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX))
            .query_async(&mut conn)
            .await
    }
}

/// One consumer of a consumer group on a Redis stream of events.
///
/// Each entry is handed to the handler; it is acknowledged (`XACK`) only after the handler
/// succeeded. A failed entry stays pending and is delivered again after `retry_after` (also when
/// its consumer died: the group's other consumers claim it); after `max_attempts` deliveries it
/// goes to the dead-letter stream, with the reason, and is acknowledged, so that it does not
/// block the others. Several consumers of one group share the stream's entries.
#[derive(Debug)]
pub struct StreamConsumer {
    url: String,
    stream: String,
    group: String,
    name: String,
    dead_letter: String,
    config: ConsumerConfig,
    idempotency: Option<Idempotency>,
}

type Entry = (String, HashMap<String, Value>);

impl StreamConsumer {
    /// A consumer `name` of `group` on `stream` (the group is created if missing, reading from
    /// the stream's start), on the Redis or Redis Cluster `url` names (see
    /// [`RedisConnection`]).
    ///
    /// # Errors
    /// [`ConsumeError::Redis`] if the URL is wrong or Redis cannot be reached.
    pub async fn new(
        url: &str,
        stream: &str,
        group: &str,
        name: &str,
        config: ConsumerConfig,
    ) -> Result<Self, ConsumeError> {
        let err = |source| ConsumeError::Redis {
            stream: stream.to_owned(),
            source,
        };
        let consumer = Self {
            url: url.to_owned(),
            stream: stream.to_owned(),
            group: group.to_owned(),
            name: name.to_owned(),
            dead_letter: config
                .dead_letter
                .clone()
                .unwrap_or_else(|| format!("{stream}:dead")),
            config,
            idempotency: None,
        };
        let mut conn = consumer.connect().await.map_err(err)?;
        let created: Result<(), RedisError> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(stream)
            .arg(group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match created {
            Err(e) if e.code() != Some("BUSYGROUP") => Err(err(e)),
            _ => Ok(consumer),
        }
    }

    /// Drops events already processed, as `idempotency` records them.
    #[must_use]
    pub fn idempotent(mut self, idempotency: Idempotency) -> Self {
        self.idempotency = Some(idempotency);
        self
    }

    /// The dead-letter stream.
    #[must_use]
    pub fn dead_letter(&self) -> &str {
        &self.dead_letter
    }

    async fn connect(&self) -> Result<RedisConnection, RedisError> {
        // No response timeout: a blocking read waits on purpose.
        RedisConnection::open(&self.url, None)
            .await
            .map_err(|e| connect_error(&e))
    }

    /// Hands entries to `handler` until `stop`. Reconnects with backoff when Redis goes away.
    ///
    /// # Errors
    /// Never returns an error of its own accord: Redis errors are logged and retried.
    pub async fn run<F, Fut>(&self, handler: F, stop: CancellationToken) -> Result<(), ConsumeError>
    where
        F: Fn(EventEnvelope) -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        let mut backoff = Duration::from_millis(50);
        while !stop.is_cancelled() {
            let result = async {
                let mut conn = tokio::select! {
                    conn = self.connect() => conn?,
                    () = stop.cancelled() => return Ok(()),
                };
                while !stop.is_cancelled() {
                    self.retry_pending(&mut conn, &handler).await?;
                    let read = self.read_new(&mut conn);
                    let entries = tokio::select! {
                        entries = read => entries?,
                        () = stop.cancelled() => return Ok(()),
                    };
                    for (id, fields) in entries {
                        self.process(&mut conn, &id, &fields, &handler).await?;
                    }
                }
                Ok::<(), RedisError>(())
            }
            .await;
            match result {
                Ok(()) => return Ok(()),
                Err(err) => {
                    tracing::warn!(stream = %self.stream, cause = %err, retry_in = ?backoff, "consumer lost Redis; reconnecting");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = stop.cancelled() => return Ok(()),
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        Ok(())
    }

    async fn read_new(&self, conn: &mut RedisConnection) -> Result<Vec<Entry>, RedisError> {
        let reply: Option<StreamReadReply> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(&self.group)
            .arg(&self.name)
            .arg("COUNT")
            .arg(self.config.batch)
            .arg("BLOCK")
            .arg(u64::try_from(self.config.block.as_millis()).unwrap_or(u64::MAX))
            .arg("STREAMS")
            .arg(&self.stream)
            .arg(">")
            .query_async(conn)
            .await?;
        Ok(reply
            .into_iter()
            .flat_map(|r| r.keys)
            .flat_map(|k| k.ids)
            .map(|e| (e.id, e.map))
            .collect())
    }

    /// Entries pending longer than `retry_after` (failed, or their consumer died): claimed and
    /// handled again, or dead-lettered after `max_attempts` deliveries.
    async fn retry_pending<F, Fut>(
        &self,
        conn: &mut RedisConnection,
        handler: &F,
    ) -> Result<(), RedisError>
    where
        F: Fn(EventEnvelope) -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        let idle = u64::try_from(self.config.retry_after.as_millis()).unwrap_or(u64::MAX);
        let pending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
            .arg(&self.stream)
            .arg(&self.group)
            .arg("IDLE")
            .arg(idle)
            .arg("-")
            .arg("+")
            .arg(self.config.batch)
            .query_async(conn)
            .await?;
        for (id, _, idle_ms, deliveries) in pending {
            // Backoff: the n-th retry waits `retry_after * 2^(n-1)` (at most a minute).
            let wait = self
                .config
                .retry_after
                .saturating_mul(1 << deliveries.saturating_sub(1).min(16))
                .min(Duration::from_secs(60));
            if deliveries < u64::from(self.config.max_attempts)
                && u128::from(idle_ms) < wait.as_millis()
            {
                continue;
            }
            if deliveries >= u64::from(self.config.max_attempts) {
                let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
                    .arg(&self.stream)
                    .arg(&id)
                    .arg(&id)
                    .query_async(conn)
                    .await?;
                let fields = entries
                    .ids
                    .into_iter()
                    .next()
                    .map(|e| e.map)
                    .unwrap_or_default();
                let reason = format!("failed {deliveries} deliveries");
                self.bury(conn, &id, &fields, &reason).await?;
                continue;
            }
            let claimed: redis::streams::StreamClaimReply = redis::cmd("XCLAIM")
                .arg(&self.stream)
                .arg(&self.group)
                .arg(&self.name)
                .arg(idle)
                .arg(&id)
                .query_async(conn)
                .await?;
            for entry in claimed.ids {
                self.process(conn, &entry.id, &entry.map, handler).await?;
            }
        }
        Ok(())
    }

    async fn process<F, Fut>(
        &self,
        conn: &mut RedisConnection,
        id: &str,
        fields: &HashMap<String, Value>,
        handler: &F,
    ) -> Result<(), RedisError>
    where
        F: Fn(EventEnvelope) -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        let envelope = match fields.get("event") {
            Some(Value::BulkString(bytes)) => EventEnvelope::from_bytes(bytes),
            _ => {
                return self
                    .bury(conn, id, fields, "entry without an `event` field")
                    .await;
            }
        };
        let envelope = match envelope {
            Ok(envelope) => envelope,
            Err(err) => return self.bury(conn, id, fields, &err.to_string()).await,
        };
        if let Some(idempotency) = &self.idempotency
            && idempotency.seen(&envelope.id).await?
        {
            return self.ack(conn, id).await;
        }
        let event_id = envelope.id.clone();
        match handler(envelope).await {
            Ok(()) => {
                if let Some(idempotency) = &self.idempotency {
                    idempotency.mark(&event_id).await?;
                }
                self.ack(conn, id).await
            }
            Err(reason) => {
                tracing::warn!(stream = %self.stream, event = %event_id, %reason, "handler failed; the event will be delivered again");
                Ok(())
            }
        }
    }

    async fn ack(&self, conn: &mut RedisConnection, id: &str) -> Result<(), RedisError> {
        redis::cmd("XACK")
            .arg(&self.stream)
            .arg(&self.group)
            .arg(id)
            .query_async::<()>(conn)
            .await
    }

    /// Moves an entry to the dead-letter stream, with why, and acknowledges it.
    async fn bury(
        &self,
        conn: &mut RedisConnection,
        id: &str,
        fields: &HashMap<String, Value>,
        reason: &str,
    ) -> Result<(), RedisError> {
        tracing::error!(stream = %self.stream, entry = id, reason, "event moved to the dead-letter stream");
        let mut add = redis::cmd("XADD");
        add.arg(&self.dead_letter)
            .arg("*")
            .arg("stream")
            .arg(&self.stream)
            .arg("entry")
            .arg(id)
            .arg("reason")
            .arg(reason);
        for (name, value) in fields {
            if let Value::BulkString(bytes) = value {
                add.arg(name).arg(bytes.as_slice());
            }
        }
        add.query_async::<()>(conn).await?;
        self.ack(conn, id).await
    }
}

//! Redis Streams as an event sink ([`RedisStreamsSink`]) and Redis Pub/Sub for lossy real-time
//! fan-out ([`RedisPubSubSink`]).

use std::sync::Arc;

use futures::future::BoxFuture;

use granary_core::StorageError;
use granary_events::{Addressed, EventEnvelope, Format, Outgoing, Sink, SinkError, Topics};
use redis::Value;

use crate::store::RedisStore;

/// Publishes events to Redis Streams: one stream per topic, named `<prefix><topic>`, one entry
/// per event with the fields `id` (the event id), `type` and `event` (the envelope, JSON unless
/// [`with_format`](Self::with_format) chose MessagePack for the topic).
///
/// The sink never trims: a stream keeps every event until [`trim_consumed`](Self::trim_consumed)
/// removes the entries that every consumer group has acknowledged. (`MAXLEN` trimming, by
/// contrast, drops the oldest entries whether or not they were consumed; use it only on
/// streams whose events may be lost.)
#[derive(Debug, Clone)]
pub struct RedisStreamsSink {
    store: Arc<RedisStore>,
    topics: Topics,
}

impl RedisStreamsSink {
    /// A sink writing through `store`'s connection to streams named `<prefix><topic>` (e.g.
    /// prefix `events:` and topic `match.ended` give the stream `events:match.ended`).
    #[must_use]
    pub fn new(store: Arc<RedisStore>, prefix: &str) -> Self {
        Self {
            store,
            topics: Topics::new(prefix),
        }
    }

    /// Writes the envelopes of `topic` in `format` (JSON unless set).
    #[must_use]
    pub fn with_format(mut self, topic: &str, format: Format) -> Self {
        self.topics = self.topics.with_format(topic, format);
        self
    }

    /// The stream of `topic`.
    #[must_use]
    pub fn stream(&self, topic: &str) -> String {
        self.topics.name(topic)
    }

    /// Trims `topic`'s stream of the entries every consumer group has acknowledged; returns
    /// how many were removed. A stream without groups is left alone: its events were never
    /// consumed.
    ///
    /// # Errors
    /// [`SinkError::Unavailable`] if Redis cannot be reached.
    pub async fn trim_consumed(&self, topic: &str) -> Result<u64, SinkError> {
        let stream = self.stream(topic);
        let unavailable = |e: granary_core::StorageError| SinkError::Unavailable {
            sink: "redis-streams".into(),
            reason: e.to_string(),
        };
        let mut conn = self.store.conn.clone();
        let key = stream.clone();
        let groups: Vec<Vec<Value>> = self
            .store
            .bounded(async move {
                redis::cmd("XINFO")
                    .arg("GROUPS")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
            })
            .await
            .map_err(unavailable)?;
        let mut floor: Option<(u64, u64)> = None;
        for group in &groups {
            let field = |name: &str| {
                group
                    .chunks(2)
                    .find(|kv| matches!(&kv[0], Value::BulkString(k) if k == name.as_bytes()))
                    .and_then(|kv| match &kv[1] {
                        Value::BulkString(v) => String::from_utf8(v.clone()).ok(),
                        Value::Int(i) => Some(i.to_string()),
                        _ => None,
                    })
            };
            let (Some(name), Some(last)) = (field("name"), field("last-delivered-id")) else {
                continue;
            };
            let pending: u64 = field("pending").and_then(|p| p.parse().ok()).unwrap_or(0);
            let mut bound = parse_id(&last);
            if pending > 0 {
                let mut conn = self.store.conn.clone();
                let key = stream.clone();
                let summary: Vec<Value> = self
                    .store
                    .bounded(async move {
                        redis::cmd("XPENDING")
                            .arg(&key)
                            .arg(&name)
                            .query_async(&mut conn)
                            .await
                    })
                    .await
                    .map_err(unavailable)?;
                if let Some(Value::BulkString(min)) = summary.get(1) {
                    bound = parse_id(&String::from_utf8_lossy(min));
                }
            }
            floor = Some(floor.map_or(bound, |f| f.min(bound)));
        }
        let Some((ms, seq)) = floor else {
            return Ok(0);
        };
        let mut conn = self.store.conn.clone();
        self.store
            .bounded(async move {
                redis::cmd("XTRIM")
                    .arg(&stream)
                    .arg("MINID")
                    .arg(format!("{ms}-{seq}"))
                    .query_async(&mut conn)
                    .await
            })
            .await
            .map_err(unavailable)
    }
}

/// Reading back what the sink wrote, for tools that show a cluster's recent events (the
/// dashboard of `granary-node`).
impl RedisStreamsSink {
    /// The topics that have a stream under this sink's prefix, sorted, at most `limit`.
    ///
    /// They are found with `SCAN MATCH <prefix>* TYPE stream` (on a Redis Cluster, on every
    /// primary), which visits every key of the database in batches (each batch under the store's command deadline): its cost grows with
    /// the number of keys, so cache the answer rather than calling this for every read.
    ///
    /// # Errors
    /// [`StorageError::Unavailable`] if Redis cannot be reached.
    pub async fn topics(&self, limit: usize) -> Result<Vec<String>, StorageError> {
        let prefix = self.topics.prefix();
        let pattern = format!("{}*", glob_escape(prefix));
        let mut topics = Vec::new();
        // On a Redis Cluster every primary holds some of the streams.
        for node in self.store.bounded(self.store.conn.primaries()).await? {
            let mut cursor = 0u64;
            loop {
                let mut scan = redis::cmd("SCAN");
                scan.arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .arg("TYPE")
                    .arg("stream");
                let (next, keys): (u64, Vec<String>) = self
                    .store
                    .bounded(self.store.conn.on_node(node.as_ref(), scan))
                    .await?;
                topics.extend(
                    keys.into_iter()
                        .filter_map(|k| k.strip_prefix(prefix).map(str::to_owned)),
                );
                cursor = next;
                if cursor == 0 || topics.len() >= limit {
                    break;
                }
            }
            if topics.len() >= limit {
                break;
            }
        }
        topics.sort();
        topics.dedup();
        topics.truncate(limit);
        Ok(topics)
    }

    /// The newest `count` events of the streams of `topics`, newest first by commit time
    /// (`timestamp_ms`, then stream entry id): the last `count` entries of each stream
    /// (`XREVRANGE`, one pipelined round trip), merged. A relay appends in commit order per
    /// grain, not across grains, so an event committed just before the last ones delivered may
    /// be missing. Entries that hold no readable envelope are skipped.
    ///
    /// # Errors
    /// [`StorageError::Unavailable`] if Redis cannot be reached.
    pub async fn recent(
        &self,
        topics: &[String],
        count: usize,
    ) -> Result<Vec<EventEnvelope>, StorageError> {
        if topics.is_empty() || count == 0 {
            return Ok(Vec::new());
        }
        let reads = topics
            .iter()
            .map(|topic| {
                redis::cmd("XREVRANGE")
                    .arg(self.stream(topic))
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(count)
                    .clone()
            })
            .collect();
        let replies: Vec<redis::streams::StreamRangeReply> = self
            .store
            .bounded(self.store.conn.query_each(reads))
            .await?;
        // Sorted by (commit time, stream entry id).
        let mut entries: Vec<(u64, (u64, u64), EventEnvelope)> = replies
            .into_iter()
            .flat_map(|reply| reply.ids)
            .filter_map(|entry| match entry.map.get("event") {
                Some(Value::BulkString(bytes)) => EventEnvelope::from_bytes(bytes)
                    .ok()
                    .map(|envelope| (envelope.timestamp_ms, parse_id(&entry.id), envelope)),
                _ => None,
            })
            .collect();
        entries.sort_by_key(|(time, id, _)| std::cmp::Reverse((*time, *id)));
        entries.truncate(count);
        Ok(entries
            .into_iter()
            .map(|(_, _, envelope)| envelope)
            .collect())
    }
}

/// `text` with the glob characters of `SCAN MATCH` escaped.
fn glob_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

fn parse_id(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

impl Sink for RedisStreamsSink {
    fn name(&self) -> &str {
        "redis-streams"
    }

    fn publish<'a>(&'a self, events: &'a [Outgoing]) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            // One pipeline of XADDs, to several streams, in the batch's order (on a Redis
            // Cluster, whose pipelines stay within one slot, one request per XADD, all at once). Each command is
            // sized once, and each envelope encoded into one buffer kept for the whole batch
            // and copied into its command: no buffer per envelope, no command growing argument
            // by argument. (Encoding through the command's own writer cost more: it takes
            // serde_json's many small writes one call at a time.)
            let mut xadds = Vec::with_capacity(events.len());
            let mut envelope = Vec::with_capacity(1024);
            for Addressed {
                name: stream,
                event,
                format,
            } in self.topics.address(events)
            {
                envelope.clear();
                event
                    .encode_to(format, &mut envelope)
                    .expect("an envelope always encodes, and writing to memory does not fail");
                let mut xadd = redis::Cmd::with_capacity(8, xadd_size(&stream, event, &envelope));
                xadd.arg("XADD")
                    .arg(&*stream)
                    .arg("*")
                    .arg("id")
                    .arg(&event.id)
                    .arg("type")
                    .arg(&event.type_name)
                    .arg("event")
                    .arg(envelope.as_slice());
                xadds.push(xadd);
            }
            let ids: Vec<Value> = self
                .store
                .bounded(self.store.conn.query_each(xadds))
                .await
                .map_err(|e| SinkError::Unavailable {
                    sink: "redis-streams".into(),
                    reason: e.to_string(),
                })?;
            if ids.len() != events.len() {
                return Err(SinkError::Refused {
                    sink: "redis-streams".into(),
                    reason: format!("{} of {} events appended", ids.len(), events.len()),
                });
            }
            Ok(())
        })
    }
}

/// The bytes of the arguments of the XADD of `event`, encoded as `envelope`, to `stream`.
fn xadd_size(stream: &str, event: &EventEnvelope, envelope: &[u8]) -> usize {
    ["XADD", "*", "id", "type", "event"]
        .iter()
        .map(|a| a.len())
        .sum::<usize>()
        + stream.len()
        + event.id.len()
        + event.type_name.len()
        + envelope.len()
}

/// Publishes events to Redis Pub/Sub channels named `<prefix><topic>`, the JSON envelope as the
/// message. **Lossy**: a subscriber that is not connected at that moment never sees the event,
/// and Redis confirms only that it took the message. Use it for real-time fan-out (a game's
/// state to its spectators), never for events that must arrive.
#[derive(Debug, Clone)]
pub struct RedisPubSubSink {
    store: Arc<RedisStore>,
    topics: Topics,
}

impl RedisPubSubSink {
    /// A sink publishing through `store`'s connection to channels `<prefix><topic>`.
    #[must_use]
    pub fn new(store: Arc<RedisStore>, prefix: &str) -> Self {
        Self {
            store,
            topics: Topics::new(prefix),
        }
    }
}

impl Sink for RedisPubSubSink {
    fn name(&self) -> &str {
        "redis-pubsub"
    }

    fn publish<'a>(&'a self, events: &'a [Outgoing]) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            let mut pipe = redis::pipe();
            for out in events {
                pipe.cmd("PUBLISH")
                    .arg(&*self.topics.shared_name(&out.topic))
                    .arg(out.event.to_json())
                    .ignore();
            }
            let mut conn = self.store.conn.clone();
            self.store
                .bounded(async move { pipe.query_async::<()>(&mut conn).await })
                .await
                .map_err(|e| SinkError::Unavailable {
                    sink: "redis-pubsub".into(),
                    reason: e.to_string(),
                })
        })
    }
}

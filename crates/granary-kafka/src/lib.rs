//! Granary events to Kafka (or any broker speaking the Kafka protocol, such as tansu or
//! Redpanda), through `rdkafka` and its bundled librdkafka.
//!
//! - [`KafkaSink`] produces each event to the topic `<prefix><topic>` (created, or found to
//!   exist, through the admin API at first use and again after a failure, so that a broker that
//!   lost its topics gets them back). The producer runs with `acks=all` and
//!   `enable.idempotence=true` (a broker that refuses idempotent producers is detected and the
//!   sink falls back, with a warning, to a non-idempotent producer with one request in flight,
//!   which keeps the order), and batches with a small `linger.ms`. A publish returns only once
//!   every record of the batch has its delivery report; one failed record fails the batch (the
//!   relay publishes it again: consumers drop the repeats by event id).
//! - [`KafkaConsumer`] reads topics in a consumer group with `enable.auto.commit=false`: a
//!   record's offset is committed only after its handler succeeded. A failing record is retried
//!   in place with doubling delays (so the order of the partition holds), and after
//!   `max_attempts` it is produced to the dead-letter topic `<topic>.dead` and its offset
//!   committed, so that a poison record never blocks its partition for good.
//!
//! # Record format (for consumers in any language)
//!
//! | part | content |
//! |------|---------|
//! | topic | `<prefix><topic>`, the topic being the event type (`match.ended`) unless the relay routes it elsewhere |
//! | key | the source grain, `<type name length>:<grain type>:<key kind s\|i\|u>:<key>` (e.g. `6:player:s:alice`): all of one grain's events go to one partition, in commit order |
//! | value | the [`EventEnvelope`]: JSON unless [`KafkaSink::with_format`] chose MessagePack for the topic |
//! | header `granary-event-id` | the event id (the envelope's `id`): the same on every delivery, the key to drop repeats |
//! | header `granary-event-type` | the event type (the envelope's `type`) |
//! | header `content-type` | `application/json` or `application/msgpack` |
//! | timestamp | the commit time (the envelope's `timestamp_ms`) |
//!
//! Dead-letter records (`<topic>.dead`) are the original record (key, value, headers) plus the
//! headers `granary-dead-reason` (the handler's last error), `granary-attempts`,
//! `granary-source-topic`, `granary-source-partition` and `granary-source-offset`.
//!
//! # Delivery and repeats
//!
//! Delivery is at least once: the relay republishes a batch that was not fully confirmed, and a
//! consumer that stops (or loses its partitions) before committing sees a record again. Kafka
//! has no server-side dedupe of such repeats, so the consumer drops them by event id: a grain
//! that receives events (a grain subscription: the handler calls the grain with the envelope,
//! e.g. through [`granary_events::typed`]) keeps [`granary_events::RecentEvents`] in its state
//! and applies an event only when `first_time_of(&event)` says so, in the same commit as the
//! event's effect; a service keeps the ids it applied with its own data.
//!
//! # Known limits
//!
//! - Plaintext connections only: librdkafka is built without its `ssl` and `sasl` features
//!   (they need OpenSSL and Cyrus SASL to build), so a broker that requires TLS or SASL
//!   authentication (most managed Kafka services) cannot be reached yet; run the silos next to
//!   a plaintext listener, or turn those `rdkafka` features on.
//! - A broker that loses its data (tansu with `memory://` storage, restarted) comes back without
//!   the topics: the sink creates them again at its next attempt, with a fresh producer. A
//!   consumer reading during such a loss is not covered: see below.
//! - librdkafka 2.12 (bundled by `rdkafka-sys` 4.10) crashes the process (a null topic name in
//!   its leader-discovery path) when a broker answers a fetch of an unknown topic with a
//!   `CurrentLeader` tag, which tansu 0.6 does: do not delete (or lose) a topic while a consumer
//!   reads it. Apache Kafka does not send that tag there.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use granary_kafka::{KafkaConsumer, KafkaConsumerConfig, KafkaSink, KafkaSinkConfig};
//!
//! let sink = Arc::new(KafkaSink::connect("127.0.0.1:9092", "game.", KafkaSinkConfig::default()).await?);
//! // `Relay::builder(store).route("match.ended", sink, "match.ended").start()` in each silo.
//!
//! let consumer = KafkaConsumer::connect("127.0.0.1:9092", "leaderboard",
//!     &["game.match.ended"], KafkaConsumerConfig::default()).await?;
//! let stop = tokio_util::sync::CancellationToken::new();
//! consumer.run(|event| async move {
//!     println!("{} from {}", event.type_name, event.source.key);
//!     Ok(())
//! }, stop).await?;
//! # drop(sink);
//! # Ok(())
//! # }
//! ```

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use granary_events::{EventEnvelope, Format, Outgoing, Sink, SinkError, Source, Topics};
use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError as ClientError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use tokio_util::sync::CancellationToken;

/// The header carrying the event id.
pub const EVENT_ID_HEADER: &str = "granary-event-id";
/// The header carrying the event type.
pub const EVENT_TYPE_HEADER: &str = "granary-event-type";

/// The sink's name in logs and metrics.
const NAME: &str = "kafka";

/// Why talking to Kafka failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KafkaError {
    /// The brokers cannot be reached.
    #[error("cannot reach Kafka at {brokers}: {reason}. Is the broker running?")]
    Connect {
        /// The bootstrap servers.
        brokers: String,
        /// What failed.
        reason: String,
    },
    /// A topic could not be created or deleted.
    #[error("Kafka topic {topic}: {reason}")]
    Topic {
        /// The topic.
        topic: String,
        /// What the broker said.
        reason: String,
    },
    /// The client failed (configuration, consumer group, commit).
    #[error("Kafka: {0}")]
    Client(#[from] ClientError),
}

/// How the topics a sink or consumer creates are laid out. Topics that exist already are used
/// as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicLayout {
    /// Partitions of a new topic. Default 3. A grain's events stay in one partition whatever
    /// the count (the record key is the grain); more partitions let more consumers of a group
    /// share the work.
    pub partitions: i32,
    /// Replicas of a new topic. Default 1 (a single broker); 3 on a production cluster.
    pub replication: i32,
}

impl Default for TopicLayout {
    fn default() -> Self {
        Self {
            partitions: 3,
            replication: 1,
        }
    }
}

/// How a [`KafkaSink`] produces.
#[derive(Debug, Clone)]
pub struct KafkaSinkConfig {
    /// Layout of the topics the sink creates.
    pub topics: TopicLayout,
    /// How long the producer waits to fill a batch (`linger.ms`). Default 5 ms.
    pub linger: Duration,
    /// How long a record may wait for its delivery (`message.timeout.ms`, retries included)
    /// before it fails, and with it the relay's batch. Default 30 s.
    pub delivery_timeout: Duration,
    /// Ask for an idempotent producer (`enable.idempotence`): no duplicates or reordering from
    /// the producer's own retries. Default true; a broker that refuses it is detected and the
    /// sink falls back (with a warning) to a plain producer with one request in flight.
    pub idempotence: bool,
}

impl Default for KafkaSinkConfig {
    fn default() -> Self {
        Self {
            topics: TopicLayout::default(),
            linger: Duration::from_millis(5),
            delivery_timeout: Duration::from_secs(30),
            idempotence: true,
        }
    }
}

fn millis(d: Duration) -> String {
    d.as_millis().max(1).to_string()
}

fn admin(brokers: &str) -> Result<AdminClient<DefaultClientContext>, KafkaError> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?)
}

fn producer(
    brokers: &str,
    config: &KafkaSinkConfig,
    idempotent: bool,
) -> Result<FutureProducer, KafkaError> {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", brokers)
        .set("acks", "all")
        .set("linger.ms", millis(config.linger))
        .set("message.timeout.ms", millis(config.delivery_timeout))
        // The default partitioner of the Java client: a key lands where Java producers put it.
        .set("partitioner", "murmur2_random");
    if idempotent {
        client.set("enable.idempotence", "true");
    } else {
        // Without idempotence a retried request may overtake the next one: one at a time keeps
        // each partition in commit order.
        client
            .set("enable.idempotence", "false")
            .set("max.in.flight.requests.per.connection", "1");
    }
    Ok(client.create()?)
}

/// Whether the brokers answer a metadata request within `timeout`.
fn reachable(
    producer: &FutureProducer,
    brokers: &str,
    timeout: Duration,
) -> Result<(), KafkaError> {
    producer
        .client()
        .fetch_metadata(None, timeout)
        .map(|_| ())
        .map_err(|e| KafkaError::Connect {
            brokers: brokers.to_owned(),
            reason: e.to_string(),
        })
}

/// Creates `topics` that do not exist yet; returns the ones this call created.
async fn create_topics(
    admin: &AdminClient<DefaultClientContext>,
    topics: &[String],
    layout: TopicLayout,
    timeout: Duration,
) -> Result<Vec<String>, KafkaError> {
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| {
            NewTopic::new(
                t,
                layout.partitions,
                TopicReplication::Fixed(layout.replication),
            )
        })
        .collect();
    let options = AdminOptions::new().request_timeout(Some(timeout));
    let results = admin
        .create_topics(new.iter(), &options)
        .await
        .map_err(|e| KafkaError::Topic {
            topic: topics.join(", "),
            reason: e.to_string(),
        })?;
    let mut created = Vec::new();
    for result in results {
        match result {
            Ok(topic) => created.push(topic),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(KafkaError::Topic {
                    topic,
                    reason: code.to_string(),
                });
            }
        }
    }
    Ok(created)
}

async fn delete_topics(
    admin: &AdminClient<DefaultClientContext>,
    topics: &[String],
) -> Result<(), KafkaError> {
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .delete_topics(&names, &options)
        .await
        .map_err(|e| KafkaError::Topic {
            topic: topics.join(", "),
            reason: e.to_string(),
        })?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
            Err((topic, code)) => {
                return Err(KafkaError::Topic {
                    topic,
                    reason: code.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// The record key of events from `source`: `<type name length>:<grain type>:<key kind
/// s|i|u>:<key>`, unambiguous whatever the key contains.
#[must_use]
pub fn record_key(source: &Source) -> String {
    format!(
        "{}:{}:{}:{}",
        source.type_name.len(),
        source.type_name,
        source.key_kind.get(..1).unwrap_or(""),
        source.key
    )
}

/// Whether a fatal producer error means the broker does not support idempotent producers.
fn idempotence_unsupported(code: RDKafkaErrorCode, reason: &str) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::UnsupportedVersion
            | RDKafkaErrorCode::UnsupportedFeature
            | RDKafkaErrorCode::UnsupportedForMessageFormat
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::InvalidRequest
    ) || reason.to_ascii_lowercase().contains("idempot")
        || reason.contains("InitProducerId")
}

/// The producer in use and whether it is idempotent.
struct Current {
    producer: FutureProducer,
    idempotent: bool,
}

/// Produces events to Kafka with `acks=all`, idempotence and per-grain keys.
pub struct KafkaSink {
    brokers: String,
    topics: Topics,
    config: KafkaSinkConfig,
    current: Mutex<Current>,
    admin: AdminClient<DefaultClientContext>,
    /// Topics created or found to exist since the last failure.
    verified: Mutex<HashSet<String>>,
    /// Topics this sink created, for [`KafkaSink::delete_topics`].
    created: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("brokers", &self.brokers)
            .field("prefix", &self.topics.prefix())
            .field("config", &self.config)
            .field("idempotent", &self.is_idempotent())
            .finish_non_exhaustive()
    }
}

impl KafkaSink {
    /// Connects to `brokers` (`host:port[,host:port…]`) and checks that they answer. Topics are
    /// `<prefix><topic>`, created (with `config.topics`) or found at their first publish.
    ///
    /// # Errors
    /// [`KafkaError`] if the brokers do not answer within 10 s or the configuration is refused.
    pub async fn connect(
        brokers: &str,
        prefix: &str,
        config: KafkaSinkConfig,
    ) -> Result<Self, KafkaError> {
        let producer = producer(brokers, &config, config.idempotence)?;
        let probe = producer.clone();
        let servers = brokers.to_owned();
        tokio::task::spawn_blocking(move || reachable(&probe, &servers, Duration::from_secs(10)))
            .await
            .map_err(|e| KafkaError::Connect {
                brokers: brokers.to_owned(),
                reason: e.to_string(),
            })??;
        Ok(Self {
            brokers: brokers.to_owned(),
            topics: Topics::new(prefix),
            current: Mutex::new(Current {
                producer,
                idempotent: config.idempotence,
            }),
            config,
            admin: admin(brokers)?,
            verified: Mutex::new(HashSet::new()),
            created: Mutex::new(HashSet::new()),
        })
    }

    /// Writes the envelopes of `topic` in `format` (JSON unless set); the `content-type`
    /// header says which.
    #[must_use]
    pub fn with_format(mut self, topic: &str, format: Format) -> Self {
        self.topics = self.topics.with_format(topic, format);
        self
    }

    /// The Kafka topic of event topic `topic`: `<prefix><topic>`.
    #[must_use]
    pub fn topic(&self, topic: &str) -> String {
        self.topics.name(topic)
    }

    /// Creates (or verifies) the Kafka topic of event topic `topic` now, instead of at its first
    /// publish.
    ///
    /// # Errors
    /// [`SinkError::Unavailable`] if the brokers do not answer or refuse the topic.
    pub async fn prepare(&self, topic: &str) -> Result<(), SinkError> {
        self.ensure_topic(&self.topic(topic)).await
    }

    /// Whether the producer in use is idempotent (false after a fall back from a broker that
    /// refused idempotence, or when the configuration turned it off).
    #[must_use]
    pub fn is_idempotent(&self) -> bool {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .idempotent
    }

    /// Deletes the topics this sink created (with their records). For tests and demos.
    ///
    /// # Errors
    /// [`KafkaError::Topic`] if the broker refuses.
    pub async fn delete_topics(&self) -> Result<(), KafkaError> {
        let topics: Vec<String> = self
            .created
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .collect();
        self.verified
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        if topics.is_empty() {
            return Ok(());
        }
        delete_topics(&self.admin, &topics).await
    }

    fn producer(&self) -> FutureProducer {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .producer
            .clone()
    }

    /// Creates `topic` unless it was created or found since the last failure.
    async fn ensure_topic(&self, topic: &str) -> Result<(), SinkError> {
        if self
            .verified
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(topic)
        {
            return Ok(());
        }
        let topics = [topic.to_owned()];
        let created = create_topics(
            &self.admin,
            &topics,
            self.config.topics,
            Duration::from_secs(10),
        )
        .await
        .map_err(|e| SinkError::Unavailable {
            sink: NAME.into(),
            reason: e.to_string(),
        })?;
        if !created.is_empty() {
            tracing::info!(topic, "created the Kafka topic");
        }
        self.created
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(created);
        self.verified
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(topic.to_owned());
        Ok(())
    }

    /// After a failure: verify the topic again on the next publish (a broker may have lost it),
    /// and start a fresh producer. librdkafka's producer keeps state about the cluster (the
    /// producer id and sequence numbers, the partitions' leaders and leader epochs) that a
    /// broker which lost its data or was replaced no longer matches, and then times out every
    /// record; a new producer starts clean. A producer that hit a fatal error because the broker
    /// refused idempotence is replaced by a plain one.
    fn recover(&self, topics: &[Arc<str>]) {
        {
            let mut verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
            for topic in topics {
                verified.remove(&**topic);
            }
        }
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        let mut idempotent = current.idempotent;
        if let Some((code, reason)) = current.producer.client().fatal_error() {
            if idempotent && idempotence_unsupported(code, &reason) {
                idempotent = false;
                tracing::warn!(
                    brokers = %self.brokers, %code, reason,
                    "the Kafka broker refused the idempotent producer: falling back to a plain \
                     producer with one request in flight (order kept; repeats dropped by event id)"
                );
            } else {
                tracing::warn!(%code, reason, "the Kafka producer hit a fatal error; replacing it");
            }
        }
        match producer(&self.brokers, &self.config, idempotent) {
            Ok(producer) => {
                *current = Current {
                    producer,
                    idempotent,
                }
            }
            Err(err) => tracing::error!(cause = %err, "cannot create a new Kafka producer"),
        }
    }

    /// Produces `events` in their order (each to its topic, keyed by its grain: a grain's
    /// records keep that order within each topic's partition) and awaits every delivery
    /// report.
    async fn produce(&self, events: &[Outgoing]) -> Result<(), SinkError> {
        let producer = self.producer();
        let mut pending: Vec<(&EventEnvelope, DeliveryFuture)> = Vec::with_capacity(events.len());
        let mut failure: Option<SinkError> = None;
        for ((topic, event, value), out) in self.topics.encode(events).zip(events) {
            let content_type = self.topics.format(&out.topic).content_type();
            let key = record_key(&event.source);
            let headers = OwnedHeaders::new_with_capacity(3)
                .insert(Header {
                    key: EVENT_ID_HEADER,
                    value: Some(event.id.as_str()),
                })
                .insert(Header {
                    key: EVENT_TYPE_HEADER,
                    value: Some(event.type_name.as_str()),
                })
                .insert(Header {
                    key: "content-type",
                    value: Some(content_type),
                });
            let mut record = FutureRecord::to(&topic)
                .key(&key)
                .payload(&value)
                .headers(headers)
                .timestamp(i64::try_from(event.timestamp_ms).unwrap_or(i64::MAX));
            let delivery = loop {
                match producer.send_result(record) {
                    Ok(delivery) => break Ok(delivery),
                    // The local queue is full: let it drain, then enqueue this record (the
                    // next ones wait, so the order holds).
                    Err((ClientError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((err, _)) => break Err(err),
                }
            };
            match delivery {
                Ok(delivery) => pending.push((event, delivery)),
                Err(err) => {
                    failure = Some(classify(&event.id, &err));
                    break;
                }
            }
        }
        // Every record enqueued is awaited, so that none is left behind unreported.
        for (event, delivery) in pending {
            let outcome = match delivery.await {
                Ok(Ok(_)) => continue,
                Ok(Err((err, _))) => classify(&event.id, &err),
                Err(_) => SinkError::Unavailable {
                    sink: NAME.into(),
                    reason: format!(
                        "the producer was dropped before event {} was confirmed",
                        event.id
                    ),
                },
            };
            failure.get_or_insert(outcome);
        }
        failure.map_or(Ok(()), Err)
    }
}

/// A failed record as the relay sees it.
fn classify(id: &str, err: &ClientError) -> SinkError {
    let refused = matches!(
        err.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::InvalidRecord
                | RDKafkaErrorCode::PolicyViolation
                | RDKafkaErrorCode::InvalidTopic
        )
    );
    let reason = format!("event {id}: {err}");
    if refused {
        SinkError::Refused {
            sink: NAME.into(),
            reason,
        }
    } else {
        SinkError::Unavailable {
            sink: NAME.into(),
            reason,
        }
    }
}

impl Sink for KafkaSink {
    fn name(&self) -> &str {
        NAME
    }

    fn publish<'a>(&'a self, events: &'a [Outgoing]) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            // The batch's Kafka topics, each once, in order of first use.
            let mut names: Vec<Arc<str>> = Vec::new();
            for out in events {
                let name = self.topics.shared_name(&out.topic);
                if !names.contains(&name) {
                    names.push(name);
                }
            }
            let mut outcome = Ok(());
            for name in &names {
                outcome = self.ensure_topic(name).await;
                if outcome.is_err() {
                    break;
                }
            }
            if outcome.is_ok() {
                outcome = self.produce(events).await;
            }
            if outcome.is_err() {
                self.recover(&names);
            }
            outcome
        })
    }
}

/// How a [`KafkaConsumer`] reads and retries.
#[derive(Debug, Clone)]
pub struct KafkaConsumerConfig {
    /// Attempts at one record before it goes to the dead-letter topic. Default 5.
    pub max_attempts: u32,
    /// The wait after a record's first failure; doubles up to `retry_max`. Default 100 ms.
    pub retry_min: Duration,
    /// Longest wait between attempts. Default 5 s.
    pub retry_max: Duration,
    /// Layout of the topics the consumer creates (the topics it reads, if missing, and their
    /// dead-letter topics).
    pub topics: TopicLayout,
    /// Where a group without committed offsets starts (`auto.offset.reset`): `earliest`
    /// (default: every record the topic holds) or `latest`.
    pub start: &'static str,
}

impl Default for KafkaConsumerConfig {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_secs(5),
            topics: TopicLayout::default(),
            start: "earliest",
        }
    }
}

/// A member of a consumer group that hands each record's envelope to a handler and commits its
/// offset once the handler succeeded.
///
/// Records are handled one at a time; a failing one is retried in place (its partition waits,
/// which keeps the per-grain order) and then dead-lettered. Several consumers with the same
/// group share the partitions.
pub struct KafkaConsumer {
    consumer: StreamConsumer,
    dead_letters: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
    brokers: String,
    group: String,
    topics: Vec<String>,
    config: KafkaConsumerConfig,
}

impl std::fmt::Debug for KafkaConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConsumer")
            .field("brokers", &self.brokers)
            .field("group", &self.group)
            .field("topics", &self.topics)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl KafkaConsumer {
    /// Joins consumer group `group` on `brokers` for `topics` (full Kafka topic names, e.g.
    /// [`KafkaSink::topic`]), creating the topics that do not exist yet and their dead-letter
    /// topics `<topic>.dead`.
    ///
    /// # Errors
    /// [`KafkaError`] if the brokers do not answer or refuse a topic.
    pub async fn connect(
        brokers: &str,
        group: &str,
        topics: &[&str],
        config: KafkaConsumerConfig,
    ) -> Result<Self, KafkaError> {
        let dead_letters = producer(
            brokers,
            &KafkaSinkConfig {
                topics: config.topics,
                ..KafkaSinkConfig::default()
            },
            true,
        )?;
        let probe = dead_letters.clone();
        let servers = brokers.to_owned();
        tokio::task::spawn_blocking(move || reachable(&probe, &servers, Duration::from_secs(10)))
            .await
            .map_err(|e| KafkaError::Connect {
                brokers: brokers.to_owned(),
                reason: e.to_string(),
            })??;
        let admin = admin(brokers)?;
        let topics: Vec<String> = topics.iter().map(|t| (*t).to_owned()).collect();
        let mut all = topics.clone();
        all.extend(topics.iter().map(|t| dead_letter_topic(t)));
        create_topics(&admin, &all, config.topics, Duration::from_secs(10)).await?;
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", config.start)
            .set("enable.partition.eof", "false")
            .create()?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&names)?;
        Ok(Self {
            consumer,
            dead_letters,
            admin,
            brokers: brokers.to_owned(),
            group: group.to_owned(),
            topics,
            config,
        })
    }

    /// The dead-letter topics, one per topic read.
    #[must_use]
    pub fn dead_letter_topics(&self) -> Vec<String> {
        self.topics.iter().map(|t| dead_letter_topic(t)).collect()
    }

    /// Hands each record's envelope to `handler` until `stop`, committing its offset after
    /// success (or after it was dead-lettered). A record whose handler was still retrying when
    /// `stop` came is not committed: the group delivers it again.
    ///
    /// # Errors
    /// [`KafkaError`] on a fatal consumer error.
    pub async fn run<F, Fut>(&self, handler: F, stop: CancellationToken) -> Result<(), KafkaError>
    where
        F: Fn(EventEnvelope) -> Fut,
        Fut: std::future::Future<Output = Result<(), String>>,
    {
        loop {
            let next = tokio::select! {
                next = self.consumer.recv() => next,
                () = stop.cancelled() => break,
            };
            let message = match next {
                Ok(message) => message,
                Err(err @ ClientError::MessageConsumptionFatal(_)) => return Err(err.into()),
                Err(err) => {
                    tracing::warn!(cause = %err, group = %self.group, "Kafka consumer error");
                    tokio::select! {
                        () = tokio::time::sleep(self.config.retry_min) => continue,
                        () = stop.cancelled() => break,
                    }
                }
            };
            if !self.handle(&message, &handler, &stop).await {
                // Stopped before the record was done: not committed, delivered again later.
                break;
            }
            if let Err(err) = self.consumer.commit_message(&message, CommitMode::Async) {
                // Not committed: the record comes again after a rebalance (dropped by id).
                tracing::warn!(cause = %err, "offset commit not sent");
            }
        }
        // Flush the commits: what was handled is not handed out again.
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) | Err(ClientError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(err) => tracing::warn!(cause = %err, "final offset commit failed"),
        }
        Ok(())
    }

    /// Runs the handler with retries, then dead-letters; true when the record is done (its
    /// offset may be committed), false if stopped first.
    async fn handle<F, Fut>(
        &self,
        message: &BorrowedMessage<'_>,
        handler: &F,
        stop: &CancellationToken,
    ) -> bool
    where
        F: Fn(EventEnvelope) -> Fut,
        Fut: std::future::Future<Output = Result<(), String>>,
    {
        let envelope = EventEnvelope::from_bytes(message.payload().unwrap_or_default());
        let mut attempt = 1;
        let mut wait = self.config.retry_min;
        let reason = loop {
            let outcome = match &envelope {
                Ok(envelope) => handler(envelope.clone()).await,
                Err(err) => {
                    // Retrying cannot make these bytes an envelope.
                    break format!("not an event envelope: {err}");
                }
            };
            match outcome {
                Ok(()) => return true,
                Err(reason) if attempt >= self.config.max_attempts => break reason,
                Err(reason) => {
                    tracing::warn!(
                        topic = message.topic(),
                        partition = message.partition(),
                        offset = message.offset(),
                        attempt,
                        reason,
                        "handler failed; retrying"
                    );
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = stop.cancelled() => return false,
                    }
                    wait = (wait * 2).min(self.config.retry_max);
                    attempt += 1;
                }
            }
        };
        let mut wait = self.config.retry_min;
        loop {
            match self.dead_letter(message, &reason, attempt).await {
                Ok(()) => return true,
                Err(err) => {
                    tracing::warn!(cause = %err, "cannot dead-letter the record; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = stop.cancelled() => return false,
                    }
                    wait = (wait * 2).min(self.config.retry_max);
                }
            }
        }
    }

    /// Produces `message` to its dead-letter topic and waits for the delivery report.
    async fn dead_letter(
        &self,
        message: &BorrowedMessage<'_>,
        reason: &str,
        attempts: u32,
    ) -> Result<(), KafkaError> {
        let topic = dead_letter_topic(message.topic());
        tracing::error!(
            topic = message.topic(), partition = message.partition(), offset = message.offset(),
            reason, attempts, dead_letter_topic = %topic,
            "record moved to the dead-letter topic"
        );
        let mut headers = OwnedHeaders::new();
        if let Some(original) = message.headers() {
            for header in original.iter() {
                headers = headers.insert(Header {
                    key: header.key,
                    value: header.value,
                });
            }
        }
        let (attempts, partition, offset) = (
            attempts.to_string(),
            message.partition().to_string(),
            message.offset().to_string(),
        );
        for (key, value) in [
            ("granary-dead-reason", reason),
            ("granary-attempts", attempts.as_str()),
            ("granary-source-topic", message.topic()),
            ("granary-source-partition", partition.as_str()),
            ("granary-source-offset", offset.as_str()),
        ] {
            headers = headers.insert(Header {
                key,
                value: Some(value),
            });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&topic).headers(headers);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(payload) = message.payload() {
            record = record.payload(payload);
        }
        let delivery = self
            .dead_letters
            .send(record, Duration::from_secs(10))
            .await;
        delivery.map(|_| ()).map_err(|(err, _)| err.into())
    }

    /// Deletes what is this consumer's own: its dead-letter topics (with their records) and its
    /// consumer group (with its committed offsets). The topics it reads stay: they belong to
    /// the producers and the other groups. For a consumer that is done for good, such as a
    /// test's or a demo's.
    ///
    /// # Errors
    /// [`KafkaError`] if the broker refuses.
    pub async fn delete(self) -> Result<(), KafkaError> {
        self.consumer.unsubscribe();
        let dead = self.dead_letter_topics();
        let Self {
            consumer,
            admin,
            group,
            ..
        } = self;
        // Leave the group before deleting it.
        drop(consumer);
        delete_topics(&admin, &dead).await?;
        let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
        match admin.delete_groups(&[group.as_str()], &options).await {
            Ok(results) => {
                for result in results {
                    match result {
                        Ok(_) | Err((_, RDKafkaErrorCode::GroupIdNotFound)) => {}
                        Err((_, code)) => {
                            tracing::warn!(group, %code, "consumer group not deleted")
                        }
                    }
                }
            }
            Err(err) => tracing::warn!(group, cause = %err, "consumer group not deleted"),
        }
        Ok(())
    }
}

/// The dead-letter topic of `topic`: `<topic>.dead`.
#[must_use]
pub fn dead_letter_topic(topic: &str) -> String {
    format!("{topic}.dead")
}

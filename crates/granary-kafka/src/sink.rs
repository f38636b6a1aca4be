//! [`KafkaSink`]: events produced to `<prefix><topic>` with `acks=all`, idempotence and
//! per-grain record keys.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use granary_events::{Encoded, EventEnvelope, Format, Outgoing, Sink, SinkError, Source, Topics};
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError as ClientError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use crate::admin::{TopicLayout, admin, create_topics, delete_topics};
use crate::{ClientProperties, KafkaError};

/// The header carrying the event id.
pub const EVENT_ID_HEADER: &str = "granary-event-id";
/// The header carrying the event type.
pub const EVENT_TYPE_HEADER: &str = "granary-event-type";

/// The sink's name in logs and metrics.
const NAME: &str = "kafka";

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
    /// Client properties for a broker that requires TLS or SASL; default none.
    pub properties: ClientProperties,
}

impl Default for KafkaSinkConfig {
    fn default() -> Self {
        Self {
            topics: TopicLayout::default(),
            linger: Duration::from_millis(5),
            delivery_timeout: Duration::from_secs(30),
            idempotence: true,
            properties: ClientProperties::new(),
        }
    }
}

/// A duration as a librdkafka setting: whole milliseconds, at least 1.
fn millis(d: Duration) -> String {
    d.as_millis().max(1).to_string()
}

/// A producer for `brokers`: `acks=all`, keyed records placed as the Java client places them,
/// idempotent or one request in flight.
pub(crate) fn producer(
    brokers: &str,
    config: &KafkaSinkConfig,
    idempotent: bool,
) -> Result<FutureProducer, KafkaError> {
    let mut client = config.properties.client(brokers);
    client
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

/// A producer for `brokers` (as [`producer`]), once the brokers answered a metadata request
/// within 10 s.
pub(crate) async fn reachable_producer(
    brokers: &str,
    config: &KafkaSinkConfig,
    idempotent: bool,
) -> Result<FutureProducer, KafkaError> {
    let producer = producer(brokers, config, idempotent)?;
    let probe = producer.clone();
    let connect = |reason: String| KafkaError::Connect {
        brokers: brokers.to_owned(),
        reason,
    };
    // fetch_metadata blocks its thread until the brokers answer.
    tokio::task::spawn_blocking(move || {
        probe
            .client()
            .fetch_metadata(None, Duration::from_secs(10))
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| connect(e.to_string()))?
    .map_err(connect)?;
    Ok(producer)
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
        let producer = reachable_producer(brokers, &config, config.idempotence).await?;
        let admin = admin(brokers, &config.properties)?;
        Ok(Self {
            brokers: brokers.to_owned(),
            topics: Topics::new(prefix),
            current: Mutex::new(Current {
                producer,
                idempotent: config.idempotence,
            }),
            config,
            admin,
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
        for Encoded {
            name: topic,
            event,
            format,
            bytes: value,
        } in self.topics.encode(events)
        {
            let content_type = format.content_type();
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

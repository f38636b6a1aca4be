//! [`KafkaConsumer`]: a consumer group member that commits a record's offset only after its
//! handler succeeded, retries in place and dead-letters to `<topic>.dead`.

use std::time::Duration;

use granary_events::EventEnvelope;
use rdkafka::Message;
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError as ClientError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

use crate::admin::{TopicLayout, admin, create_topics, delete_group, delete_topics};
use crate::sink::reachable_producer;
use crate::{ClientProperties, KafkaError, KafkaSinkConfig};

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
    /// Client properties for a broker that requires TLS or SASL; default none.
    pub properties: ClientProperties,
}

impl Default for KafkaConsumerConfig {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_secs(5),
            topics: TopicLayout::default(),
            start: "earliest",
            properties: ClientProperties::new(),
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
    /// [`KafkaSink::topic`](crate::KafkaSink::topic)), creating the topics that do not exist yet
    /// and their dead-letter topics `<topic>.dead`.
    ///
    /// # Errors
    /// [`KafkaError`] if the brokers do not answer or refuse a topic.
    pub async fn connect(
        brokers: &str,
        group: &str,
        topics: &[&str],
        config: KafkaConsumerConfig,
    ) -> Result<Self, KafkaError> {
        let dead_letters = reachable_producer(
            brokers,
            &KafkaSinkConfig {
                topics: config.topics,
                properties: config.properties.clone(),
                ..KafkaSinkConfig::default()
            },
            true,
        )
        .await?;
        let admin = admin(brokers, &config.properties)?;
        let topics: Vec<String> = topics.iter().map(|t| (*t).to_owned()).collect();
        let mut all = topics.clone();
        all.extend(topics.iter().map(|t| dead_letter_topic(t)));
        create_topics(&admin, &all, config.topics, Duration::from_secs(10)).await?;
        let consumer: StreamConsumer = config
            .properties
            .client(brokers)
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
        delete_group(&admin, &group).await;
        Ok(())
    }
}

/// The dead-letter topic of `topic`: `<topic>.dead`.
#[must_use]
pub fn dead_letter_topic(topic: &str) -> String {
    format!("{topic}.dead")
}

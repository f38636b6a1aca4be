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
//! | value | the [`EventEnvelope`](granary_events::EventEnvelope): JSON unless [`KafkaSink::with_format`] chose MessagePack for the topic |
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
//! - GSSAPI (Kerberos) is not built in (it needs Cyrus SASL). TLS and SASL `PLAIN`,
//!   `SCRAM-SHA-256`, `SCRAM-SHA-512` and `OAUTHBEARER` are: librdkafka is built with OpenSSL
//!   (the system's: `libssl-dev` on Debian), and [`ClientProperties`] carries the properties
//!   (`security.protocol`, `sasl.mechanism`, `sasl.username`, `sasl.password`,
//!   `ssl.ca.location`, …) to every client.
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

mod admin;
mod consumer;
mod error;
mod properties;
mod sink;

pub use admin::TopicLayout;
pub use consumer::{KafkaConsumer, KafkaConsumerConfig, dead_letter_topic};
pub use error::KafkaError;
pub use properties::{ClientProperties, RESERVED};
pub use sink::{EVENT_ID_HEADER, EVENT_TYPE_HEADER, KafkaSink, KafkaSinkConfig, record_key};

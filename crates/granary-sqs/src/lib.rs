//! Granary events to Amazon SQS, or any server that speaks the SQS API (moto, ElasticMQ,
//! LocalStack): point [`SqsEndpoint`] at it.
//!
//! - [`SqsSink`] publishes each topic to its own FIFO queue `<prefix><topic>.fifo` (created, or
//!   verified, on first use or by [`SqsSink::ensure_queue`]), with `SendMessageBatch`: at most
//!   10 messages and 256 KiB per batch. Batches go out on up to 4 concurrent lanes
//!   ([`SqsSink::with_concurrency`]); a grain's events always take the same lane, one batch
//!   after the other, in commit order. A queue that vanished (deleted, or an in-memory server
//!   that restarted empty) is created again on the next attempt. A batch entry that SQS did
//!   not accept fails the whole publish, so the relay keeps the events and publishes them again
//!   (SQS drops the repeats of the accepted ones by deduplication id). Standard queues
//!   ([`QueueKind::Standard`]) are an option: unordered, at least once, no deduplication.
//! - [`SqsConsumer`] long-polls a queue, hands each event to a handler, extends the visibility
//!   timeout while the handler runs longer than half of it, deletes the message only once the
//!   handler succeeded, and makes a failed one visible again after `retry_delay`. After
//!   `max_attempts` failures it moves the event to the dead-letter queue `<queue>-dead.fifo`
//!   (attribute `granary-failure` = why); the queue's redrive policy (set at connect,
//!   `max_receives`) is the safety net for events whose consumer never answers.
//!
//! # Guarantees
//!
//! FIFO queues keep the order **per message group**; the group is the grain that published the
//! event, so one grain's events arrive in commit order. A failing event blocks its own grain's
//! later events until it succeeds or is dead-lettered (that is how FIFO keeps the order), never
//! the other grains'. SQS drops a message whose deduplication id it saw in the last 5 minutes:
//! a relay that publishes a batch again soon after a lost confirmation causes no repeat. Later
//! repeats (a relay that retried for longer than 5 minutes), and the redeliveries of a consumer
//! that died before it deleted a message, are possible: consumers drop them by event id
//! (`granary_events::RecentEvents`, or the idempotency helper of their store).
//!
//! The consumer and the sink both create the queue (same attributes), so either may start
//! first; after a failed receive the consumer verifies its queues, dead-letter queue and
//! redrive policy again before it goes on.
//!
//! One caveat: when SQS accepts only part of a `SendMessageBatch` (a throttled entry), a
//! grain's later event of that batch may already be in the queue when its earlier one is sent
//! again, so that grain's order is broken for that pair. Consumers that must never see that
//! compare `(version, index)` of the envelope with the last one they applied for the grain.
//!
//! # Message format (for consumers in any language)
//!
//! | field | value |
//! |-------|-------|
//! | body | the [`EventEnvelope`](granary_events::EventEnvelope) as JSON; or, for a topic the sink writes in MessagePack (`with_format`), the MessagePack bytes in standard base64 |
//! | attribute `content-type` (String) | `application/json` or `application/msgpack` (base64 body) |
//! | attribute `granary-event-id` (String) | the event id, in full |
//! | attribute `granary-event-type` (String) | the event type, e.g. `match.ended` |
//! | attribute `granary-failure` (String) | in a dead-letter queue only: why the event was set aside |
//! | `MessageGroupId` (FIFO) | the source grain: `<type name length>:<grain type>:<key kind s\|i\|u>:<key>` |
//! | `MessageDeduplicationId` (FIFO) | the event id |
//!
//! SQS takes at most 128 characters, printable ASCII without space, in a group or
//! deduplication id. An id that does not fit (a long or non-ASCII grain key, a long store
//! origin) is replaced by `sha256:` and the 64 lowercase hex digits of its SHA-256 (UTF-8
//! bytes): the same id always maps to the same value, so ordering and deduplication hold; read
//! the full event id from the attribute or the body. See [`sqs_id`].
//!
//! Queue names: SQS allows letters, digits, `-` and `_`, up to 80 characters with the `.fifo`
//! suffix; every other character of `<prefix><topic>` becomes `-` (`game.match.ended` →
//! `game-match-ended.fifo`). See [`queue_name`].
//!
//! JSON bodies are written as `serde_json` writes them, except for the two characters SQS
//! refuses in a body that JSON allows raw in a string, U+FFFE and U+FFFF, written as `\ufffe`
//! and `\uffff` escapes (the same JSON value).
//!
//! # Example
//!
//! ```no_run
//! # use std::sync::Arc;
//! # async fn run(store: Arc<granary::provider::MemoryStore>) -> Result<(), Box<dyn std::error::Error>> {
//! use granary_events::Relay;
//! use granary_sqs::{SqsConsumer, SqsConsumerConfig, SqsEndpoint, SqsSink};
//!
//! // The AWS configuration of the environment (credentials chain, region)…
//! let client = SqsEndpoint::aws().client().await;
//! // …or an SQS-compatible server: SqsEndpoint::url("http://127.0.0.1:5000")
//! //     .static_credentials("test", "test").client().await
//! let sink = Arc::new(SqsSink::new(client.clone(), "game-"));
//! let relay = Relay::builder(store).route("player.died", sink.clone(), "player.died").start();
//!
//! let mut consumer = SqsConsumer::connect(client, &sink.queue_name("player.died"),
//!     SqsConsumerConfig::default()).await?;
//! let stop = tokio_util::sync::CancellationToken::new();
//! consumer.run(|event| async move {
//!     println!("{} from {}", event.type_name, event.source.key);
//!     Ok(())
//! }, stop).await;
//! # relay.stop().await;
//! # Ok(())
//! # }
//! ```

mod consumer;
mod endpoint;
mod error;
mod message;
mod sink;

pub use consumer::{SqsConsumer, SqsConsumerConfig};
pub use endpoint::SqsEndpoint;
pub use error::SqsError;
pub use message::{queue_name, sqs_id};
pub use sink::{QueueKind, SqsSink};

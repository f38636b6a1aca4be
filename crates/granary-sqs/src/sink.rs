//! [`SqsSink`]: the relay's events to SQS queues, one queue per topic.

use std::collections::HashMap;
use std::sync::Mutex;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{MessageAttributeValue, QueueAttributeName, SendMessageBatchRequestEntry};
use futures::future::BoxFuture;
use granary_events::{EventEnvelope, Format, Outgoing, Sink, SinkError, Topics};

use crate::error::SqsError;
use crate::message::{self, CONTENT_TYPE, EVENT_ID, EVENT_TYPE};

/// SQS's limits on one `SendMessageBatch`.
const MAX_BATCH_ENTRIES: usize = 10;
const MAX_BATCH_BYTES: usize = 256 * 1024;

/// The kind of queue an [`SqsSink`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueueKind {
    /// FIFO queues (`.fifo`): one message group per grain, so each grain's events arrive in
    /// commit order; the event id deduplicates for 5 minutes. The default.
    #[default]
    Fifo,
    /// Standard queues: unordered, at least once (SQS itself may deliver a message twice), no
    /// deduplication, higher throughput. Consumers must not rely on order, and drop repeats by
    /// event id.
    Standard,
}

/// Publishes events to one SQS queue per topic, `<prefix><topic>` (sanitized by
/// [`queue_name`](crate::queue_name)), FIFO unless [`standard`](Self::standard).
///
/// Each queue is created on its first use (or by [`ensure_queue`](Self::ensure_queue) at
/// start), or verified when it exists: a FIFO queue must have content-based deduplication off,
/// or SQS refuses and the sink reports the events refused. When a send says the queue does not
/// exist (deleted, or an in-memory server that restarted and lost its queues) the sink forgets
/// it and creates it again on the next attempt; the relay keeps the events meanwhile.
#[derive(Debug)]
pub struct SqsSink {
    client: Client,
    /// The prefix of the queue names and each topic's format.
    topics: Topics,
    kind: QueueKind,
    /// Queue URL per topic, once created or verified.
    urls: Mutex<HashMap<String, String>>,
    /// Batches sent at once.
    lanes: usize,
}

impl SqsSink {
    /// A sink writing the FIFO queues `<prefix><topic>.fifo` through `client` (see
    /// [`SqsEndpoint`](crate::SqsEndpoint)).
    #[must_use]
    pub fn new(client: Client, prefix: &str) -> Self {
        Self {
            client,
            topics: Topics::new(prefix),
            kind: QueueKind::Fifo,
            urls: Mutex::new(HashMap::new()),
            lanes: 4,
        }
    }

    /// Sends up to `lanes` batches at once (default 4; 1 to 64). Each grain's events always
    /// take the same lane, one batch after the other, so its order holds; more lanes help when
    /// many grains publish and SQS is far away.
    #[must_use]
    pub fn with_concurrency(mut self, lanes: usize) -> Self {
        self.lanes = lanes.clamp(1, 64);
        self
    }

    /// Writes standard queues instead of FIFO ones: unordered and at least once (see
    /// [`QueueKind::Standard`]).
    #[must_use]
    pub fn standard(mut self) -> Self {
        self.kind = QueueKind::Standard;
        self
    }

    /// Writes the envelopes of `topic` in `format` (JSON unless set); MessagePack bodies are
    /// base64 text, and the `content-type` attribute says which.
    #[must_use]
    pub fn with_format(mut self, topic: &str, format: Format) -> Self {
        self.topics = self.topics.with_format(topic, format);
        self
    }

    /// The kind of queues written.
    #[must_use]
    pub fn kind(&self) -> QueueKind {
        self.kind
    }

    /// The name of `topic`'s queue, e.g. `game-match-ended.fifo` for prefix `game.` and topic
    /// `match.ended`.
    ///
    /// # Panics
    /// If the name is longer than SQS allows (see [`queue_name`](crate::queue_name), which
    /// returns the error instead).
    #[must_use]
    pub fn queue_name(&self, topic: &str) -> String {
        match message::queue_name(self.topics.prefix(), topic, self.kind == QueueKind::Fifo) {
            Ok(name) => name,
            Err(err) => panic!("{err}"),
        }
    }

    /// Checks that SQS answers and accepts the credentials (one `ListQueues` call), so that a
    /// wrong endpoint or key fails at start rather than at the first publish.
    ///
    /// # Errors
    /// [`SqsError::Request`] saying why SQS did not answer or refused.
    pub async fn check(&self) -> Result<(), SqsError> {
        self.client
            .list_queues()
            .max_results(1)
            .send()
            .await
            .map_err(SqsError::request("ListQueues"))?;
        Ok(())
    }

    /// Creates `topic`'s queue, or verifies that the existing one has the attributes the sink
    /// needs, and returns its URL.
    ///
    /// # Errors
    /// [`SqsError`] if SQS cannot be reached, or refuses (an existing queue with other
    /// attributes, a name too long).
    pub async fn ensure_queue(&self, topic: &str) -> Result<String, SqsError> {
        if let Some(url) = self.cached(topic) {
            return Ok(url);
        }
        let fifo = self.kind == QueueKind::Fifo;
        let name = message::queue_name(self.topics.prefix(), topic, fifo)?;
        let url = create_queue(&self.client, &name, fifo).await?;
        self.urls
            .lock()
            .expect("the URL map is never poisoned")
            .insert(topic.to_owned(), url.clone());
        Ok(url)
    }

    fn cached(&self, topic: &str) -> Option<String> {
        self.urls
            .lock()
            .expect("the URL map is never poisoned")
            .get(topic)
            .cloned()
    }

    fn forget(&self, topic: &str) {
        self.urls
            .lock()
            .expect("the URL map is never poisoned")
            .remove(topic);
    }

    /// The batch entry of `event`, and its size as SQS counts it (body and attributes).
    fn entry(
        &self,
        position: usize,
        event: &EventEnvelope,
        format: Format,
    ) -> (SendMessageBatchRequestEntry, usize) {
        let body = message::body(event, format);
        let attribute = |value: &str| {
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
                .expect("data type is set")
        };
        let size = body.len()
            + EVENT_ID.len()
            + event.id.len()
            + EVENT_TYPE.len()
            + event.type_name.len()
            + CONTENT_TYPE.len()
            + format.content_type().len()
            + 3 * "String".len();
        let mut entry = SendMessageBatchRequestEntry::builder()
            .id(position.to_string())
            .message_body(body)
            .message_attributes(EVENT_ID, attribute(&event.id))
            .message_attributes(EVENT_TYPE, attribute(&event.type_name))
            .message_attributes(CONTENT_TYPE, attribute(format.content_type()));
        if self.kind == QueueKind::Fifo {
            entry = entry
                .message_group_id(message::group_id(event))
                .message_deduplication_id(message::sqs_id(&event.id));
        }
        (entry.build().expect("id and body are set"), size)
    }

    /// Sends `events` to the queue at `url` through up to `lanes` concurrent lanes (one
    /// grain's events always in the same lane, in order); fails unless SQS accepted every
    /// message.
    async fn send(
        &self,
        url: &str,
        events: &[&EventEnvelope],
        format: Format,
    ) -> Result<(), PublishError> {
        let lanes = self.lanes.clamp(1, 64);
        let mut split: Vec<Vec<&EventEnvelope>> = vec![Vec::new(); lanes];
        for (i, &event) in events.iter().enumerate() {
            let lane = match self.kind {
                QueueKind::Fifo => {
                    let mut hasher = std::hash::DefaultHasher::new();
                    std::hash::Hash::hash(
                        &(&event.source.type_name, &event.source.key),
                        &mut hasher,
                    );
                    std::hash::Hasher::finish(&hasher)
                }
                QueueKind::Standard => i as u64,
            };
            split[usize::try_from(lane % lanes as u64).expect("below lanes")].push(event);
        }
        let sent = futures::future::join_all(
            split
                .iter()
                .filter(|lane| !lane.is_empty())
                .map(|lane| self.send_lane(url, lane, format)),
        )
        .await;
        sent.into_iter().collect()
    }

    /// Sends one lane's events in batches, in order.
    async fn send_lane(
        &self,
        url: &str,
        events: &[&EventEnvelope],
        format: Format,
    ) -> Result<(), PublishError> {
        let mut batch = Vec::with_capacity(MAX_BATCH_ENTRIES);
        let mut bytes = 0;
        for event in events {
            let (entry, size) = self.entry(batch.len(), event, format);
            if size > MAX_BATCH_BYTES {
                return Err(PublishError::Refused(format!(
                    "event {} is {size} bytes as a message; SQS takes at most {MAX_BATCH_BYTES}",
                    event.id
                )));
            }
            if batch.len() == MAX_BATCH_ENTRIES || bytes + size > MAX_BATCH_BYTES {
                self.send_batch(url, std::mem::take(&mut batch)).await?;
                bytes = 0;
                // Renumbered: ids are positions in their batch.
                let (entry, _) = self.entry(0, event, format);
                batch.push(entry);
            } else {
                batch.push(entry);
            }
            bytes += size;
        }
        if !batch.is_empty() {
            self.send_batch(url, batch).await?;
        }
        Ok(())
    }

    async fn send_batch(
        &self,
        url: &str,
        entries: Vec<SendMessageBatchRequestEntry>,
    ) -> Result<(), PublishError> {
        let sent = entries.len();
        let output = self
            .client
            .send_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(SqsError::request("SendMessageBatch"))
            .map_err(PublishError::Sqs)?;
        if let Some(failed) = output.failed().first() {
            let reason = format!(
                "{} of {sent} messages not accepted, e.g. entry {}: {} {}",
                output.failed().len(),
                failed.id(),
                failed.code(),
                failed.message().unwrap_or_default()
            );
            return Err(if failed.sender_fault() {
                PublishError::Refused(reason)
            } else {
                PublishError::Unavailable(reason)
            });
        }
        if output.successful().len() != sent {
            return Err(PublishError::Unavailable(format!(
                "SQS confirmed {} of {sent} messages",
                output.successful().len()
            )));
        }
        Ok(())
    }
}

/// Why a publish failed, before it becomes a [`SinkError`].
enum PublishError {
    Sqs(SqsError),
    Refused(String),
    Unavailable(String),
}

/// Creates queue `name` (FIFO: content-based deduplication off), or verifies the existing one,
/// and returns its URL.
pub(crate) async fn create_queue(
    client: &Client,
    name: &str,
    fifo: bool,
) -> Result<String, SqsError> {
    let mut request = client.create_queue().queue_name(name);
    if fifo {
        request = request
            .attributes(QueueAttributeName::FifoQueue, "true")
            .attributes(QueueAttributeName::ContentBasedDeduplication, "false");
    }
    let output = request
        .send()
        .await
        .map_err(SqsError::request("CreateQueue"))?;
    output
        .queue_url()
        .map(str::to_owned)
        .ok_or(SqsError::Response {
            operation: "CreateQueue",
            field: "QueueUrl",
        })
}

impl Sink for SqsSink {
    fn name(&self) -> &str {
        "sqs"
    }

    fn publish<'a>(&'a self, events: &'a [Outgoing]) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            // One queue per topic: each topic's events in their order (the order across
            // queues is not kept by SQS anyway).
            let mut by_topic: Vec<(&str, Vec<&EventEnvelope>)> = Vec::new();
            for out in events {
                match by_topic.iter_mut().find(|(t, _)| *t == &*out.topic) {
                    Some((_, list)) => list.push(&out.event),
                    None => by_topic.push((&out.topic, vec![&out.event])),
                }
            }
            for (topic, events) in by_topic {
                self.publish_topic(topic, &events).await?;
            }
            Ok(())
        })
    }
}

impl SqsSink {
    /// Sends `events` to `topic`'s queue, creating or verifying it first.
    async fn publish_topic(&self, topic: &str, events: &[&EventEnvelope]) -> Result<(), SinkError> {
        let to_sink_error = |err: PublishError| match err {
            PublishError::Sqs(SqsError::QueueName { name, reason }) => SinkError::Refused {
                sink: "sqs".into(),
                reason: format!("invalid queue name {name}: {reason}"),
            },
            PublishError::Sqs(err) => SinkError::Unavailable {
                sink: "sqs".into(),
                reason: err.to_string(),
            },
            PublishError::Refused(reason) => SinkError::Refused {
                sink: "sqs".into(),
                reason,
            },
            PublishError::Unavailable(reason) => SinkError::Unavailable {
                sink: "sqs".into(),
                reason,
            },
        };
        let url = self
            .ensure_queue(topic)
            .await
            .map_err(|e| to_sink_error(PublishError::Sqs(e)))?;
        let format = self.topics.format(topic);
        let sent = self.send(&url, events, format).await;
        if let Err(PublishError::Sqs(err)) = &sent {
            // Missing queue or not: the next attempt creates or verifies it again, which
            // costs one call and recovers from a server that lost its queues.
            tracing::debug!(
                topic,
                missing = err.is_missing_queue(),
                "forgetting the queue URL"
            );
            self.forget(topic);
        }
        sent.map_err(to_sink_error)
    }
}

//! [`Sink`]: where the relay delivers events (a queue, a stream, a topic), one ordered batch of
//! [`Outgoing`] events at a time, and [`Topics`], the per-topic names and formats every sink
//! keeps.

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::BoxFuture;

use crate::envelope::{EventEnvelope, Format};

/// A destination of events. Implemented per queue kind (Redis Streams, NATS JetStream,
/// RabbitMQ, …).
pub trait Sink: Send + Sync + 'static {
    /// A short name for logs and the `sink` label of the relay's metrics ("redis-streams",
    /// "nats", …). Keep it stable: dashboards and alerts select on it.
    fn name(&self) -> &str;

    /// Publishes `events`, each to its own topic, **in this order** (the relay hands them over
    /// in commit order per grain, across topics and event types), and returns once the broker
    /// has confirmed every one of them. A sink pipelines the batch (sends it all, then awaits
    /// the confirmations) but never reorders it: where the broker keeps one order for several
    /// topics (one NATS stream, one RabbitMQ queue bound to several keys), a consumer sees a
    /// grain's events in commit order.
    ///
    /// On error none may be taken as delivered: the relay publishes the batch again (consumers
    /// drop the repeats by event id). [`SinkError::Refused`] says the broker will not take an
    /// event as it is: the relay then publishes the batch event by event to find which, and
    /// dead-letters an event refused [`max_refusals`](crate::RelayConfig::max_refusals) times.
    fn publish<'a>(&'a self, events: &'a [Outgoing]) -> BoxFuture<'a, Result<(), SinkError>>;
}

/// One event of a batch and the topic it goes to.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The topic: the event's type name unless a route names another.
    pub topic: Arc<str>,
    /// The event.
    pub event: EventEnvelope,
}

impl Outgoing {
    /// `event` on `topic`.
    #[must_use]
    pub fn new(topic: impl Into<Arc<str>>, event: EventEnvelope) -> Self {
        Self {
            topic: topic.into(),
            event,
        }
    }
}

/// Why a sink did not confirm a batch.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// The broker cannot take the events now (it cannot be reached, did not confirm in time,
    /// or has no queue bound to the routing key yet); the relay retries with backoff, without
    /// end (the events stay in the outbox).
    #[error("{sink} unavailable: {reason}")]
    Unavailable {
        /// The sink's name.
        sink: String,
        /// What failed.
        reason: String,
    },
    /// The broker refused an event as it is (too large, an invalid record, a topic or queue it
    /// will not create): retrying the same event will not help. The relay isolates the refused event,
    /// retries it up to [`max_refusals`](crate::RelayConfig::max_refusals) times and then moves
    /// it to its shard's dead-letter stream (`granary events dead` lists and re-drives them), so
    /// that the events after it go out. Fix the cause (the event, or the broker's
    /// configuration), then re-drive.
    #[error("{sink} refused the events: {reason}")]
    Refused {
        /// The sink's name.
        sink: String,
        /// What the broker said.
        reason: String,
    },
}

/// What a sink needs to know of each topic: its name on the broker (`<prefix><topic>`: a
/// stream, subject, routing key, Kafka topic or queue) and the format its envelopes are
/// written in. Names are computed once per topic and kept.
#[derive(Debug, Default)]
pub struct Topics {
    prefix: String,
    formats: HashMap<String, Format>,
    names: std::sync::RwLock<HashMap<Arc<str>, Arc<str>>>,
}

impl Clone for Topics {
    fn clone(&self) -> Self {
        Self {
            prefix: self.prefix.clone(),
            formats: self.formats.clone(),
            names: std::sync::RwLock::new(self.names.read().map(|n| n.clone()).unwrap_or_default()),
        }
    }
}

/// How many topic names a [`Topics`] keeps (a relay sees a handful of event types; this only
/// bounds the memory of a misuse with endless topics).
const KEPT_NAMES: usize = 4096;

impl Topics {
    /// Topics named `<prefix><topic>`, JSON unless [`with_format`](Self::with_format) says
    /// otherwise.
    #[must_use]
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            ..Self::default()
        }
    }

    /// Writes the envelopes of `topic` in `format`.
    #[must_use]
    pub fn with_format(mut self, topic: &str, format: Format) -> Self {
        self.formats.insert(topic.to_owned(), format);
        self
    }

    /// The prefix.
    #[must_use]
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The broker's name of `topic`: `<prefix><topic>`.
    #[must_use]
    pub fn name(&self, topic: &str) -> String {
        format!("{}{topic}", self.prefix)
    }

    /// The format of `topic`'s envelopes.
    #[must_use]
    pub fn format(&self, topic: &str) -> Format {
        self.formats.get(topic).copied().unwrap_or_default()
    }

    /// The name of `topic`, shared (computed once and kept).
    #[must_use]
    pub fn shared_name(&self, topic: &Arc<str>) -> Arc<str> {
        if let Some(name) = self.names.read().ok().and_then(|n| n.get(topic).cloned()) {
            return name;
        }
        let name: Arc<str> = self.name(topic).into();
        if let Ok(mut names) = self.names.write()
            && names.len() < KEPT_NAMES
        {
            names.insert(topic.clone(), name.clone());
        }
        name
    }

    /// Each event of `events`, in order, with its topic's name and format: what a sink needs
    /// to write each envelope straight into the message it sends
    /// ([`EventEnvelope::encode_to`]).
    pub fn address<'a>(
        &'a self,
        events: &'a [Outgoing],
    ) -> impl Iterator<Item = Addressed<'a>> + 'a {
        let mut last: Option<(&Arc<str>, Arc<str>, Format)> = None;
        events.iter().map(move |out| {
            let (name, format) = match &last {
                Some((topic, name, format)) if **topic == out.topic => (name.clone(), *format),
                _ => {
                    let name = self.shared_name(&out.topic);
                    let format = self.format(&out.topic);
                    last = Some((&out.topic, name.clone(), format));
                    (name, format)
                }
            };
            Addressed {
                name,
                event: &out.event,
                format,
            }
        })
    }

    /// Each event of `events`, in order, with its topic's name and format and its envelope
    /// encoded in that format.
    pub fn encode<'a>(&'a self, events: &'a [Outgoing]) -> impl Iterator<Item = Encoded<'a>> + 'a {
        self.address(events).map(|a| Encoded {
            bytes: a.event.encode(a.format),
            name: a.name,
            event: a.event,
            format: a.format,
        })
    }
}

/// One event of a batch as [`Topics::address`] hands it to a sink.
#[derive(Debug, Clone)]
pub struct Addressed<'a> {
    /// The topic's name on the broker: `<prefix><topic>`.
    pub name: Arc<str>,
    /// The event.
    pub event: &'a EventEnvelope,
    /// The topic's format; a sink that labels its messages writes `format.content_type()`.
    pub format: Format,
}

/// One event of a batch as [`Topics::encode`] hands it to a sink.
#[derive(Debug, Clone)]
pub struct Encoded<'a> {
    /// The topic's name on the broker: `<prefix><topic>`.
    pub name: Arc<str>,
    /// The event.
    pub event: &'a EventEnvelope,
    /// The topic's format; a sink that labels its messages writes `format.content_type()`.
    pub format: Format,
    /// The envelope, encoded in `format`.
    pub bytes: Vec<u8>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use serde_json::value::RawValue;

    use super::*;
    use crate::Source;

    fn outgoing(topic: &str, index: u32) -> Outgoing {
        Outgoing::new(
            topic,
            EventEnvelope {
                id: format!("o/6:player:s:alice:1:{index}"),
                type_name: topic.into(),
                source: Source {
                    type_name: "player".into(),
                    key: "alice".into(),
                    key_kind: "string".into(),
                },
                version: 1,
                index,
                timestamp_ms: 1,
                trace: None,
                payload: RawValue::from_string(format!("{{\"n\":{index}}}")).unwrap(),
            },
        )
    }

    #[test]
    fn each_event_gets_its_topics_prefixed_name_and_format_in_batch_order() {
        let topics = Topics::new("game.").with_format("b", Format::MessagePack);
        assert_eq!(topics.name("a"), "game.a");
        assert_eq!(topics.format("a"), Format::Json, "JSON unless set");
        assert_eq!(topics.format("b"), Format::MessagePack);
        // Topics alternate and repeat, so that a name or format kept from the previous event
        // would show.
        let batch: Vec<Outgoing> = ["a", "a", "b", "a", "b", "b"]
            .iter()
            .zip(0..)
            .map(|(topic, index)| outgoing(topic, index))
            .collect();
        let encoded: Vec<Encoded<'_>> = topics.encode(&batch).collect();
        assert_eq!(encoded.len(), batch.len());
        for (e, out) in encoded.iter().zip(&batch) {
            assert_eq!(*e.name, format!("game.{}", out.topic));
            assert_eq!(e.format, topics.format(&out.topic));
            assert!(
                std::ptr::eq(e.event, &out.event),
                "the batch's own event, in order"
            );
            assert_eq!(e.bytes, out.event.encode(e.format));
            let decoded = EventEnvelope::from_bytes(&e.bytes).unwrap();
            assert_eq!(decoded.index, out.event.index);
        }
        assert!(
            Arc::ptr_eq(&encoded[0].name, &encoded[3].name),
            "a topic's name is computed once and shared"
        );
        // Addressed without encoding: the same names and formats, and `encode_to` writes the
        // bytes `encode` returns.
        let addressed: Vec<Addressed<'_>> = topics.address(&batch).collect();
        assert_eq!(addressed.len(), batch.len());
        for (a, e) in addressed.iter().zip(&encoded) {
            assert_eq!(a.name, e.name);
            assert_eq!(a.format, e.format);
            assert!(std::ptr::eq(a.event, e.event));
            let mut written = Vec::new();
            a.event.encode_to(a.format, &mut written).unwrap();
            assert_eq!(written, e.bytes);
        }
    }
}

//! [`Sink`]: where the relay delivers events (a queue, a stream, a topic).

use futures::future::BoxFuture;

use crate::envelope::EventEnvelope;

/// A destination of events. Implemented per queue kind (Redis Streams, NATS JetStream,
/// RabbitMQ, …).
pub trait Sink: Send + Sync + 'static {
    /// A short name for logs and the `sink` label of the relay's metrics ("redis-streams",
    /// "nats", …). Keep it stable: dashboards and alerts select on it.
    fn name(&self) -> &str;

    /// Publishes `events` to `topic`, in this order, and returns once the broker has confirmed
    /// every one of them. On error none may be taken as delivered: the relay publishes the
    /// batch again (consumers drop the repeats by event id).
    fn publish<'a>(
        &'a self,
        topic: &'a str,
        events: &'a [EventEnvelope],
    ) -> BoxFuture<'a, Result<(), SinkError>>;
}

/// Why a sink did not confirm a batch.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// The broker cannot be reached or did not confirm in time; the relay retries with backoff.
    #[error("{sink} unavailable: {reason}")]
    Unavailable {
        /// The sink's name.
        sink: String,
        /// What failed.
        reason: String,
    },
    /// The broker refused the events (e.g. no queue bound to the routing key); the relay
    /// retries, and the configuration must be fixed.
    #[error("{sink} refused the events: {reason}")]
    Refused {
        /// The sink's name.
        sink: String,
        /// What the broker said.
        reason: String,
    },
}

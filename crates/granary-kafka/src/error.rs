//! Why talking to Kafka failed.

use rdkafka::error::KafkaError as ClientError;

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

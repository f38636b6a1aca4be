//! The admin API: the layout of new topics, creating and deleting topics, deleting a consumer
//! group.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;

use crate::{ClientProperties, KafkaError};

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

pub(crate) fn admin(
    brokers: &str,
    properties: &ClientProperties,
) -> Result<AdminClient<DefaultClientContext>, KafkaError> {
    Ok(properties.client(brokers).create()?)
}

/// Creates `topics` that do not exist yet; returns the ones this call created.
pub(crate) async fn create_topics(
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

pub(crate) async fn delete_topics(
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

/// Deletes consumer group `group` (with its committed offsets); a group that is not there is
/// fine, and a refusal is logged, not returned: the group's offsets are the broker's to expire.
pub(crate) async fn delete_group(admin: &AdminClient<DefaultClientContext>, group: &str) {
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    match admin.delete_groups(&[group], &options).await {
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
}

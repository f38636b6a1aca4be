//! [`SqsConsumer`]: long-polls a queue, hands events to a handler, dead-letters the poison.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message,
    MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName,
};
use granary_events::EventEnvelope;
use tokio_util::sync::CancellationToken;

use crate::error::SqsError;
use crate::message::{self, CONTENT_TYPE, FAILURE};
use crate::sink::create_queue;

/// How an [`SqsConsumer`] reads and retries.
#[derive(Debug, Clone)]
pub struct SqsConsumerConfig {
    /// Failed handler runs of one event before the consumer moves it to the dead-letter queue.
    /// Counted by each consumer process (a restart counts afresh). Default 5.
    pub max_attempts: u32,
    /// Receives of one message before SQS itself moves it to the dead-letter queue (the redrive
    /// policy's `maxReceiveCount`): the safety net for an event whose handler never returns or
    /// whose consumer keeps dying. Keep it well above `max_attempts`: a FIFO receive also counts
    /// for the later messages of a grain that wait behind a failing one. Default 20.
    pub max_receives: u32,
    /// How long a failed event stays invisible before it is delivered again (whole seconds,
    /// rounded up; SQS's unit). Default 1 s.
    pub retry_delay: Duration,
    /// The long poll: how long a receive waits for messages (`WaitTimeSeconds`, at most 20 s).
    /// Default 20 s.
    pub wait_time: Duration,
    /// How long a received message stays invisible to other receivers (whole seconds, at
    /// least 1). The consumer extends it while a handler runs longer than half of it, so it
    /// bounds how late a crashed consumer's messages come back, not how long a handler may
    /// take. Default 30 s.
    pub visibility_timeout: Duration,
    /// Messages per receive, 1 to 10. Default 10.
    pub batch: u8,
}

impl Default for SqsConsumerConfig {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            max_receives: 20,
            retry_delay: Duration::from_secs(1),
            wait_time: Duration::from_secs(20),
            visibility_timeout: Duration::from_secs(30),
            batch: 10,
        }
    }
}

/// Whole seconds of `d`, rounded up, as SQS takes them.
fn seconds(d: Duration) -> i32 {
    let whole = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i32::try_from(whole).unwrap_or(i32::MAX)
}

/// A consumer of one SQS queue (FIFO when its name ends with `.fifo`), with a dead-letter
/// queue.
///
/// Several consumers may read one queue: SQS hands each message to one of them at a time. With
/// a FIFO queue, a grain's events go to one consumer at a time, in order; a failing event
/// holds back the later events of its grain (its message group) until it succeeds or is
/// dead-lettered, and only those.
#[derive(Debug)]
pub struct SqsConsumer {
    client: Client,
    queue: String,
    fifo: bool,
    url: String,
    dead_url: String,
    config: SqsConsumerConfig,
}

impl SqsConsumer {
    /// Creates (or verifies) the queue `queue` (e.g. [`SqsSink::queue_name`]) and its
    /// dead-letter queue `<queue>-dead.fifo` (`<queue>-dead` for a standard queue), and sets
    /// the queue's redrive policy (`maxReceiveCount` = `max_receives`) and visibility timeout.
    ///
    /// [`SqsSink::queue_name`]: crate::SqsSink::queue_name
    ///
    /// # Errors
    /// [`SqsError`] if the name is not a valid queue name, SQS cannot be reached, or refuses.
    pub async fn connect(
        client: Client,
        queue: &str,
        config: SqsConsumerConfig,
    ) -> Result<Self, SqsError> {
        let fifo = queue.ends_with(".fifo");
        message::check_queue_name(queue, fifo)?;
        let dead = message::dead_letter_name(queue);
        message::check_queue_name(&dead, fifo)?;
        let mut consumer = Self {
            client,
            queue: queue.to_owned(),
            fifo,
            url: String::new(),
            dead_url: String::new(),
            config,
        };
        consumer.set_up().await?;
        Ok(consumer)
    }

    /// Creates or verifies both queues and the queue's attributes.
    async fn set_up(&mut self) -> Result<(), SqsError> {
        let dead = message::dead_letter_name(&self.queue);
        self.dead_url = create_queue(&self.client, &dead, self.fifo).await?;
        let arn = self
            .client
            .get_queue_attributes()
            .queue_url(&self.dead_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(SqsError::request("GetQueueAttributes"))?
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
            .ok_or(SqsError::Response {
                operation: "GetQueueAttributes",
                field: "QueueArn",
            })?;
        self.url = create_queue(&self.client, &self.queue, self.fifo).await?;
        let redrive = serde_json::json!({
            "deadLetterTargetArn": arn,
            "maxReceiveCount": self.config.max_receives.max(1).to_string(),
        });
        self.client
            .set_queue_attributes()
            .queue_url(&self.url)
            .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string())
            .attributes(
                QueueAttributeName::VisibilityTimeout,
                seconds(self.config.visibility_timeout).max(1).to_string(),
            )
            .send()
            .await
            .map_err(SqsError::request("SetQueueAttributes"))?;
        Ok(())
    }

    /// The queue's name.
    #[must_use]
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// The queue's URL.
    #[must_use]
    pub fn queue_url(&self) -> &str {
        &self.url
    }

    /// The dead-letter queue's URL.
    #[must_use]
    pub fn dead_letter_queue_url(&self) -> &str {
        &self.dead_url
    }

    /// Deletes the queue and its dead-letter queue, with any events still in them (a queue
    /// already gone is fine). For a consumer that is done for good, such as a test's or a
    /// demo's.
    ///
    /// # Errors
    /// [`SqsError`] if SQS refuses.
    pub async fn delete(self) -> Result<(), SqsError> {
        for url in [&self.url, &self.dead_url] {
            let deleted = self
                .client
                .delete_queue()
                .queue_url(url)
                .send()
                .await
                .map_err(SqsError::request("DeleteQueue"));
            match deleted {
                Err(err) if !err.is_missing_queue() => return Err(err),
                _ => {}
            }
        }
        Ok(())
    }

    /// Hands events to `handler` until `stop`, one at a time, in the order received: a message
    /// is deleted once its handler returned `Ok` (in one `DeleteMessageBatch` per receive, the
    /// visibility of the receive's messages extended meanwhile); on `Err` it becomes visible again after `retry_delay` (and, with a FIFO queue, the
    /// later messages of its grain received with it are released unhandled, to keep the
    /// order). After `max_attempts` failures the consumer copies it to the dead-letter queue
    /// (with the attribute `granary-failure` saying why) and deletes it, and its grain's later
    /// events go on.
    ///
    /// When SQS fails (unreachable, the queue gone) the consumer waits with growing delays,
    /// creates or verifies its queues again, and goes on: it returns only when stopped.
    ///
    /// # Cancel safety
    /// Stopping during a receive drops it: messages SQS handed to that receive stay invisible
    /// for the visibility timeout, then are delivered again. A handler already running is
    /// finished first.
    pub async fn run<F, Fut>(&mut self, handler: F, stop: CancellationToken)
    where
        F: Fn(EventEnvelope) -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        let mut backoff = Duration::from_millis(100);
        // Failed handler runs per SQS message id, while the message is retried.
        let mut failures: HashMap<String, u32> = HashMap::new();
        // After a failure, the queues are verified (created again if they vanished, with the
        // redrive policy) before the next receive.
        let mut verified = true;
        loop {
            if !verified {
                match self.set_up().await {
                    Ok(()) => verified = true,
                    Err(err) => {
                        tracing::warn!(queue = %self.queue, cause = %err, "cannot set the queues up; retrying");
                        if self.pause(&mut backoff, &stop).await {
                            return;
                        }
                        continue;
                    }
                }
            }
            let received = tokio::select! {
                received = self.receive() => received,
                () = stop.cancelled() => return,
            };
            match received {
                Ok(messages) => {
                    backoff = Duration::from_millis(100);
                    if failures.len() > 10_000 {
                        // Messages another consumer finished: forget them.
                        failures.clear();
                    }
                    if !self.handle(&messages, &handler, &mut failures).await {
                        // SQS went away under the deletes: it may come back empty, with the
                        // queue created again by a sink, without its redrive policy.
                        verified = false;
                    }
                }
                Err(err) => {
                    tracing::warn!(queue = %self.queue, cause = %err, "receive failed; retrying");
                    verified = false;
                    if self.pause(&mut backoff, &stop).await {
                        return;
                    }
                }
            }
        }
    }

    /// Waits `backoff` (doubling it up to 5 s); true if stopped meanwhile.
    async fn pause(&self, backoff: &mut Duration, stop: &CancellationToken) -> bool {
        let stopped = tokio::select! {
            () = tokio::time::sleep(*backoff) => false,
            () = stop.cancelled() => true,
        };
        *backoff = (*backoff * 2).min(Duration::from_secs(5));
        stopped
    }

    async fn receive(&self) -> Result<Vec<Message>, SqsError> {
        let wait = self.config.wait_time.min(Duration::from_secs(20));
        let output = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(i32::from(self.config.batch.clamp(1, 10)))
            .wait_time_seconds(seconds(wait))
            .visibility_timeout(seconds(self.config.visibility_timeout).max(1))
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
            .message_system_attribute_names(MessageSystemAttributeName::MessageDeduplicationId)
            .customize()
            .config_override(
                aws_sdk_sqs::config::Builder::default().timeout_config(
                    TimeoutConfig::builder()
                        .operation_attempt_timeout(wait + Duration::from_secs(10))
                        .build(),
                ),
            )
            .send()
            .await
            .map_err(SqsError::request("ReceiveMessage"))?;
        let messages = output.messages.unwrap_or_default();
        if !messages.is_empty() {
            tracing::debug!(queue = %self.queue, messages = messages.len(), "received");
        }
        Ok(messages)
    }

    /// Handles one receive's messages in order, then deletes the ones handled successfully;
    /// false if SQS could not be reached for the deletes.
    async fn handle<F, Fut>(
        &self,
        messages: &[Message],
        handler: &F,
        failures: &mut HashMap<String, u32>,
    ) -> bool
    where
        F: Fn(EventEnvelope) -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        // FIFO: the groups with a failed message; their later messages wait.
        let mut held: HashSet<String> = HashSet::new();
        // Messages still invisible on this consumer's behalf: handled and waiting for their
        // delete, or not handled yet. Their visibility is extended while a handler runs.
        let mut ours = vec![true; messages.len()];
        let mut handled = Vec::new();
        for (i, message) in messages.iter().enumerate() {
            let receipt = message.receipt_handle().unwrap_or_default();
            let group = message
                .attributes()
                .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId))
                .cloned();
            if self.fifo
                && let Some(group) = &group
                && held.contains(group)
            {
                tracing::debug!(queue = %self.queue, group, "held back behind a failed event");
                self.set_visibility(receipt, 0).await;
                ours[i] = false;
                continue;
            }
            let unfinished: Vec<&Message> = messages
                .iter()
                .zip(&ours)
                .filter_map(|(m, &ours)| ours.then_some(m))
                .collect();
            let id = message.message_id().unwrap_or_default().to_owned();
            match self.handle_one(message, handler, &unfinished).await {
                Ok(()) => {
                    failures.remove(&id);
                    handled.push(message);
                }
                Err(reason) => {
                    let attempt = failures.entry(id.clone()).or_default();
                    *attempt += 1;
                    let attempt = *attempt;
                    ours[i] = false;
                    if attempt >= self.config.max_attempts
                        && self.dead_letter(message, &reason, attempt).await
                    {
                        failures.remove(&id);
                        // Gone from the queue: its grain's later events go on.
                        continue;
                    }
                    tracing::warn!(queue = %self.queue, reason, attempt, "handler failed; retrying later");
                    self.set_visibility(receipt, seconds(self.config.retry_delay))
                        .await;
                    if let Some(group) = group {
                        held.insert(group);
                    }
                }
            }
        }
        self.delete_handled(&handled).await
    }

    /// Copies a message that failed its last attempt to the dead-letter queue, then deletes it;
    /// false if either failed (it is retried, and dead-lettered on its next failure).
    async fn dead_letter(&self, message: &Message, reason: &str, attempt: u32) -> bool {
        let mut attributes = message.message_attributes().cloned().unwrap_or_default();
        attributes.insert(
            FAILURE.to_owned(),
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value(format!("after {attempt} attempts: {reason}"))
                .build()
                .expect("data type is set"),
        );
        let system = message.attributes();
        let mut send = self
            .client
            .send_message()
            .queue_url(&self.dead_url)
            .message_body(message.body().unwrap_or_default())
            .set_message_attributes(Some(attributes));
        if self.fifo {
            let of = |name| system.and_then(|a| a.get(&name)).cloned();
            let fallback = message.message_id().unwrap_or("granary-dead").to_owned();
            send = send
                .message_group_id(
                    of(MessageSystemAttributeName::MessageGroupId).unwrap_or(fallback.clone()),
                )
                .message_deduplication_id(
                    of(MessageSystemAttributeName::MessageDeduplicationId).unwrap_or(fallback),
                );
        }
        if let Err(err) = send.send().await.map_err(SqsError::request("SendMessage")) {
            tracing::warn!(queue = %self.queue, cause = %err, "cannot dead-letter the event; retrying it");
            return false;
        }
        tracing::error!(queue = %self.queue, reason, attempt, "event moved to the dead-letter queue");
        match self
            .client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(message.receipt_handle().unwrap_or_default())
            .send()
            .await
            .map_err(SqsError::request("DeleteMessage"))
        {
            Ok(_) => true,
            Err(err) => {
                // Delivered again: the copy in the dead-letter queue is deduplicated (FIFO).
                tracing::warn!(queue = %self.queue, cause = %err, "dead-lettered event not deleted");
                false
            }
        }
    }

    /// Deletes handled messages. One that is not deleted is delivered again after its
    /// visibility timeout: consumers drop it by event id. False if SQS could not be reached.
    async fn delete_handled(&self, handled: &[&Message]) -> bool {
        if handled.is_empty() {
            return true;
        }
        let entries = handled
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .build()
                    .ok()
            })
            .collect::<Vec<_>>();
        match self
            .client
            .delete_message_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(SqsError::request("DeleteMessageBatch"))
        {
            Ok(output) if output.failed().is_empty() => true,
            Ok(output) => {
                tracing::warn!(queue = %self.queue, failed = output.failed().len(), "some deletes failed");
                true
            }
            Err(err) => {
                tracing::warn!(queue = %self.queue, cause = %err, "delete failed");
                false
            }
        }
    }

    /// Runs the handler on one message, extending the visibility of `unfinished` (the batch's
    /// messages not yet deleted or released) every half visibility timeout while it runs.
    async fn handle_one<F, Fut>(
        &self,
        message: &Message,
        handler: &F,
        unfinished: &[&Message],
    ) -> Result<(), String>
    where
        F: Fn(EventEnvelope) -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        let content_type = message
            .message_attributes()
            .and_then(|a| a.get(CONTENT_TYPE))
            .and_then(|v| v.string_value());
        let envelope = message::decode(message.body().unwrap_or_default(), content_type)
            .map_err(|e| format!("not an event envelope: {e}"))?;
        let timeout = self.config.visibility_timeout.max(Duration::from_secs(1));
        let half = timeout / 2;
        let handling = handler(envelope);
        tokio::pin!(handling);
        let mut extend = tokio::time::interval_at(tokio::time::Instant::now() + half, half);
        loop {
            tokio::select! {
                outcome = &mut handling => return outcome,
                _ = extend.tick() => self.extend(unfinished, seconds(timeout)).await,
            }
        }
    }

    /// Makes `messages` invisible for `seconds` more.
    async fn extend(&self, messages: &[&Message], seconds: i32) {
        let entries = messages
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .visibility_timeout(seconds)
                    .build()
                    .ok()
            })
            .collect::<Vec<_>>();
        let result = self
            .client
            .change_message_visibility_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(SqsError::request("ChangeMessageVisibilityBatch"));
        match result {
            Ok(output) if output.failed().is_empty() => {
                tracing::debug!(queue = %self.queue, messages = messages.len(), "visibility extended");
            }
            Ok(output) => {
                tracing::warn!(queue = %self.queue, failed = output.failed().len(), "visibility not extended for some messages");
            }
            Err(err) => {
                tracing::warn!(queue = %self.queue, cause = %err, "visibility not extended");
            }
        }
    }

    async fn set_visibility(&self, receipt: &str, seconds: i32) {
        if let Err(err) = self
            .client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .visibility_timeout(seconds)
            .send()
            .await
            .map_err(SqsError::request("ChangeMessageVisibility"))
        {
            // It becomes visible when its visibility timeout ends instead.
            tracing::warn!(queue = %self.queue, cause = %err, "visibility not changed");
        }
    }
}

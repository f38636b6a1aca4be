//! Granary events to RabbitMQ.
//!
//! - [`RabbitSink`] publishes each event to a durable topic exchange with the routing key
//!   `<prefix><topic>` (e.g. `match.ended`), persistent delivery mode, `message_id` = the event
//!   id and content type `application/json`, on a channel in confirm mode. It waits for every
//!   publisher confirm, and publishes with `mandatory`: RabbitMQ confirms an unroutable
//!   mandatory message *and* returns it, so a returned message is a failure (the events stay in
//!   the outbox until a queue is bound), as is a nack. A batch is published on one channel in
//!   the relay's order, commit order per grain across topics: a queue bound to several routing
//!   keys (`#`) holds each grain's events in commit order, whatever their types.
//! - [`RabbitConsumer`] consumes a quorum queue bound to the exchange, acks an event after its
//!   handler succeeded, and sets a failed one aside so that it does not block the others. Several
//!   consumers of one queue share its events. A failed event waits `retry_delay` in the
//!   `<queue>.retry` queue (a TTL queue that dead-letters back to this queue only), counted by
//!   the `x-granary-attempt` header; after `max_attempts` it goes to the dead-letter exchange.
//!
//! Message bodies are the [`EventEnvelope`], JSON (`application/json`) unless `with_format` chose
//! MessagePack (`application/msgpack`) for the topic, readable by any AMQP client.

use std::pin::Pin;
use std::task::Poll;

use futures::StreamExt;
use futures::future::BoxFuture;

use granary_events::{Encoded, EventEnvelope, Format, Outgoing, Sink, SinkError, Topics};
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};

use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
    PublisherConfirm,
};
use tokio_util::sync::CancellationToken;

/// Why talking to RabbitMQ failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RabbitError {
    /// The broker cannot be reached or refused the login.
    #[error("cannot connect to RabbitMQ at {uri}: {reason}. Is rabbitmq-server running?")]
    Connect {
        /// The URI, without password.
        uri: String,
        /// What failed.
        reason: String,
    },
    /// The broker did not confirm a message the consumer set aside.
    #[error("RabbitMQ did not confirm a message set aside for retry")]
    NotConfirmed,
    /// The broker refused a declaration or a command.
    #[error("RabbitMQ: {0}")]
    Broker(#[from] lapin::Error),
}

fn redacted(uri: &str) -> String {
    match (uri.find("://"), uri.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://…@{}", &uri[..scheme], &uri[at + 1..])
        }
        _ => uri.to_owned(),
    }
}

/// The certificates of a link to RabbitMQ over TLS (an `amqps://` URI): the CA that signed the
/// broker's certificate and the client certificate to present. The default (neither) trusts
/// the system's roots and presents none.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RabbitTls {
    /// The CA certificate(s) to trust (PEM), in addition to the system's roots.
    pub ca: Option<String>,
    /// The client certificate and its PKCS#8 private key (PEM), for a broker that verifies
    /// clients (`ssl_options.fail_if_no_peer_cert`).
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for RabbitTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the private key.
        f.debug_struct("RabbitTls")
            .field("ca", &self.ca.is_some())
            .field("client", &self.client.is_some())
            .finish()
    }
}

impl RabbitTls {
    fn config(&self) -> OwnedTLSConfig {
        OwnedTLSConfig {
            identity: self
                .client
                .clone()
                .map(|(pem, key)| OwnedIdentity::PKCS8 { pem, key }),
            cert_chain: self.ca.clone(),
        }
    }
}

/// How long connecting (TCP, TLS, the AMQP handshake and login) may take.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

async fn channel(uri: &str, tls: &RabbitTls) -> Result<Channel, RabbitError> {
    let failed = |reason: String| RabbitError::Connect {
        uri: redacted(uri),
        reason,
    };
    if tls != &RabbitTls::default() && !uri.starts_with("amqps://") {
        return Err(failed(
            "TLS certificates are set but the URI is not amqps://".into(),
        ));
    }
    let runtime = lapin::runtime::default_runtime().map_err(|e| failed(e.to_string()))?;
    let connect = Connection::connect_with_config(
        uri,
        ConnectionProperties::default(),
        tls.config(),
        runtime,
    );
    let connection = tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| failed(format!("no connection within {CONNECT_TIMEOUT:?}")))?
        .map_err(|e| failed(e.to_string()))?;
    Ok(connection.create_channel().await?)
}

async fn declare_exchange(channel: &Channel, exchange: &str) -> Result<(), RabbitError> {
    channel
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

/// Publishes events to a topic exchange with publisher confirms.
#[derive(Debug, Clone)]
pub struct RabbitSink {
    channel: Channel,
    exchange: String,
    topics: Topics,
}

impl RabbitSink {
    /// Connects to `uri` (e.g. `amqp://guest:guest@127.0.0.1:5672/%2f`), declares the durable
    /// topic exchange `exchange` and puts the channel in confirm mode. Routing keys are
    /// `<prefix><topic>`.
    ///
    /// # Errors
    /// [`RabbitError`] if the broker cannot be reached or refuses the exchange.
    pub async fn connect(uri: &str, exchange: &str, prefix: &str) -> Result<Self, RabbitError> {
        Self::connect_with_tls(uri, exchange, prefix, &RabbitTls::default()).await
    }

    /// As [`connect`](Self::connect), over TLS (an `amqps://` URI) with the certificates of
    /// `tls`.
    ///
    /// # Errors
    /// [`RabbitError::Connect`] if the broker cannot be reached, the TLS handshake fails (a
    /// broker certificate the CA did not sign, or expired; a broker without TLS on that port)
    /// or `tls` sets certificates for a URI that is not `amqps://`; [`RabbitError::Broker`] if
    /// it refuses the exchange.
    pub async fn connect_with_tls(
        uri: &str,
        exchange: &str,
        prefix: &str,
        tls: &RabbitTls,
    ) -> Result<Self, RabbitError> {
        let channel = channel(uri, tls).await?;
        declare_exchange(&channel, exchange).await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Self {
            channel,
            exchange: exchange.to_owned(),
            topics: Topics::new(prefix),
        })
    }

    /// Publishes the envelopes of `topic` in `format` (JSON unless set); the content type says
    /// which.
    #[must_use]
    pub fn with_format(mut self, topic: &str, format: Format) -> Self {
        self.topics = self.topics.with_format(topic, format);
        self
    }

    /// The routing key of `topic`.
    #[must_use]
    pub fn routing_key(&self, topic: &str) -> String {
        self.topics.name(topic)
    }
}

/// A publish polled once: its confirm, or the publish still waiting for its frames to be
/// written.
enum Publishing<F> {
    Done(PublisherConfirm),
    Writing(Pin<Box<F>>),
}

impl Sink for RabbitSink {
    fn name(&self) -> &str {
        "rabbitmq"
    }

    fn publish<'a>(&'a self, events: &'a [Outgoing]) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            let unavailable = |e: &dyn std::fmt::Display| SinkError::Unavailable {
                sink: "rabbitmq".into(),
                reason: e.to_string(),
            };
            // Published in the batch's order on one channel (a queue bound to several keys
            // keeps it), then every confirm awaited. A publish hands its frames to lapin's I/O
            // thread and then waits until that thread wrote them: awaited one by one, each
            // message would wait for a hand-over between threads (on a busy machine, a
            // scheduler slice). So each publish is polled once as soon as its envelope is
            // encoded, in order, which queues its frames on the channel (lapin queues them
            // before its first wait; the I/O thread writes them while the next is encoded),
            // and the writes are awaited together afterwards.
            let mut sends = Vec::with_capacity(events.len());
            for Encoded {
                name: key,
                event,
                format,
                bytes,
            } in self.topics.encode(events)
            {
                let properties = BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_message_id(event.id.as_str().into())
                    .with_content_type(format.content_type().into())
                    .with_type(event.type_name.as_str().into());
                let (channel, exchange, routing_key) =
                    (&self.channel, self.exchange.as_str(), (&*key).into());
                // The publish owns its bytes: queued now, written later.
                let mut send = Box::pin(async move {
                    channel
                        .basic_publish(
                            exchange.into(),
                            routing_key,
                            BasicPublishOptions {
                                mandatory: true,
                                ..Default::default()
                            },
                            &bytes,
                            properties,
                        )
                        .await
                });
                let send = match futures::poll!(send.as_mut()) {
                    Poll::Ready(sent) => Publishing::Done(sent.map_err(|e| unavailable(&e))?),
                    Poll::Pending => Publishing::Writing(send),
                };
                sends.push((event, key, send));
            }
            let mut confirms = Vec::with_capacity(sends.len());
            for (event, key, send) in sends {
                let confirm = match send {
                    Publishing::Done(confirm) => confirm,
                    Publishing::Writing(send) => send.await.map_err(|e| unavailable(&e))?,
                };
                confirms.push((event, key, confirm));
            }
            for (event, key, confirm) in confirms {
                match confirm.await.map_err(|e| unavailable(&e))? {
                    Confirmation::Ack(None) => {}
                    Confirmation::Ack(Some(_)) => {
                        // No queue bound (yet): not the event's fault, so not a refusal that
                        // leads to the dead-letter stream. The events wait in the outbox until
                        // a queue is bound.
                        return Err(SinkError::Unavailable {
                            sink: "rabbitmq".into(),
                            reason: format!(
                                "event {} returned: no queue is bound to routing key {key} on exchange {}",
                                event.id, self.exchange
                            ),
                        });
                    }
                    Confirmation::Nack(_) => {
                        return Err(SinkError::Unavailable {
                            sink: "rabbitmq".into(),
                            reason: format!("the broker nacked event {}", event.id),
                        });
                    }
                    Confirmation::NotRequested => {
                        return Err(SinkError::Unavailable {
                            sink: "rabbitmq".into(),
                            reason: "the channel is not in confirm mode".into(),
                        });
                    }
                }
            }
            Ok(())
        })
    }
}

/// How a [`RabbitConsumer`] reads and retries.
#[derive(Debug, Clone)]
pub struct RabbitConsumerConfig {
    /// Attempts at one event before it is dead-lettered. Default 5.
    pub max_attempts: u32,
    /// How long a failed event waits (in the `<queue>.retry` queue) before it is delivered
    /// again. Default 1 s.
    pub retry_delay: std::time::Duration,
    /// Unacknowledged events in flight to this consumer. Default 64.
    pub prefetch: u16,
    /// The certificates of a link over TLS (`amqps://`); default none (see [`RabbitTls`]).
    pub tls: RabbitTls,
}

impl Default for RabbitConsumerConfig {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            retry_delay: std::time::Duration::from_secs(1),
            prefetch: 64,
            tls: RabbitTls::default(),
        }
    }
}

/// The header counting a message's attempts.
const ATTEMPT: &str = "x-granary-attempt";

/// A consumer of a durable quorum queue bound to the events exchange.
#[derive(Debug)]
pub struct RabbitConsumer {
    channel: Channel,
    queue: String,
    max_attempts: u32,
}

impl RabbitConsumer {
    /// Declares the quorum queue `queue` (bound to `exchange` with `binding_key`, e.g.
    /// `match.*`), its dead-letter exchange `<queue>.dlx` and queue `<queue>.dead`.
    ///
    /// # Errors
    /// [`RabbitError`] if the broker cannot be reached or refuses a declaration.
    pub async fn connect(
        uri: &str,
        exchange: &str,
        queue: &str,
        binding_key: &str,
        config: RabbitConsumerConfig,
    ) -> Result<Self, RabbitError> {
        let channel = channel(uri, &config.tls).await?;
        declare_exchange(&channel, exchange).await?;
        let dlx = format!("{queue}.dlx");
        channel
            .exchange_declare(
                dlx.as_str().into(),
                ExchangeKind::Fanout,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        let dead = format!("{queue}.dead");
        channel
            .queue_declare(dead.as_str().into(), durable, FieldTable::default())
            .await?;
        channel
            .queue_bind(
                dead.as_str().into(),
                dlx.as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        // Failed events wait in `<queue>.retry` for `retry_delay`, then go back to this queue
        // only (through the default exchange), not to the other queues of the routing key.
        let mut retry = FieldTable::default();
        retry.insert(
            "x-message-ttl".into(),
            AMQPValue::LongLongInt(
                i64::try_from(config.retry_delay.as_millis()).unwrap_or(i64::MAX),
            ),
        );
        retry.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString("".into()),
        );
        retry.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(queue.into()),
        );
        channel
            .queue_declare(format!("{queue}.retry").as_str().into(), durable, retry)
            .await?;
        let mut arguments = FieldTable::default();
        arguments.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        // A safety net for events whose consumer keeps dying before it answers.
        arguments.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongInt(i32::try_from(config.max_attempts).unwrap_or(i32::MAX)),
        );
        arguments.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(dlx.as_str().into()),
        );
        channel
            .queue_declare(queue.into(), durable, arguments)
            .await?;
        channel
            .queue_bind(
                queue.into(),
                exchange.into(),
                binding_key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        channel
            .basic_qos(config.prefetch, BasicQosOptions::default())
            .await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Self {
            channel,
            queue: queue.to_owned(),
            max_attempts: config.max_attempts,
        })
    }

    /// Sends a failed event to the retry queue, or after `max_attempts` to the dead-letter
    /// exchange, and waits for the broker's confirm.
    async fn set_aside(
        &self,
        delivery: &lapin::message::Delivery,
        reason: &str,
    ) -> Result<(), RabbitError> {
        let attempt = delivery
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get(ATTEMPT).cloned())
            .and_then(|v| match v {
                AMQPValue::LongUInt(n) => Some(n),
                AMQPValue::LongInt(n) => u32::try_from(n).ok(),
                _ => None,
            })
            .unwrap_or(1);
        let dead = attempt >= self.max_attempts;
        let mut headers = FieldTable::default();
        headers.insert(ATTEMPT.into(), AMQPValue::LongUInt(attempt + 1));
        headers.insert(
            "x-granary-reason".into(),
            AMQPValue::LongString(reason.into()),
        );
        let properties = delivery.properties.clone().with_headers(headers);
        let (exchange, key) = if dead {
            tracing::error!(queue = %self.queue, reason, attempt, "event moved to the dead-letter queue");
            (format!("{}.dlx", self.queue), String::new())
        } else {
            tracing::warn!(queue = %self.queue, reason, attempt, "handler failed; retrying later");
            (String::new(), format!("{}.retry", self.queue))
        };
        let confirm = self
            .channel
            .basic_publish(
                exchange.as_str().into(),
                key.as_str().into(),
                BasicPublishOptions::default(),
                &delivery.data,
                properties,
            )
            .await?
            .await?;
        if matches!(confirm, Confirmation::Ack(_)) {
            Ok(())
        } else {
            Err(RabbitError::NotConfirmed)
        }
    }

    /// Deletes what [`connect`](Self::connect) declared for this consumer: its queue, retry
    /// and dead-letter queues and dead-letter exchange (not the shared events exchange), with
    /// any events still in them. For a consumer that is done for good, such as a demo's.
    ///
    /// # Errors
    /// [`RabbitError`] if the broker refuses.
    pub async fn delete(self) -> Result<(), RabbitError> {
        for queue in [
            self.queue.clone(),
            format!("{}.retry", self.queue),
            self.dead_letter_queue(),
        ] {
            self.channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await?;
        }
        self.channel
            .exchange_delete(
                format!("{}.dlx", self.queue).as_str().into(),
                ExchangeDeleteOptions::default(),
            )
            .await?;
        Ok(())
    }

    /// The dead-letter queue.
    #[must_use]
    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dead", self.queue)
    }

    /// Hands events to `handler` until `stop`.
    ///
    /// # Errors
    /// [`RabbitError`] if the consumer cannot be started.
    pub async fn run<F, Fut>(&self, handler: F, stop: CancellationToken) -> Result<(), RabbitError>
    where
        F: Fn(EventEnvelope) -> Fut,
        Fut: std::future::Future<Output = Result<(), String>>,
    {
        let mut deliveries = self
            .channel
            .basic_consume(
                self.queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        loop {
            let next = tokio::select! {
                next = deliveries.next() => next,
                () = stop.cancelled() => {
                    // Unsubscribe: the broker stops sending here and requeues what is unacked.
                    self.channel
                        .basic_cancel(deliveries.tag(), BasicCancelOptions::default())
                        .await?;
                    return Ok(());
                }
            };
            let delivery = match next {
                Some(Ok(delivery)) => delivery,
                Some(Err(err)) => return Err(err.into()),
                None => return Ok(()),
            };
            let outcome = match EventEnvelope::from_bytes(&delivery.data) {
                Ok(envelope) => handler(envelope).await,
                Err(err) => Err(format!("not an event envelope: {err}")),
            };
            let acked = match outcome {
                Ok(()) => delivery.ack(BasicAckOptions::default()).await,
                Err(reason) => match self.set_aside(&delivery, &reason).await {
                    // Set aside (to retry later, or dead): this copy is done.
                    Ok(()) => delivery.ack(BasicAckOptions::default()).await,
                    Err(err) => {
                        tracing::warn!(cause = %err, "cannot set the event aside; requeueing it");
                        delivery
                            .nack(BasicNackOptions {
                                requeue: true,
                                ..Default::default()
                            })
                            .await
                    }
                },
            };
            if let Err(err) = acked {
                // Unacknowledged: RabbitMQ delivers it again when the channel closes.
                tracing::warn!(cause = %err, "ack not sent");
            }
        }
    }
}

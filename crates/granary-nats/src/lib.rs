//! Granary events to NATS JetStream.
//!
//! - [`NatsSink`] publishes each event on `<prefix><topic>` with the header `Nats-Msg-Id` set
//!   to the event id, so that the server drops a re-published event (within the stream's
//!   duplicate window, 2 minutes by default), and waits for the server's acknowledgement of
//!   every event before the relay removes them from the outbox. The stream is created (or its
//!   existence checked) at start. A batch is published in the relay's order, commit order per
//!   grain across topics, and one stream keeps that order for all its subjects: a consumer of
//!   `<prefix>>` sees each grain's events in commit order, whatever their types.
//! - [`NatsConsumer`] is a durable pull consumer with explicit acks: an event is acknowledged
//!   after its handler succeeded, redelivered (after a delay) when the handler failed, and after
//!   `max_deliver` deliveries published to a dead-letter subject and terminated, so that it does
//!   not block the others. Several processes using one durable name share the events.
//!
//! Messages carry the [`EventEnvelope`] as payload, JSON unless `with_format` chose MessagePack
//! for the topic, readable by any NATS client.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::pull, context::PublishAckFuture};
use futures::StreamExt;
use futures::future::BoxFuture;

use granary_events::{Encoded, EventEnvelope, Format, Outgoing, Sink, SinkError, Topics};
use tokio_util::sync::CancellationToken;

/// Why talking to NATS failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NatsError {
    /// The server cannot be reached.
    #[error("cannot connect to NATS at {url}: {reason}. Is nats-server running with -js?")]
    Connect {
        /// The URL.
        url: String,
        /// What failed.
        reason: String,
    },
    /// JetStream refused a request (stream or consumer creation, a read).
    #[error("NATS JetStream: {0}")]
    JetStream(String),
}

fn js_error(err: impl std::fmt::Display) -> NatsError {
    NatsError::JetStream(err.to_string())
}

/// The certificates of a link to NATS over TLS: the CA that signed the server's certificate
/// and the client certificate to present. The default (neither) connects over TLS only when the
/// URL is `tls://…` or the server requires it, trusting the system's roots.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatsTls {
    /// The CA certificate(s) to trust (PEM file), in addition to the system's roots.
    pub ca: Option<PathBuf>,
    /// The client certificate and its private key (PEM files), for a server that verifies
    /// clients (`nats-server --tlsverify`).
    pub client: Option<(PathBuf, PathBuf)>,
}

impl NatsTls {
    /// Whether anything is set: the link then requires TLS.
    fn is_set(&self) -> bool {
        self.ca.is_some() || self.client.is_some()
    }
}

/// How long a connection attempt (TCP, TLS and the NATS greeting) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

async fn connect(url: &str, tls: &NatsTls) -> Result<jetstream::Context, NatsError> {
    let failed = |reason: String| NatsError::Connect {
        url: url.to_owned(),
        reason,
    };
    if tls.is_set() || url.starts_with("tls://") {
        // An `Err` means a provider is installed already: that one serves.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    let mut options = async_nats::ConnectOptions::new().connection_timeout(CONNECT_TIMEOUT);
    if let Some(ca) = &tls.ca {
        options = options.add_root_certificates(ca.clone());
    }
    if let Some((cert, key)) = &tls.client {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    if tls.is_set() {
        // Custom certificates mean TLS: a server that does not offer it is refused rather
        // than talked to in plaintext.
        options = options.require_tls(true);
    }
    // The client's own timeout covers one attempt; this bounds the whole connect.
    let client = tokio::time::timeout(CONNECT_TIMEOUT * 2, options.connect(url))
        .await
        .map_err(|_| failed(format!("no connection within {:?}", CONNECT_TIMEOUT * 2)))?
        .map_err(|e| failed(connect_reason(&e)))?;
    Ok(jetstream::new(client))
}

/// The error of a failed connect with its sources: async-nats's message alone ("tls error")
/// does not say which certificate was refused.
fn connect_reason(err: &async_nats::ConnectError) -> String {
    let mut reason = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !reason.contains(&cause_text) {
            reason = format!("{reason}: {cause_text}");
        }
        source = cause.source();
    }
    reason
}

/// Publishes events to a JetStream stream, deduplicated by event id on the server.
#[derive(Debug, Clone)]
pub struct NatsSink {
    js: jetstream::Context,
    topics: Topics,
}

impl NatsSink {
    /// Connects to `url` and creates (or checks) the stream `stream` capturing the subjects
    /// `<prefix>>` (e.g. prefix `events.` and topic `match.ended` give `events.match.ended`).
    ///
    /// # Errors
    /// [`NatsError`] if the server cannot be reached or refuses the stream.
    pub async fn connect(url: &str, stream: &str, prefix: &str) -> Result<Self, NatsError> {
        Self::connect_with_tls(url, stream, prefix, &NatsTls::default()).await
    }

    /// As [`connect`](Self::connect), over TLS with the certificates of `tls` (a `tls://` URL,
    /// or any URL once `tls` sets a certificate: the link then requires TLS).
    ///
    /// # Errors
    /// [`NatsError::Connect`] if the server cannot be reached or the TLS handshake fails (a
    /// server certificate the CA did not sign, or expired; a server without TLS; a client
    /// certificate it refuses), [`NatsError::JetStream`] if it refuses the stream.
    pub async fn connect_with_tls(
        url: &str,
        stream: &str,
        prefix: &str,
        tls: &NatsTls,
    ) -> Result<Self, NatsError> {
        let js = connect(url, tls).await?;
        js.get_or_create_stream(jetstream::stream::Config {
            name: stream.to_owned(),
            subjects: vec![format!("{prefix}>")],
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .map_err(js_error)?;
        Ok(Self {
            js,
            topics: Topics::new(prefix),
        })
    }

    /// Publishes the envelopes of `topic` in `format` (JSON unless set).
    #[must_use]
    pub fn with_format(mut self, topic: &str, format: Format) -> Self {
        self.topics = self.topics.with_format(topic, format);
        self
    }

    /// The subject of `topic`.
    #[must_use]
    pub fn subject(&self, topic: &str) -> String {
        self.topics.name(topic)
    }
}

impl Sink for NatsSink {
    fn name(&self) -> &str {
        "nats"
    }

    fn publish<'a>(&'a self, events: &'a [Outgoing]) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            let unavailable = |e: &dyn std::fmt::Display| SinkError::Unavailable {
                sink: "nats".into(),
                reason: e.to_string(),
            };
            // Send them all in the batch's order, then wait for every acknowledgement: the
            // stream keeps that order across its subjects.
            let mut acks: Vec<PublishAckFuture> = Vec::with_capacity(events.len());
            for Encoded {
                name: subject,
                event,
                bytes,
                ..
            } in self.topics.encode(events)
            {
                let message = jetstream::message::PublishMessage::build()
                    .payload(bytes.into())
                    .message_id(&event.id);
                let ack = self
                    .js
                    .send_publish(async_nats::Subject::from(&*subject), message)
                    .await
                    .map_err(|e| match e.kind() {
                        // Too large for the server: sending it again will not help.
                        jetstream::context::PublishErrorKind::MaxPayloadExceeded => {
                            SinkError::Refused {
                                sink: "nats".into(),
                                reason: format!("event {}: {e}", event.id),
                            }
                        }
                        _ => unavailable(&e),
                    })?;
                acks.push(ack);
            }
            for ack in acks {
                ack.await.map_err(|e| unavailable(&e))?;
            }
            Ok(())
        })
    }
}

/// How a [`NatsConsumer`] acknowledges and retries.
#[derive(Debug, Clone)]
pub struct NatsConsumerConfig {
    /// Deliveries of one event before it goes to the dead-letter subject. Default 5.
    pub max_deliver: i64,
    /// How long the server waits for an ack before redelivering. Default 30 s.
    pub ack_wait: Duration,
    /// Delay before a failed event is delivered again; it doubles with each delivery (at most a
    /// minute). Default 1 s.
    pub retry_delay: Duration,
    /// Where dead events are published (a stream must capture it to keep them); default
    /// `granary.dead.<durable name>`.
    pub dead_letter_subject: Option<String>,
    /// The certificates of a link over TLS; default none (see [`NatsTls`]).
    pub tls: NatsTls,
}

impl Default for NatsConsumerConfig {
    fn default() -> Self {
        Self {
            max_deliver: 5,
            ack_wait: Duration::from_secs(30),
            retry_delay: Duration::from_secs(1),
            dead_letter_subject: None,
            tls: NatsTls::default(),
        }
    }
}

/// A durable JetStream pull consumer of events.
#[derive(Debug)]
pub struct NatsConsumer {
    js: jetstream::Context,
    consumer: jetstream::consumer::Consumer<pull::Config>,
    dead_letter: String,
    config: NatsConsumerConfig,
}

impl NatsConsumer {
    /// The durable consumer `durable` of `stream`, receiving the subjects matching
    /// `filter_subject` (created if missing).
    ///
    /// # Errors
    /// [`NatsError`] if the server cannot be reached or the stream does not exist.
    pub async fn connect(
        url: &str,
        stream: &str,
        durable: &str,
        filter_subject: &str,
        config: NatsConsumerConfig,
    ) -> Result<Self, NatsError> {
        let js = connect(url, &config.tls).await?;
        let stream = js.get_stream(stream).await.map_err(js_error)?;
        let consumer = stream
            .get_or_create_consumer(
                durable,
                pull::Config {
                    durable_name: Some(durable.to_owned()),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: config.ack_wait,
                    max_deliver: config.max_deliver,
                    filter_subject: filter_subject.to_owned(),
                    ..Default::default()
                },
            )
            .await
            .map_err(js_error)?;
        Ok(Self {
            js,
            consumer,
            dead_letter: config
                .dead_letter_subject
                .clone()
                .unwrap_or_else(|| format!("granary.dead.{durable}")),
            config,
        })
    }

    /// Deletes this durable consumer from its stream (the stream and its events stay). For a
    /// consumer that is done for good, such as a demo's.
    ///
    /// # Errors
    /// [`NatsError`] if the server refuses.
    pub async fn delete(self) -> Result<(), NatsError> {
        let info = self.consumer.cached_info();
        let stream = self
            .js
            .get_stream(&info.stream_name)
            .await
            .map_err(js_error)?;
        stream.delete_consumer(&info.name).await.map_err(js_error)?;
        Ok(())
    }

    /// The dead-letter subject.
    #[must_use]
    pub fn dead_letter(&self) -> &str {
        &self.dead_letter
    }

    /// Hands events to `handler` until `stop`.
    ///
    /// # Errors
    /// [`NatsError`] if the message stream cannot be opened.
    pub async fn run<F, Fut>(&self, handler: F, stop: CancellationToken) -> Result<(), NatsError>
    where
        F: Fn(EventEnvelope) -> Fut,
        Fut: std::future::Future<Output = Result<(), String>>,
    {
        let mut messages = self.consumer.messages().await.map_err(js_error)?;
        loop {
            let next = tokio::select! {
                next = messages.next() => next,
                () = stop.cancelled() => return Ok(()),
            };
            let message = match next {
                Some(Ok(message)) => message,
                Some(Err(err)) => {
                    tracing::warn!(cause = %err, "NATS consumer read failed; going on");
                    continue;
                }
                None => return Ok(()),
            };
            let delivered = message.info().map_or(1, |i| i.delivered);
            let outcome = match EventEnvelope::from_bytes(&message.payload) {
                Ok(envelope) => handler(envelope).await,
                Err(err) => Err(format!("not an event envelope: {err}")),
            };
            let acked = match outcome {
                Ok(()) => message.ack().await,
                Err(reason) if delivered >= self.config.max_deliver => {
                    tracing::error!(subject = %message.subject, %reason, "event moved to the dead-letter subject");
                    let mut headers = async_nats::HeaderMap::new();
                    headers.insert("Granary-Dead-Reason", reason.as_str());
                    headers.insert("Granary-Dead-Subject", message.subject.as_str());
                    self.js
                        .publish_with_headers(
                            self.dead_letter.clone(),
                            headers,
                            message.payload.clone(),
                        )
                        .await
                        .map_err(js_error)?
                        .await
                        .map_err(js_error)?;
                    message.ack_with(AckKind::Term).await
                }
                Err(reason) => {
                    tracing::warn!(subject = %message.subject, %reason, delivered, "handler failed; the event will be delivered again");
                    // Backoff: the n-th retry waits `retry_delay * 2^(n-1)` (at most a minute).
                    let exponent = u32::try_from(delivered.saturating_sub(1).min(16)).unwrap_or(16);
                    let delay = self
                        .config
                        .retry_delay
                        .saturating_mul(1 << exponent)
                        .min(Duration::from_secs(60));
                    message.ack_with(AckKind::Nak(Some(delay))).await
                }
            };
            if let Err(err) = acked {
                // The server redelivers it after ack_wait: at least once.
                tracing::warn!(cause = %err, "ack not sent");
            }
        }
    }
}

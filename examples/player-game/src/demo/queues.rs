//! `--nats` / `--amqp` / `--kafka` / `--sqs`: a consumer on each queue the silos relay to,
//! counting the events of this run, so that the summary shows that every committed event
//! routed there arrived there too: all of them on NATS and RabbitMQ, `match.ended` on Kafka,
//! `player.died` on SQS.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use granary_events::EventEnvelope;
use granary_nats::{NatsConsumer, NatsConsumerConfig};
use granary_rabbitmq::{RabbitConsumer, RabbitConsumerConfig};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What one consumer has seen of this run's events.
#[derive(Default)]
struct Seen {
    ids: HashSet<String>,
    deliveries: u64,
}

enum Consumer {
    Nats(Arc<NatsConsumer>),
    Rabbit(Arc<RabbitConsumer>),
    #[cfg(feature = "kafka")]
    Kafka(Arc<granary_kafka::KafkaConsumer>),
    #[cfg(feature = "sqs")]
    Sqs(Arc<tokio::sync::Mutex<granary_sqs::SqsConsumer>>),
}

/// The event type the demo routes to Kafka (with `--kafka`).
pub(crate) const TO_KAFKA: &str = "match.ended";
/// The event type the demo routes to SQS (with `--sqs`).
pub(crate) const TO_SQS: &str = "player.died";

struct Tap {
    name: &'static str,
    /// The only event type routed to this queue; `None`: every type.
    only: Option<&'static str>,
    seen: Arc<Mutex<Seen>>,
    consumer: Consumer,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// The consumers of one run.
#[derive(Default)]
pub(crate) struct Taps {
    taps: Vec<Tap>,
}

/// The prefix of this run's Kafka topics and SQS queues (`GRANARY_QUEUE_PREFIX`).
pub(crate) fn queue_prefix(cluster: &str) -> String {
    format!("{cluster}.")
}

/// A handler counting the events of `origin` (this run's cluster) into `seen`.
fn counter(
    seen: Arc<Mutex<Seen>>,
    origin: String,
) -> impl Fn(EventEnvelope) -> std::future::Ready<Result<(), String>> + Send + 'static {
    move |event| std::future::ready(count(&seen, &origin, &event))
}

/// Logs why the consumer `name` stopped before it was told to.
fn report<E: std::fmt::Display>(name: &str, result: Result<(), E>) {
    if let Err(err) = result {
        tracing::error!(cause = %err, "{name} consumer stopped");
    }
}

impl Consumer {
    /// Deletes the consumer with what is its own, once its task let go of it.
    async fn delete(self) -> anyhow::Result<()> {
        match self {
            Self::Nats(c) => {
                if let Some(c) = Arc::into_inner(c) {
                    c.delete().await?;
                }
            }
            Self::Rabbit(c) => {
                if let Some(c) = Arc::into_inner(c) {
                    c.delete().await?;
                }
            }
            #[cfg(feature = "kafka")]
            Self::Kafka(c) => {
                if let Some(c) = Arc::into_inner(c) {
                    c.delete().await?;
                }
            }
            #[cfg(feature = "sqs")]
            Self::Sqs(c) => {
                if let Some(c) = Arc::into_inner(c) {
                    c.into_inner().delete().await?;
                }
            }
        }
        Ok(())
    }
}

/// Counts the events of `origin` (this run's cluster) that `event` brings.
fn count(seen: &Mutex<Seen>, origin: &str, event: &EventEnvelope) -> Result<(), String> {
    if event.id.starts_with(origin) {
        let mut seen = seen.lock().map_err(|e| e.to_string())?;
        seen.deliveries += 1;
        seen.ids.insert(event.id.clone());
    }
    Ok(())
}

impl Taps {
    /// A RabbitMQ consumer, bound before the silos start (a topic exchange drops what no queue
    /// is bound to; the relay keeps such events in the outbox until one is).
    pub(crate) async fn add_rabbit(&mut self, cluster: &str, uri: &str) -> anyhow::Result<()> {
        let consumer = RabbitConsumer::connect(
            uri,
            "granary.events",
            &format!("{cluster}.demo"),
            "#",
            RabbitConsumerConfig::default(),
        )
        .await
        .with_context(|| format!("cannot use RabbitMQ at {uri}"))?;
        self.add(
            "RabbitMQ",
            None,
            cluster,
            Consumer::Rabbit(Arc::new(consumer)),
        );
        Ok(())
    }

    /// A NATS JetStream consumer of the silos' stream (which the silos create when they start).
    pub(crate) async fn add_nats(&mut self, cluster: &str, url: &str) -> anyhow::Result<()> {
        let consumer = NatsConsumer::connect(
            url,
            "GRANARY_EVENTS",
            &format!("{cluster}-demo"),
            "events.>",
            NatsConsumerConfig::default(),
        )
        .await
        .with_context(|| format!("cannot use NATS at {url}"))?;
        self.add(
            "NATS JetStream",
            None,
            cluster,
            Consumer::Nats(Arc::new(consumer)),
        );
        Ok(())
    }

    /// A Kafka consumer (a group of its own) of the `match.ended` topic of this run.
    #[cfg(feature = "kafka")]
    pub(crate) async fn add_kafka(&mut self, cluster: &str, brokers: &str) -> anyhow::Result<()> {
        let topic = format!("{}{TO_KAFKA}", queue_prefix(cluster));
        let consumer = granary_kafka::KafkaConsumer::connect(
            brokers,
            &format!("{cluster}.demo"),
            &[&topic],
            granary_kafka::KafkaConsumerConfig::default(),
        )
        .await
        .with_context(|| format!("cannot use Kafka at {brokers}"))?;
        self.add(
            "Kafka",
            Some(TO_KAFKA),
            cluster,
            Consumer::Kafka(Arc::new(consumer)),
        );
        Ok(())
    }

    /// An SQS consumer of the `player.died` queue of this run.
    #[cfg(feature = "sqs")]
    pub(crate) async fn add_sqs(&mut self, cluster: &str, endpoint: &str) -> anyhow::Result<()> {
        let endpoint = if endpoint == "aws" {
            granary_sqs::SqsEndpoint::aws()
        } else {
            granary_sqs::SqsEndpoint::url(endpoint)
        };
        let queue = granary_sqs::queue_name(&queue_prefix(cluster), TO_SQS, true)?;
        let config = granary_sqs::SqsConsumerConfig {
            // Short polls, so that the demo's end does not wait for a long one.
            wait_time: Duration::from_secs(1),
            ..granary_sqs::SqsConsumerConfig::default()
        };
        let consumer = granary_sqs::SqsConsumer::connect(endpoint.client().await, &queue, config)
            .await
            .with_context(|| format!("cannot use SQS queue {queue}"))?;
        self.add(
            "SQS",
            Some(TO_SQS),
            cluster,
            Consumer::Sqs(Arc::new(tokio::sync::Mutex::new(consumer))),
        );
        Ok(())
    }

    fn add(
        &mut self,
        name: &'static str,
        only: Option<&'static str>,
        cluster: &str,
        consumer: Consumer,
    ) {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = CancellationToken::new();
        let handler = counter(seen.clone(), format!("{cluster}."));
        let token = stop.clone();
        let task = match &consumer {
            Consumer::Nats(c) => {
                let c = c.clone();
                tokio::spawn(async move { report(name, c.run(handler, token).await) })
            }
            Consumer::Rabbit(c) => {
                let c = c.clone();
                tokio::spawn(async move { report(name, c.run(handler, token).await) })
            }
            #[cfg(feature = "kafka")]
            Consumer::Kafka(c) => {
                let c = c.clone();
                tokio::spawn(async move { report(name, c.run(handler, token).await) })
            }
            #[cfg(feature = "sqs")]
            Consumer::Sqs(c) => {
                let c = c.clone();
                tokio::spawn(async move { c.lock().await.run(handler, token).await })
            }
        };
        self.taps.push(Tap {
            name,
            only,
            seen,
            consumer,
            stop,
            task,
        });
    }

    /// Waits until every consumer has received each of the `committed` events routed to its
    /// queue, and prints what each got.
    pub(crate) async fn settle(&self, committed: &[EventEnvelope]) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut missing_anywhere = false;
        for tap in &self.taps {
            let expected: HashSet<&str> = committed
                .iter()
                .filter(|e| tap.only.is_none_or(|only| e.type_name == only))
                .map(|e| e.id.as_str())
                .collect();
            let missing = loop {
                let missing = {
                    let seen = tap.seen.lock().map_err(|e| anyhow::anyhow!("{e}"))?;
                    expected
                        .iter()
                        .filter(|id| !seen.ids.contains(**id))
                        .count()
                };
                if missing == 0 || tokio::time::Instant::now() > deadline {
                    break missing;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            let seen = tap.seen.lock().map_err(|e| anyhow::anyhow!("{e}"))?;
            let again = seen.deliveries - seen.ids.len() as u64;
            println!(
                "  {} consumer: {} of {} {} events ({again} delivered again, dropped by id){}",
                tap.name,
                expected.len() - missing,
                expected.len(),
                tap.only.unwrap_or("committed"),
                if missing > 0 { "  MISSING" } else { "" }
            );
            missing_anywhere |= missing > 0;
        }
        if missing_anywhere {
            bail!("a queue did not receive every committed event within a minute");
        }
        Ok(())
    }

    /// Stops the consumers and deletes them with what is theirs (queues, consumer groups,
    /// dead-letter destinations): a demo's queues are not left to fill, whether it ended or was
    /// interrupted.
    pub(crate) async fn close(&mut self) -> anyhow::Result<()> {
        for tap in std::mem::take(&mut self.taps) {
            tap.stop.cancel();
            let _ = tap.task.await;
            tap.consumer.delete().await?;
        }
        Ok(())
    }
}

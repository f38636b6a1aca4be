//! `--nats` / `--amqp`: a consumer on each queue the silos relay to, counting the events of
//! this run, so that the summary shows every committed event arrived there too.

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
}

struct Tap {
    name: &'static str,
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
        self.add("RabbitMQ", cluster, Consumer::Rabbit(Arc::new(consumer)));
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
            cluster,
            Consumer::Nats(Arc::new(consumer)),
        );
        Ok(())
    }

    fn add(&mut self, name: &'static str, cluster: &str, consumer: Consumer) {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = CancellationToken::new();
        let origin = format!("{cluster}.");
        let task = {
            let (seen, stop) = (seen.clone(), stop.clone());
            match &consumer {
                Consumer::Nats(c) => {
                    let c = c.clone();
                    tokio::spawn(async move {
                        let handler = |event: EventEnvelope| {
                            let result = count(&seen, &origin, &event);
                            async move { result }
                        };
                        if let Err(err) = c.run(handler, stop).await {
                            tracing::error!(cause = %err, "NATS consumer stopped");
                        }
                    })
                }
                Consumer::Rabbit(c) => {
                    let c = c.clone();
                    tokio::spawn(async move {
                        let handler = |event: EventEnvelope| {
                            let result = count(&seen, &origin, &event);
                            async move { result }
                        };
                        if let Err(err) = c.run(handler, stop).await {
                            tracing::error!(cause = %err, "RabbitMQ consumer stopped");
                        }
                    })
                }
            }
        };
        self.taps.push(Tap {
            name,
            seen,
            consumer,
            stop,
            task,
        });
    }

    /// Waits until every consumer has received each of `expected`, prints what each got, and
    /// deletes the consumers (a demo's queues are not left to fill).
    pub(crate) async fn settle(self, expected: &HashSet<&str>) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut missing_anywhere = false;
        for tap in &self.taps {
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
                "  {} consumer: {} of {} events ({again} delivered again, dropped by id){}",
                tap.name,
                expected.len() - missing,
                expected.len(),
                if missing > 0 { "  MISSING" } else { "" }
            );
            missing_anywhere |= missing > 0;
        }
        for tap in self.taps {
            tap.stop.cancel();
            let _ = tap.task.await;
            match tap.consumer {
                Consumer::Nats(c) => {
                    if let Some(c) = Arc::into_inner(c) {
                        c.delete().await?;
                    }
                }
                Consumer::Rabbit(c) => {
                    if let Some(c) = Arc::into_inner(c) {
                        c.delete().await?;
                    }
                }
            }
        }
        if missing_anywhere {
            bail!("a queue did not receive every committed event within a minute");
        }
        Ok(())
    }
}

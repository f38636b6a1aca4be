//! P7: the relay's throughput to each sink against a raw client publishing the same payloads
//! with the same batching (one batch of 512 in flight, as the relay does), and the relay's
//! commit-to-delivery p99 on Redis Streams.
//!
//! The sinks: Redis Streams (`GRANARY_BENCH_REDIS`), NATS JetStream (`GRANARY_BENCH_NATS`) and
//! RabbitMQ (`GRANARY_BENCH_AMQP`) on the local servers by default; Kafka
//! (`GRANARY_BENCH_KAFKA`, bootstrap servers) and SQS (`GRANARY_BENCH_SQS`, the endpoint URL of
//! an SQS-compatible server, signed as `granary`/`granary`) on a private `tansu` broker and a
//! private `moto_server` by default, started once per run ([`Servers`]). The raw baselines:
//!
//! - Kafka: a producer with the sink's configuration (`acks=all`, idempotent unless the sink
//!   fell back, the same `linger.ms` and partitioner) producing the records the sink writes
//!   (key = source grain, the three headers, the JSON envelope, the commit timestamp) to a
//!   topic of the same layout, every delivery report awaited.
//! - SQS: `SendMessageBatch` of 10 entries (the sink's entries: FIFO group = source grain,
//!   deduplication id = event id, the three attributes, the JSON body) to a FIFO queue, 4
//!   batches in flight (the sink's default lanes). The sink gives each grain one lane, so its
//!   lanes carry unequal shares of a batch; the baseline keeps 4 requests in flight to the end.
//!
//! Each side runs in rounds ([`Rounds`]): a round is 20,000 events (the relay: a fresh
//! in-memory outbox of 20,000 committed events, delivered by a relay started on it; the raw
//! client: the same events' envelopes, 512 at a time), and both sides run rounds until each has
//! spent at least 1 s on its clock (a round took 70–100 ms: alone, noise decided the ratio).
//! Between rounds, off the clock, the queues both sides write to are emptied (Redis streams
//! deleted, the NATS stream purged, the RabbitMQ queue purged; Kafka topics left to grow), so
//! that every round starts as the first. A side's rate is all its events over all its clock
//! time. SQS runs one round (below).
//!
//! What the relay side does that the raw side does not, by design (it is the relay's work): it
//! reads each batch from the outbox (a copy of each entry), turns each entry into its envelope
//! (the event id, the JSON check of the payload), and acknowledges the batch after the sink
//! confirmed; its clock stops when the relay reports every event delivered and removed
//! ([`Relay::delivered_at_least`], no polling). The raw side gets the envelopes already
//! decoded (outside the clock) and encodes each to JSON as the sink does. The relay reads and
//! decodes its next batch while one is published, one publish in flight as on the raw side.
//! Under callgrind (`--quick`, Redis Streams) the raw pipeline costs about 12,400 instructions
//! per event and the sink's publish under 8,600 (each XADD sized once, every envelope encoded
//! into one buffer kept for the batch, where the raw side builds a `Vec` per envelope and grows
//! each command argument by argument); the relay adds about 2,400 for the envelope and under
//! 1,500 for the outbox read and the acknowledgement. The RabbitMQ sink queues each message of
//! a batch on the channel without waiting for lapin's I/O thread to write it, where the raw
//! client awaits each `basic_publish` (a hand-over between threads per message) before its
//! confirms.
//!
//! The two sides' rounds alternate ([`Rounds::compare`]: a pair of rounds at a time, ABBA), so
//! that both see the machine as it changes (on a shared machine: builds, other benchmarks);
//! which side goes first alternates between repetitions too ([`Order`]).
//!
//! Topics and queues exist before the clock starts on both sides (and both Kafka producers
//! have started), and are deleted afterwards. SQS runs 500 events, not 20,000 (100 and 2,000
//! with `--quick`): moto (a Python server) checks each FIFO message against every message of
//! the queue, so a batch takes longer the fuller the queue, and moto's time dominates both
//! sides.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{MessageAttributeValue, QueueAttributeName, SendMessageBatchRequestEntry};
use futures::StreamExt as _;
use granary::provider::{Claim, Commit, GrainAddress, MemoryStore, StateChange, StateStore};
use granary::{ActivationId, GrainId, PublishedEvent, SiloId};
use granary_events::{EventEnvelope, Outgoing, Relay, Sink};
use granary_kafka::{KafkaSink, KafkaSinkConfig, TopicLayout};
use granary_redis::{RedisConfig, RedisStore, RedisStreamsSink};
use granary_sqs::{SqsEndpoint, SqsSink};
use granary_testkit::moto_server::PrivateMoto;
use granary_testkit::tansu_server::PrivateTansu;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use tokio::runtime::Runtime;

use crate::engines::multi_thread;

const BATCH: usize = 512;
/// Entries per `SendMessageBatch`: SQS's limit, as the sink sends.
const SQS_BATCH: usize = 10;
/// Batches in flight: [`SqsSink`]'s default lanes.
const SQS_LANES: usize = 4;

pub(crate) fn name() -> String {
    format!("bench{}", uuid::Uuid::now_v7().simple())
}

/// An in-memory outbox holding `n` committed events of 100 grains, and their envelopes.
async fn filled_outbox(n: usize) -> (Arc<MemoryStore>, Vec<EventEnvelope>) {
    let store = Arc::new(MemoryStore::new());
    let grains = 100;
    for g in 0..grains {
        let grain = GrainId::new("bench.match", g as i64);
        let address = GrainAddress {
            grain: grain.clone(),
            silo: SiloId::new("bench", 1),
            activation: ActivationId::new(),
        };
        let Ok(Claim::Won(_)) = store.claim(&address, None).await else {
            unreachable!("a fresh store has no owners");
        };
        // Exactly `n` in all: the first `n % grains` grains take one more.
        let per_grain = n / grains + usize::from(g < n % grains);
        let mut version = 0;
        for chunk in (0..per_grain).collect::<Vec<_>>().chunks(10) {
            let events = chunk
                .iter()
                .map(|i| PublishedEvent {
                    type_name: "match.ended".into(),
                    payload: format!("{{\"match\":{g},\"round\":{i},\"winner\":\"player-{i}\"}}")
                        .into_bytes(),
                    trace: None,
                })
                .collect();
            version = store
                .commit(Commit {
                    grain: grain.clone(),
                    activation: address.activation,
                    expected_version: version,
                    change: StateChange::Unchanged,
                    events,
                    reminders: Vec::new(),
                })
                .await
                .expect("commit");
        }
    }
    let envelopes = store
        .outbox_entries()
        .iter()
        .map(|e| EventEnvelope::from_entry(e).expect("JSON"))
        .collect();
    (store, envelopes)
}

/// How long each side of a sink runs: rounds of `n` events until `min` passed on its clock,
/// with `reset` before each round but the first (off the clock) emptying the queues both sides
/// write to, so that every round starts as the first did.
#[derive(Clone, Copy)]
struct Rounds<'a> {
    n: usize,
    min: Duration,
    reset: &'a dyn Fn(),
}

impl Rounds<'_> {
    /// Events per second over the rounds: `round` runs one and returns its clock time.
    fn rate(&self, mut round: impl FnMut() -> Duration) -> f64 {
        let (mut events, mut clock) = (0, Duration::ZERO);
        loop {
            clock += round();
            events += self.n;
            if clock >= self.min {
                break;
            }
            (self.reset)();
        }
        events as f64 / clock.as_secs_f64()
    }

    /// Both sides' events per second, (relay, raw): their rounds alternate, a pair at a time
    /// (ABBA: the side `order` names first, then the other, then the other again, …), until
    /// each side has run `min`; so both sides run as many rounds, and see the same machine
    /// (builds, other benchmarks) as it changes.
    fn compare(
        &self,
        order: Order,
        mut relay: impl FnMut() -> Duration,
        mut raw: impl FnMut() -> Duration,
    ) -> (f64, f64) {
        let (mut relay_clock, mut raw_clock) = (Duration::ZERO, Duration::ZERO);
        let mut rounds = 0;
        for pair in 0.. {
            let relay_first = (order == Order::RelayFirst) == (pair % 2 == 0);
            for relay_now in [relay_first, !relay_first] {
                if pair > 0 || relay_now != relay_first {
                    (self.reset)();
                }
                if relay_now {
                    relay_clock += relay();
                } else {
                    raw_clock += raw();
                }
            }
            rounds += 1;
            if relay_clock >= self.min && raw_clock >= self.min {
                break;
            }
        }
        let events = (rounds * self.n) as f64;
        (
            events / relay_clock.as_secs_f64(),
            events / raw_clock.as_secs_f64(),
        )
    }
}

/// One round of the relay: a relay starts on an outbox of `n` events; the clock stops when it
/// has delivered them all (it is told, not polled).
fn relay_round(rt: &Runtime, n: usize, sink: &Arc<dyn Sink>) -> Duration {
    rt.block_on(async {
        let (store, _) = filled_outbox(n).await;
        let start = Instant::now();
        let relay = Relay::builder(store.clone()).sink(sink.clone()).start();
        let delivered =
            tokio::time::timeout(Duration::from_secs(120), relay.delivered_at_least(n as u64))
                .await;
        let clock = start.elapsed();
        assert_eq!(relay.failures(), 0, "the benchmark's sink failed");
        assert!(
            delivered.is_ok(),
            "the relay did not deliver {n} events in 2 minutes"
        );
        relay.stop().await;
        clock
    })
}

/// One round of the raw side: the envelopes of `n` events handed to `publish`, 512 at a time.
fn direct_round(
    rt: &Runtime,
    n: usize,
    publish: &dyn Fn(Vec<EventEnvelope>) -> futures::future::BoxFuture<'static, ()>,
) -> Duration {
    rt.block_on(async {
        let (_, envelopes) = filled_outbox(n).await;
        let start = Instant::now();
        for chunk in envelopes.chunks(BATCH) {
            publish(chunk.to_vec()).await;
        }
        start.elapsed()
    })
}

/// Which side of a sink runs first in a repetition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Order {
    /// The relay, then the raw client.
    RelayFirst,
    /// The raw client, then the relay.
    RawFirst,
}

impl Order {
    /// ABBA over repetitions (relay first, raw first, raw first, relay first, …): over every
    /// four repetitions each side runs first twice and at each position of the pair twice.
    pub(crate) fn of_rep(rep: usize) -> Self {
        if matches!(rep % 4, 0 | 3) {
            Self::RelayFirst
        } else {
            Self::RawFirst
        }
    }
}

/// The sinks' runs: (name, events, relay, raw).
pub(crate) struct P7 {
    pub(crate) results: Vec<(&'static str, usize, f64, f64)>,
    /// Measured with Redis Streams, when that sink runs.
    pub(crate) delivery_p99_ms: Option<f64>,
}

/// The P7 sinks, in the order they run.
pub(crate) const SINKS: [&str; 5] = ["redis-streams", "nats", "rabbitmq", "kafka", "sqs"];

/// The Kafka broker and SQS server of a P7 run: the ones `GRANARY_BENCH_KAFKA` and
/// `GRANARY_BENCH_SQS` name, else a private `tansu` broker and `moto_server`, stopped on drop.
/// Only the servers of the sinks that run: an idle broker of a sink that does not run would
/// still share the machine's cores with the sides being measured.
pub(crate) struct Servers {
    kafka: Option<String>,
    sqs: Option<String>,
    _tansu: Option<PrivateTansu>,
    _moto: Option<PrivateMoto>,
}

impl Servers {
    /// Connects to the external servers, or starts the private ones, of the sinks `wanted`
    /// names.
    ///
    /// # Panics
    /// If a private server cannot start (`tansu` or `moto_server` not installed).
    pub(crate) fn start(wanted: &dyn Fn(&str) -> bool) -> Self {
        let rt = multi_thread(1);
        let (kafka, tansu) = match std::env::var("GRANARY_BENCH_KAFKA") {
            _ if !wanted("kafka") => (None, None),
            Ok(brokers) => (Some(brokers), None),
            Err(_) => {
                let tansu = rt.block_on(PrivateTansu::start());
                (Some(tansu.brokers()), Some(tansu))
            }
        };
        let (sqs, moto) = match std::env::var("GRANARY_BENCH_SQS") {
            _ if !wanted("sqs") => (None, None),
            Ok(url) => (Some(url), None),
            Err(_) => {
                let moto = rt.block_on(PrivateMoto::start());
                (Some(moto.url()), Some(moto))
            }
        };
        Self {
            kafka,
            sqs,
            _tansu: tansu,
            _moto: moto,
        }
    }
}

pub(crate) fn redis_url() -> String {
    std::env::var("GRANARY_BENCH_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// One repetition of the P7 measurements of the sinks `wanted` names: rounds of `n` events for
/// at least `min` per side, one round of `sqs_events` to SQS, each sink's two sides in
/// `order`.
pub(crate) fn p7(
    n: usize,
    min: Duration,
    sqs_events: usize,
    servers: &Servers,
    order: Order,
    wanted: &dyn Fn(&str) -> bool,
) -> P7 {
    let rt = multi_thread(2);
    let mut results = Vec::new();
    let mut delivery_p99_ms = None;
    if wanted("redis-streams") {
        let (result, p99) = redis_streams(&rt, n, min, order);
        results.push(result);
        delivery_p99_ms = Some(p99);
    }
    if wanted("nats") {
        results.push(nats(&rt, n, min, order));
    }
    if wanted("rabbitmq") {
        results.push(rabbitmq(&rt, n, min, order));
    }
    if wanted("kafka") {
        let brokers = servers.kafka.as_deref().expect("started for kafka");
        let (relay, raw) = kafka(&rt, n, min, brokers, order);
        results.push(("kafka", n, relay, raw));
    }
    if wanted("sqs") {
        let url = servers.sqs.as_deref().expect("started for sqs");
        let (relay, raw) = sqs(&rt, sqs_events, url, order);
        results.push(("sqs", sqs_events, relay, raw));
    }
    P7 {
        results,
        delivery_p99_ms,
    }
}

/// A sink's run: (name, events, relay, raw).
type Run = (&'static str, usize, f64, f64);

/// Redis Streams: the sink vs pipelined XADDs of the same entries; and the delivery p99.
fn redis_streams(rt: &Runtime, n: usize, min: Duration, order: Order) -> (Run, f64) {
    let store = rt.block_on(async {
        Arc::new(
            RedisStore::connect(RedisConfig::new(redis_url(), name()))
                .await
                .expect("P7 needs Redis (GRANARY_BENCH_REDIS)"),
        )
    });
    let prefix = format!("{}:", name());
    let sink = Arc::new(RedisStreamsSink::new(store.clone(), &prefix));
    let conn = rt.block_on(async {
        redis::Client::open(redis_url())
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect")
    });
    let stream = format!("{prefix}raw");
    let streams = [sink.stream("match.ended"), stream.clone()];
    let reset = || {
        rt.block_on(async {
            let _: () = redis::cmd("DEL")
                .arg(&streams)
                .query_async(&mut conn.clone())
                .await
                .expect("empty the streams");
        });
    };
    let rounds = Rounds {
        n,
        min,
        reset: &reset,
    };
    let to: Arc<dyn Sink> = sink.clone();
    let relay = || relay_round(rt, n, &to);
    let raw = || {
        direct_round(rt, n, &|events| {
            let (mut conn, stream) = (conn.clone(), stream.clone());
            Box::pin(async move {
                let mut pipe = redis::pipe();
                for e in &events {
                    pipe.cmd("XADD")
                        .arg(&stream)
                        .arg("*")
                        .arg("id")
                        .arg(&e.id)
                        .arg("type")
                        .arg(&e.type_name)
                        .arg("event")
                        .arg(e.to_json());
                }
                let _: Vec<String> = pipe.query_async(&mut conn).await.expect("xadd");
            })
        })
    };
    let (relay, raw) = rounds.compare(order, relay, raw);
    let delivery_p99_ms = rt.block_on(delivery_p99(store.clone(), &prefix));
    rt.block_on(async {
        let mut conn = conn.clone();
        let _: () = redis::cmd("DEL")
            .arg(sink.stream("match.ended"))
            .arg(&stream)
            .arg(sink.stream("delivery"))
            .query_async(&mut conn)
            .await
            .expect("clean up");
    });
    (("redis-streams", n, relay, raw), delivery_p99_ms)
}

/// NATS JetStream: the sink vs publishing with Nats-Msg-Id and awaiting the acks.
fn nats(rt: &Runtime, n: usize, min: Duration, order: Order) -> Run {
    let url =
        std::env::var("GRANARY_BENCH_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let stream_name = name();
    let nats = rt.block_on(async {
        Arc::new(
            granary_nats::NatsSink::connect(&url, &stream_name, &format!("{stream_name}."))
                .await
                .expect("P7 needs NATS (GRANARY_BENCH_NATS)"),
        )
    });
    let js = rt.block_on(async {
        async_nats::jetstream::new(async_nats::connect(&url).await.expect("nats"))
    });
    let subject = format!("{stream_name}.raw");
    // Both sides publish to the one stream.
    let reset = || {
        rt.block_on(async {
            js.get_stream(&stream_name)
                .await
                .expect("the stream")
                .purge()
                .await
                .expect("empty the stream");
        });
    };
    let rounds = Rounds {
        n,
        min,
        reset: &reset,
    };
    let to: Arc<dyn Sink> = nats;
    let relay = || relay_round(rt, n, &to);
    let raw = || {
        direct_round(rt, n, &|events| {
            let (js, subject) = (js.clone(), subject.clone());
            Box::pin(async move {
                let mut acks = Vec::with_capacity(events.len());
                for e in &events {
                    let message = async_nats::jetstream::message::PublishMessage::build()
                        .payload(e.to_json().into())
                        .message_id(format!("raw-{}", e.id));
                    acks.push(
                        js.send_publish(subject.clone(), message)
                            .await
                            .expect("publish"),
                    );
                }
                for ack in acks {
                    ack.await.expect("ack");
                }
            })
        })
    };
    let (relay, raw) = rounds.compare(order, relay, raw);
    rt.block_on(async {
        let _ = js.delete_stream(&stream_name).await;
    });
    ("nats", n, relay, raw)
}

/// RabbitMQ: the sink vs publishing with confirms (a queue bound so nothing returns).
fn rabbitmq(rt: &Runtime, n: usize, min: Duration, order: Order) -> Run {
    let uri = std::env::var("GRANARY_BENCH_AMQP")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let exchange = name();
    let (rabbit, channel) = rt.block_on(async {
        let sink = Arc::new(
            granary_rabbitmq::RabbitSink::connect(&uri, &exchange, "")
                .await
                .expect("P7 needs RabbitMQ (GRANARY_BENCH_AMQP)"),
        );
        let connection = lapin::Connection::connect(&uri, lapin::ConnectionProperties::default())
            .await
            .expect("amqp");
        let channel = connection.create_channel().await.expect("channel");
        channel
            .queue_declare(
                exchange.as_str().into(),
                lapin::options::QueueDeclareOptions::default(),
                lapin::types::FieldTable::default(),
            )
            .await
            .expect("queue");
        channel
            .queue_bind(
                exchange.as_str().into(),
                exchange.as_str().into(),
                "#".into(),
                lapin::options::QueueBindOptions::default(),
                lapin::types::FieldTable::default(),
            )
            .await
            .expect("bind");
        channel
            .confirm_select(lapin::options::ConfirmSelectOptions::default())
            .await
            .expect("confirms");
        (sink, channel)
    });
    // Both sides publish to the exchange the one queue is bound to.
    let reset = || {
        rt.block_on(async {
            channel
                .queue_purge(
                    exchange.as_str().into(),
                    lapin::options::QueuePurgeOptions::default(),
                )
                .await
                .expect("empty the queue");
        });
    };
    let rounds = Rounds {
        n,
        min,
        reset: &reset,
    };
    let to: Arc<dyn Sink> = rabbit;
    let relay = || relay_round(rt, n, &to);
    let raw = || {
        direct_round(rt, n, &|events| {
            let (channel, exchange) = (channel.clone(), exchange.clone());
            Box::pin(async move {
                let mut confirms = Vec::with_capacity(events.len());
                for e in &events {
                    let properties = lapin::BasicProperties::default()
                        .with_delivery_mode(2)
                        .with_message_id(e.id.as_str().into());
                    confirms.push(
                        channel
                            .basic_publish(
                                exchange.as_str().into(),
                                "raw".into(),
                                lapin::options::BasicPublishOptions {
                                    mandatory: true,
                                    ..Default::default()
                                },
                                &e.to_json(),
                                properties,
                            )
                            .await
                            .expect("publish"),
                    );
                }
                for confirm in confirms {
                    confirm.await.expect("confirm");
                }
            })
        })
    };
    let (relay, raw) = rounds.compare(order, relay, raw);
    rt.block_on(async {
        let _ = channel
            .queue_delete(
                exchange.as_str().into(),
                lapin::options::QueueDeleteOptions::default(),
            )
            .await;
        let _ = channel
            .exchange_delete(
                exchange.as_str().into(),
                lapin::options::ExchangeDeleteOptions::default(),
            )
            .await;
    });
    ("rabbitmq", n, relay, raw)
}

/// Kafka: the sink vs a producer of the same configuration producing the same records to a
/// topic of the same layout, every delivery report awaited; (relay, raw) events per second.
///
/// Both producers start together and check that the broker answers (as the sink's `connect`
/// does), both topics are created next, and each producer then delivers one warm-up record to
/// its topic, so that neither side's clock includes a producer's start (its connection, its
/// idempotent producer id), a topic's creation or a producer's first look-up of its topic's
/// partitions and leaders (which otherwise fell on whichever side ran first more heavily).
fn kafka(rt: &Runtime, n: usize, min: Duration, brokers: &str, order: Order) -> (f64, f64) {
    let prefix = format!("{}.", name());
    let config = KafkaSinkConfig::default();
    let sink = rt.block_on(async {
        KafkaSink::connect(brokers, &prefix, config.clone())
            .await
            .expect("P7 needs a Kafka broker (GRANARY_BENCH_KAFKA, or tansu installed)")
    });
    // What `granary_kafka`'s producer sets. A sink that falls back to a non-idempotent producer
    // fails a publish first, which `relay_rate` reports.
    let mut client = rdkafka::ClientConfig::new();
    client
        .set("bootstrap.servers", brokers)
        .set("acks", "all")
        .set("linger.ms", config.linger.as_millis().max(1).to_string())
        .set(
            "message.timeout.ms",
            config.delivery_timeout.as_millis().max(1).to_string(),
        )
        .set("partitioner", "murmur2_random");
    if sink.is_idempotent() {
        client.set("enable.idempotence", "true");
    } else {
        client
            .set("enable.idempotence", "false")
            .set("max.in.flight.requests.per.connection", "1");
    }
    let producer: FutureProducer = client.create().expect("producer");
    // Blocks, on the main thread (no runtime thread).
    producer
        .client()
        .fetch_metadata(None, Duration::from_secs(10))
        .expect("the broker answers");

    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let topic = format!("{prefix}raw");
    let layout = TopicLayout::default();
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    rt.block_on(async {
        sink.prepare("match.ended")
            .await
            .expect("the sink creates its topic");
        let created = admin
            .create_topics(
                [&NewTopic::new(
                    &topic,
                    layout.partitions,
                    TopicReplication::Fixed(layout.replication),
                )],
                &options,
            )
            .await
            .expect("create topic");
        for result in created {
            result.expect("topic created");
        }
        let (_, warm_up) = filled_outbox(1).await;
        let event = warm_up.into_iter().next().expect("one event");
        let value = event.to_json();
        sink.publish(&[Outgoing {
            topic: event.type_name.as_str().into(),
            event,
        }])
        .await
        .expect("the sink's warm-up record");
        producer
            .send(
                FutureRecord::<str, _>::to(&topic).payload(&value),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(err, _)| err)
            .expect("the raw producer's warm-up record");
    });

    let sink = Arc::new(sink);
    // Kafka appends to a log: a fuller topic costs no more, nothing to empty between rounds.
    let rounds = Rounds {
        n,
        min,
        reset: &|| {},
    };
    let to: Arc<dyn Sink> = sink.clone();
    let relay = || relay_round(rt, n, &to);
    let raw = || {
        direct_round(rt, n, &|events| {
            let (producer, topic) = (producer.clone(), topic.clone());
            Box::pin(async move {
                let mut deliveries = Vec::with_capacity(events.len());
                for e in &events {
                    let key = granary_kafka::record_key(&e.source);
                    let value = e.to_json();
                    let headers = OwnedHeaders::new_with_capacity(3)
                        .insert(Header {
                            key: granary_kafka::EVENT_ID_HEADER,
                            value: Some(e.id.as_str()),
                        })
                        .insert(Header {
                            key: granary_kafka::EVENT_TYPE_HEADER,
                            value: Some(e.type_name.as_str()),
                        })
                        .insert(Header {
                            key: "content-type",
                            value: Some("application/json"),
                        });
                    let record = FutureRecord::to(&topic)
                        .key(&key)
                        .payload(&value)
                        .headers(headers)
                        .timestamp(i64::try_from(e.timestamp_ms).unwrap_or(i64::MAX));
                    // 512 records never fill librdkafka's queue (100,000 by default).
                    let delivery = producer
                        .send_result(record)
                        .map_err(|(err, _)| err)
                        .expect("enqueue");
                    deliveries.push(delivery);
                }
                for delivery in deliveries {
                    delivery
                        .await
                        .expect("delivery report")
                        .map_err(|(err, _)| err)
                        .expect("delivered");
                }
            })
        })
    };
    let (relay, raw) = rounds.compare(order, relay, raw);
    // Where the relay's time goes: the sink handed the same envelopes directly, 512 at a time
    // (no outbox read, decode or acknowledgement), after both sides. Printed, not reported.
    let direct = rounds.rate(|| {
        direct_round(rt, n, &|events| {
            let sink = sink.clone();
            Box::pin(async move {
                let batch: Vec<Outgoing> = events
                    .into_iter()
                    .map(|event| Outgoing {
                        topic: event.type_name.as_str().into(),
                        event,
                    })
                    .collect();
                sink.publish(&batch)
                    .await
                    .expect("the sink's direct publish");
            })
        })
    });
    println!(
        "# P7-kafka rep: relay {relay:.0}, sink.publish direct {direct:.0}, raw {raw:.0} events/s"
    );

    rt.block_on(async {
        sink.delete_topics().await.expect("delete the sink's topic");
        for result in admin
            .delete_topics(&[topic.as_str()], &options)
            .await
            .expect("delete topic")
        {
            result.expect("topic deleted");
        }
    });
    (relay, raw)
}

/// SQS: the sink vs `SendMessageBatch` of the sink's entries to a FIFO queue, 10 per batch and
/// as many batches in flight as the sink has lanes; (relay, raw) events per second.
fn sqs(rt: &Runtime, n: usize, url: &str, order: Order) -> (f64, f64) {
    let prefix = format!("{}.", name());
    let (client, sink, sink_queue) = rt.block_on(async {
        let client = SqsEndpoint::url(url)
            .static_credentials("granary", "granary")
            .client()
            .await;
        let sink = SqsSink::new(client.clone(), &prefix);
        // Creates the queue before the clock starts, as the raw side's is.
        let queue = sink
            .ensure_queue("match.ended")
            .await
            .expect("P7 needs an SQS server (GRANARY_BENCH_SQS, or moto_server installed)");
        (client, Arc::new(sink), queue)
    });
    let raw_queue = rt.block_on(async {
        client
            .create_queue()
            .queue_name(granary_sqs::queue_name(&prefix, "raw", true).expect("queue name"))
            .attributes(QueueAttributeName::FifoQueue, "true")
            .attributes(QueueAttributeName::ContentBasedDeduplication, "false")
            .send()
            .await
            .expect("CreateQueue")
            .queue_url()
            .expect("queue URL")
            .to_owned()
    });
    // One round: moto's FIFO queues slow down as they fill, and one round is ~10 s already.
    let rounds = Rounds {
        n,
        min: Duration::ZERO,
        reset: &|| {},
    };
    let to: Arc<dyn Sink> = sink;
    let relay = || relay_round(rt, n, &to);
    let raw = || {
        direct_round(rt, n, &|events| {
            let (client, queue) = (client.clone(), raw_queue.clone());
            Box::pin(async move {
                let batches: Vec<Vec<SendMessageBatchRequestEntry>> = events
                    .chunks(SQS_BATCH)
                    .map(|batch| batch.iter().enumerate().map(sqs_entry).collect())
                    .collect();
                futures::stream::iter(batches)
                    .map(|entries| {
                        let (client, queue) = (client.clone(), queue.clone());
                        async move {
                            let sent = entries.len();
                            let output = client
                                .send_message_batch()
                                .queue_url(queue)
                                .set_entries(Some(entries))
                                .send()
                                .await
                                .expect("SendMessageBatch");
                            assert!(output.failed().is_empty(), "SQS refused entries");
                            assert_eq!(output.successful().len(), sent);
                        }
                    })
                    .buffer_unordered(SQS_LANES)
                    .collect::<Vec<()>>()
                    .await;
            })
        })
    };
    let (relay, raw) = rounds.compare(order, relay, raw);

    rt.block_on(async {
        for queue in [sink_queue, raw_queue] {
            client
                .delete_queue()
                .queue_url(queue)
                .send()
                .await
                .expect("DeleteQueue");
        }
    });
    (relay, raw)
}

/// The `SendMessageBatch` entry [`SqsSink`] writes for `event` at `position` of its batch.
fn sqs_entry((position, event): (usize, &EventEnvelope)) -> SendMessageBatchRequestEntry {
    let attribute = |value: &str| {
        MessageAttributeValue::builder()
            .data_type("String")
            .string_value(value)
            .build()
            .expect("data type is set")
    };
    let source = &event.source;
    // The message group: the source grain, as the sink writes it.
    let group = format!(
        "{}:{}:{}:{}",
        source.type_name.len(),
        source.type_name,
        source.key_kind.chars().next().unwrap_or('s'),
        source.key
    );
    SendMessageBatchRequestEntry::builder()
        .id(position.to_string())
        .message_body(String::from_utf8(event.to_json()).expect("JSON is UTF-8"))
        .message_attributes("granary-event-id", attribute(&event.id))
        .message_attributes("granary-event-type", attribute(&event.type_name))
        .message_attributes("content-type", attribute("application/json"))
        .message_group_id(granary_sqs::sqs_id(&group))
        .message_deduplication_id(granary_sqs::sqs_id(&event.id))
        .build()
        .expect("id and body are set")
}

/// P7-delivery on its own (P14's baseline): [`delivery_p99`] on a stream of its own, removed
/// after.
pub(crate) fn stream_delivery_p99() -> f64 {
    multi_thread(2).block_on(async {
        let store = Arc::new(
            RedisStore::connect(RedisConfig::new(redis_url(), name()))
                .await
                .expect("P7-delivery needs Redis (GRANARY_BENCH_REDIS)"),
        );
        let prefix = format!("{}:", name());
        let p99 = delivery_p99(store.clone(), &prefix).await;
        let stream = RedisStreamsSink::new(store, &prefix).stream("delivery");
        let mut conn = redis::Client::open(redis_url())
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        let _: () = redis::cmd("DEL")
            .arg(stream)
            .query_async(&mut conn)
            .await
            .expect("clean up");
        p99
    })
}

/// Commit-to-delivery p99 (ms) of 1,000 events committed one by one (every 2 ms) while the
/// relay runs, read back from the Redis stream by a blocking reader.
async fn delivery_p99(store: Arc<RedisStore>, prefix: &str) -> f64 {
    let outbox = Arc::new(MemoryStore::new());
    let sink = Arc::new(RedisStreamsSink::new(store, prefix));
    let relay = Relay::builder(outbox.clone())
        .route("delivery", sink.clone(), "delivery")
        .start();
    let stream = sink.stream("delivery");
    let reader = tokio::spawn(async move {
        let mut conn = redis::Client::open(redis_url())
            .expect("url")
            .get_multiplexed_async_connection_with_config(
                &redis::AsyncConnectionConfig::new().set_response_timeout(None),
            )
            .await
            .expect("connect");
        let mut last = "0".to_owned();
        let mut lags = Vec::with_capacity(1_000);
        while lags.len() < 1_000 {
            let reply: Option<redis::streams::StreamReadReply> = redis::cmd("XREAD")
                .arg("BLOCK")
                .arg(1_000)
                .arg("STREAMS")
                .arg(&stream)
                .arg(&last)
                .query_async(&mut conn)
                .await
                .expect("xread");
            for entry in reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
                let now = now_ms();
                if let Some(redis::Value::BulkString(json)) = entry.map.get("event") {
                    let envelope = EventEnvelope::from_json(json).expect("envelope");
                    lags.push(now.saturating_sub(envelope.timestamp_ms) as f64);
                }
                last = entry.id;
            }
        }
        lags
    });
    let grain = GrainId::new("bench.delivery", 1);
    let address = GrainAddress {
        grain: grain.clone(),
        silo: SiloId::new("bench", 1),
        activation: ActivationId::new(),
    };
    let _ = outbox.claim(&address, None).await;
    for version in 0..1_000 {
        outbox
            .commit(Commit {
                grain: grain.clone(),
                activation: address.activation,
                expected_version: version,
                change: StateChange::Unchanged,
                events: vec![PublishedEvent {
                    type_name: "delivery".into(),
                    payload: b"{}".to_vec(),
                    trace: None,
                }],
                reminders: Vec::new(),
            })
            .await
            .expect("commit");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut lags = reader.await.expect("reader");
    relay.stop().await;
    lags.sort_by(f64::total_cmp);
    lags[(lags.len() * 99 / 100).min(lags.len() - 1)]
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

//! P7: the relay's throughput to each sink against a raw client publishing the same payloads
//! with the same batching (one batch of 512 in flight, as the relay does), and the relay's
//! commit-to-delivery p99 on Redis Streams.

use std::sync::Arc;
use std::time::{Duration, Instant};

use granary::provider::{Claim, Commit, GrainAddress, MemoryStore, StateChange, StateStore};
use granary::{ActivationId, GrainId, PublishedEvent, SiloId};
use granary_events::{EventEnvelope, Relay, Sink};
use granary_redis::{RedisConfig, RedisStore, RedisStreamsSink};
use tokio::runtime::Runtime;

use crate::engines::multi_thread;

const BATCH: usize = 512;

fn name() -> String {
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
        let per_grain = n / grains;
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

/// Events per second the relay moves from a full outbox to `sink`.
fn relay_rate(rt: &Runtime, n: usize, sink: Arc<dyn Sink>) -> f64 {
    rt.block_on(async {
        let (store, _) = filled_outbox(n).await;
        let start = Instant::now();
        let relay = Relay::builder(store.clone()).sink(sink).start();
        // Done when the outbox is empty (`pending(1)`: no copy of the whole outbox per check).
        while !granary::provider::Outbox::pending(&*store, 1)
            .await
            .expect("outbox")
            .is_empty()
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let rate = n as f64 / start.elapsed().as_secs_f64();
        assert_eq!(relay.failures(), 0, "the benchmark's sink failed");
        relay.stop().await;
        rate
    })
}

/// Events per second `sink` takes when handed the same envelopes directly, 512 at a time.
fn direct_rate(
    rt: &Runtime,
    n: usize,
    publish: &dyn Fn(Vec<EventEnvelope>) -> futures::future::BoxFuture<'static, ()>,
) -> f64 {
    rt.block_on(async {
        let (_, envelopes) = filled_outbox(n).await;
        let start = Instant::now();
        for chunk in envelopes.chunks(BATCH) {
            publish(chunk.to_vec()).await;
        }
        n as f64 / start.elapsed().as_secs_f64()
    })
}

/// The three sinks' runs: (name, relay, raw).
pub(crate) struct P7 {
    pub(crate) results: Vec<(&'static str, f64, f64)>,
    pub(crate) delivery_p99_ms: f64,
}

fn redis_url() -> String {
    std::env::var("GRANARY_BENCH_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// One repetition of every P7 measurement with `n` events.
pub(crate) fn p7(n: usize) -> P7 {
    let rt = multi_thread(2);
    let mut results = Vec::new();

    // Redis Streams: the sink vs pipelined XADDs of the same entries.
    let store = rt.block_on(async {
        Arc::new(
            RedisStore::connect(RedisConfig::new(redis_url(), name()))
                .await
                .expect("P7 needs Redis (GRANARY_BENCH_REDIS)"),
        )
    });
    let prefix = format!("{}:", name());
    let sink = Arc::new(RedisStreamsSink::new(store.clone(), &prefix));
    let relay = relay_rate(&rt, n, sink.clone());
    let conn = rt.block_on(async {
        redis::Client::open(redis_url())
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect")
    });
    let stream = format!("{prefix}raw");
    let raw = direct_rate(&rt, n, &|events| {
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
    });
    results.push(("redis-streams", relay, raw));
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

    // NATS JetStream: the sink vs publishing with Nats-Msg-Id and awaiting the acks.
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
    let relay = relay_rate(&rt, n, nats.clone());
    let js = rt.block_on(async {
        async_nats::jetstream::new(async_nats::connect(&url).await.expect("nats"))
    });
    let subject = format!("{stream_name}.raw");
    let raw = direct_rate(&rt, n, &|events| {
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
    });
    results.push(("nats", relay, raw));
    rt.block_on(async {
        let _ = js.delete_stream(&stream_name).await;
    });

    // RabbitMQ: the sink vs publishing with confirms (a queue bound so nothing returns).
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
    let relay = relay_rate(&rt, n, rabbit);
    let raw = direct_rate(&rt, n, &|events| {
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
    });
    results.push(("rabbitmq", relay, raw));
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
    P7 {
        results,
        delivery_p99_ms,
    }
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

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

//! Events from grains to Redis Streams: the relay delivers every committed event exactly once
//! after dedupe and in per-grain order, survives being stopped mid-stream and a broker outage,
//! and the consumer dead-letters a poison event without blocking the rest.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use granary::provider::Outbox;
use granary::{Event as _, Silo, SiloConfig};
use granary_events::{EventEnvelope, Outgoing, Relay, RelayConfig};
use granary_redis::{
    ConsumerConfig, Idempotency, RedisConfig, RedisStore, RedisStreamsSink, StreamConsumer,
};
use granary_testkit::redis_server::{Persistence, PrivateRedis, shared_redis_url, unique_name};
use tokio_util::sync::CancellationToken;

use crate::counter::{Bumped, CounterGrain, TotalsGrain};

async fn store_on(url: &str) -> Arc<RedisStore> {
    Arc::new(
        RedisStore::connect(RedisConfig::new(url, unique_name("ev")).shards(8))
            .await
            .unwrap(),
    )
}

async fn silo(store: Arc<RedisStore>) -> Silo {
    Silo::builder()
        .config(SiloConfig::test_profile())
        .storage(store)
        .register::<CounterGrain>()
        .register::<TotalsGrain>()
        .start()
        .await
        .unwrap()
}

/// Bumps `grains` grains `times` times each, concurrently: `grains * times` committed events.
async fn bump_all(silo: &Silo, grains: i64, times: u64) {
    let tasks: Vec<_> = (0..grains)
        .map(|g| {
            let counter = silo.client().grain::<CounterGrain>(g);
            tokio::spawn(async move {
                for _ in 0..times {
                    counter.bump().await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

async fn wait_until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn outbox_len(store: &RedisStore) -> usize {
    store.pending(1_000_000).await.unwrap().len()
}

/// Every entry of `stream`, as envelopes, in stream order.
async fn read_stream(url: &str, stream: &str) -> Vec<EventEnvelope> {
    xrange_all(url, stream)
        .await
        .ids
        .iter()
        .map(|e| match e.map.get("event") {
            Some(redis::Value::BulkString(json)) => EventEnvelope::from_json(json).unwrap(),
            other => panic!("entry without event: {other:?}"),
        })
        .collect()
}

/// The whole of `stream`.
async fn xrange_all(url: &str, stream: &str) -> redis::streams::StreamRangeReply {
    let mut conn = granary_redis::RedisConnection::open(url, None)
        .await
        .unwrap();
    redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap()
}

/// Checks that `events` hold exactly `grains * times` distinct events, each grain's counts
/// 1..=times in order (the first delivery of each id counts).
fn check_exactly_once_in_order(events: &[EventEnvelope], grains: i64, times: u64) {
    let mut seen = HashSet::new();
    let mut per_grain: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for event in events {
        if seen.insert(event.id.clone()) {
            let bumped: Bumped = event.decode().unwrap();
            per_grain
                .entry(event.source.key.clone())
                .or_default()
                .push(bumped.n);
        }
    }
    assert_eq!(seen.len() as u64, grains as u64 * times, "distinct events");
    for (grain, counts) in per_grain {
        assert_eq!(
            counts,
            (1..=times).collect::<Vec<_>>(),
            "grain {grain}: in commit order"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_committed_event_arrives_once_after_dedupe_in_per_grain_order() {
    let url = shared_redis_url().await;
    let store = store_on(&url).await;
    let prefix = format!("{}:", unique_name("events"));
    let sink = Arc::new(RedisStreamsSink::new(store.clone(), &prefix));
    let relay = Relay::builder(store.clone()).sink(sink.clone()).start();
    let silo = silo(store.clone()).await;
    bump_all(&silo, 40, 50).await;

    // A consumer group reads them; the idempotency helper drops redeliveries.
    let stream = sink.stream("counter.bumped");
    let consumer = StreamConsumer::new(&url, &stream, "analytics", "c1", ConsumerConfig::default())
        .await
        .unwrap()
        .idempotent(
            Idempotency::connect(&url, &format!("{prefix}seen:"), Duration::from_secs(600))
                .await
                .unwrap(),
        );
    let received = Arc::new(Mutex::new(Vec::new()));
    let stop = CancellationToken::new();
    let run = {
        let (received, stop) = (received.clone(), stop.clone());
        tokio::spawn(async move {
            consumer
                .run(
                    |event| {
                        received.lock().unwrap().push(event);
                        async { Ok(()) }
                    },
                    stop,
                )
                .await
        })
    };
    wait_until("the consumer has every event", async || {
        received.lock().unwrap().len() >= 2_000
    })
    .await;
    stop.cancel();
    run.await.unwrap().unwrap();
    check_exactly_once_in_order(&received.lock().unwrap(), 40, 50);
    let traced = received.lock().unwrap()[0].trace.clone().unwrap();
    assert!(
        traced.starts_with("00-") && traced.len() == 55,
        "the event carries its turn's trace (W3C traceparent): {traced}"
    );
    wait_until("the outbox is empty", async || {
        outbox_len(&store).await == 0
    })
    .await;
    assert_eq!(relay.failures(), 0);
    relay.stop().await;
    silo.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_stopped_mid_stream_loses_nothing() {
    let url = shared_redis_url().await;
    let store = store_on(&url).await;
    let silo = silo(store.clone()).await;
    bump_all(&silo, 20, 50).await;
    assert_eq!(
        outbox_len(&store).await,
        1_000,
        "committed, not yet relayed"
    );
    let prefix = format!("{}:", unique_name("events"));
    let sink = Arc::new(RedisStreamsSink::new(store.clone(), &prefix));
    let small = RelayConfig {
        batch: 16,
        ..RelayConfig::default()
    };
    let first = Relay::builder(store.clone())
        .sink(sink.clone())
        .config(small.clone())
        .start();
    wait_until("the first relay delivered some", async || {
        first.delivered() >= 100
    })
    .await;
    first.stop().await;
    let delivered = read_stream(&url, &sink.stream("counter.bumped"))
        .await
        .len();
    assert!(
        delivered < 1_000,
        "stopped mid-stream ({delivered} delivered)"
    );
    let second = Relay::builder(store.clone())
        .sink(sink.clone())
        .config(small)
        .start();
    wait_until("the outbox is empty", async || {
        outbox_len(&store).await == 0
    })
    .await;
    second.stop().await;
    let events = read_stream(&url, &sink.stream("counter.bumped")).await;
    check_exactly_once_in_order(&events, 20, 50);
    silo.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_wait_in_the_outbox_while_the_broker_is_down() {
    let url = shared_redis_url().await;
    let store = store_on(&url).await;
    let mut broker = PrivateRedis::start(Persistence::None).await;
    let broker_store = Arc::new(
        RedisStore::connect(
            RedisConfig::new(broker.url(), "broker").command_timeout(Duration::from_millis(300)),
        )
        .await
        .unwrap(),
    );
    let sink = Arc::new(RedisStreamsSink::new(broker_store, "events:"));
    broker.kill();
    let silo = silo(store.clone()).await;
    bump_all(&silo, 10, 10).await;
    let relay = Relay::builder(store.clone())
        .sink(sink.clone())
        .config(RelayConfig {
            retry_max: Duration::from_millis(200),
            ..RelayConfig::default()
        })
        .start();
    wait_until("the relay failed a few times", async || {
        relay.failures() >= 3
    })
    .await;
    assert_eq!(outbox_len(&store).await, 100, "nothing left the outbox");
    broker.restart().await;
    wait_until("the outbox is empty", async || {
        outbox_len(&store).await == 0
    })
    .await;
    let events = read_stream(&broker.url(), &sink.stream("counter.bumped")).await;
    check_exactly_once_in_order(&events, 10, 10);
    relay.stop().await;
    silo.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_is_dead_lettered_after_its_attempts_and_does_not_block_the_rest() {
    let url = shared_redis_url().await;
    let store = store_on(&url).await;
    let prefix = format!("{}:", unique_name("events"));
    let sink = Arc::new(RedisStreamsSink::new(store.clone(), &prefix));
    let relay = Relay::builder(store.clone()).sink(sink.clone()).start();
    let silo = silo(store.clone()).await;
    bump_all(&silo, 4, 5).await;
    let stream = sink.stream("counter.bumped");
    let config = ConsumerConfig {
        max_attempts: 3,
        retry_after: Duration::from_millis(50),
        block: Duration::from_millis(50),
        ..ConsumerConfig::default()
    };
    let consumer = StreamConsumer::new(&url, &stream, "g", "c1", config)
        .await
        .unwrap();
    let dead = consumer.dead_letter().to_owned();
    let attempts: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let done = Arc::new(Mutex::new(HashSet::new()));
    let stop = CancellationToken::new();
    let run = {
        let (attempts, done, stop) = (attempts.clone(), done.clone(), stop.clone());
        tokio::spawn(async move {
            consumer
                .run(
                    |event: EventEnvelope| {
                        *attempts
                            .lock()
                            .unwrap()
                            .entry(event.id.clone())
                            .or_default() += 1;
                        let bumped: Bumped = event.decode().unwrap();
                        let poison = event.source.key == "2" && bumped.n == 3;
                        if !poison {
                            done.lock().unwrap().insert(event.id.clone());
                        }
                        async move {
                            if poison {
                                Err("cannot process this one".to_owned())
                            } else {
                                Ok(())
                            }
                        }
                    },
                    stop,
                )
                .await
        })
    };
    wait_until(
        "the poison event is in the dead-letter stream",
        async || !read_stream_raw(&url, &dead).await.is_empty(),
    )
    .await;
    wait_until("every other event is processed", async || {
        done.lock().unwrap().len() == 19
    })
    .await;
    stop.cancel();
    run.await.unwrap().unwrap();
    let buried = read_stream_raw(&url, &dead).await;
    assert_eq!(buried.len(), 1);
    let poison_id = granary_events::event_id(
        store.origin(),
        &granary::GrainId::new("redis.counter", 2),
        3,
        0,
    );
    assert_eq!(
        buried[0].get("id").map(String::as_str),
        Some(poison_id.as_str())
    );
    assert!(
        buried[0]["reason"].contains("failed 3 deliveries"),
        "{:?}",
        buried[0]
    );
    assert_eq!(
        attempts.lock().unwrap()[&poison_id],
        3,
        "delivered exactly max_attempts times"
    );
    relay.stop().await;
    silo.shutdown().await.unwrap();
}

async fn read_stream_raw(url: &str, stream: &str) -> Vec<HashMap<String, String>> {
    let reply = xrange_all(url, stream).await;
    reply
        .ids
        .iter()
        .map(|e| {
            e.map
                .iter()
                .filter_map(|(k, v)| match v {
                    redis::Value::BulkString(b) => {
                        Some((k.clone(), String::from_utf8_lossy(b).into_owned()))
                    }
                    _ => None,
                })
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grain_subscription_applies_each_event_once_even_when_redelivered() {
    let url = shared_redis_url().await;
    let store = store_on(&url).await;
    let prefix = format!("{}:", unique_name("events"));
    let sink = Arc::new(RedisStreamsSink::new(store.clone(), &prefix));
    let relay = Relay::builder(store.clone()).sink(sink.clone()).start();
    let silo = silo(store.clone()).await;
    bump_all(&silo, 4, 50).await;
    let stream = sink.stream("counter.bumped");
    // Two consumer groups read the whole stream: the second is a full redelivery.
    for group in ["first", "again"] {
        let consumer = StreamConsumer::new(&url, &stream, group, "c", ConsumerConfig::default())
            .await
            .unwrap();
        let handled = Arc::new(Mutex::new(0_u32));
        let stop = CancellationToken::new();
        let client = silo.client();
        let run = {
            let (handled, stop) = (handled.clone(), stop.clone());
            tokio::spawn(async move {
                consumer
                    .run(
                        |event| {
                            let totals = client.grain::<TotalsGrain>("season-1");
                            let handled = handled.clone();
                            async move {
                                totals.apply(event).await.map_err(|e| e.to_string())?;
                                *handled.lock().unwrap() += 1;
                                Ok(())
                            }
                        },
                        stop,
                    )
                    .await
            })
        };
        wait_until("the group handled the stream", async || {
            *handled.lock().unwrap() == 200
        })
        .await;
        stop.cancel();
        run.await.unwrap().unwrap();
        let applied = silo
            .client()
            .grain::<TotalsGrain>("season-1")
            .applied()
            .await
            .unwrap();
        assert_eq!(applied, 200, "after group {group}: each event applied once");
    }
    relay.stop().await;
    silo.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trimming_removes_only_what_every_group_acknowledged() {
    let url = shared_redis_url().await;
    let store = store_on(&url).await;
    let prefix = format!("{}:", unique_name("events"));
    let sink = RedisStreamsSink::new(store.clone(), &prefix);
    let envelopes: Vec<EventEnvelope> = (0..10_u32)
        .map(|i| {
            let id = granary_events::event_id(
                "test.origin",
                &granary::GrainId::new("t", 1),
                u64::from(i) + 1,
                0,
            );
            EventEnvelope::from_json(
                format!(
                    r#"{{"id":"{id}","type":"t","source":{{"type":"t","key":"1","key_kind":"int"}},"version":{},"index":0,"timestamp_ms":0,"trace":null,"payload":{{}}}}"#,
                    i + 1
                )
                .as_bytes(),
            )
            .unwrap()
        })
        .collect();
    let batch: Vec<Outgoing> = envelopes
        .into_iter()
        .map(|e| Outgoing::new("t", e))
        .collect();
    granary_events::Sink::publish(&sink, &batch).await.unwrap();
    assert_eq!(
        sink.trim_consumed("t").await.unwrap(),
        0,
        "no group yet: nothing is trimmed"
    );
    // Two groups: a fast one that acknowledges everything, a slow one that handled 4.
    let stream = sink.stream("t");
    for (group, take) in [("fast", 10_usize), ("slow", 4)] {
        let consumer = StreamConsumer::new(&url, &stream, group, "c", ConsumerConfig::default())
            .await
            .unwrap();
        let handled = Arc::new(Mutex::new(0_usize));
        let stop = CancellationToken::new();
        let run = {
            let (handled, stop) = (handled.clone(), stop.clone());
            tokio::spawn(async move {
                consumer
                    .run(
                        |_| {
                            let mut n = handled.lock().unwrap();
                            *n += 1;
                            let ok = *n <= take;
                            async move { if ok { Ok(()) } else { Err("later".into()) } }
                        },
                        stop,
                    )
                    .await
            })
        };
        wait_until("the group read the stream", async || {
            *handled.lock().unwrap() >= 10
        })
        .await;
        stop.cancel();
        run.await.unwrap().unwrap();
    }
    // The slow group still has 6 pending: only the 4 entries both acknowledged go.
    assert_eq!(sink.trim_consumed("t").await.unwrap(), 4);
    assert_eq!(read_stream(&url, &stream).await.len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_sub_reaches_the_subscribers_connected_at_the_time() {
    use futures::StreamExt;
    let url = shared_redis_url().await;
    let store = store_on(&url).await;
    let prefix = format!("{}:", unique_name("live"));
    let sink = granary_redis::RedisPubSubSink::new(store.clone(), &prefix);
    // On a Redis Cluster a message published on one node reaches the subscribers of every
    // node: subscribe on the first seed.
    let node = match url.strip_prefix("redis+cluster://") {
        Some(seeds) => format!("redis://{}", seeds.split(',').next().unwrap()),
        None => url.clone(),
    };
    let mut pubsub = redis::Client::open(node)
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    pubsub
        .subscribe(format!("{prefix}game.state"))
        .await
        .unwrap();
    let envelope = EventEnvelope::from_json(
        br#"{"id":"x","type":"game.state","source":{"type":"game","key":"7","key_kind":"int"},"version":1,"index":0,"timestamp_ms":0,"trace":null,"payload":{"alive":3}}"#,
    )
    .unwrap();
    granary_events::Sink::publish(&sink, &[Outgoing::new("game.state", envelope)])
        .await
        .unwrap();
    let message = tokio::time::timeout(Duration::from_secs(5), pubsub.on_message().next())
        .await
        .unwrap()
        .unwrap();
    let got = EventEnvelope::from_json(message.get_payload_bytes()).unwrap();
    assert_eq!(got.payload.get(), r#"{"alive":3}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_can_carry_messagepack_and_consumers_read_either_format() {
    let url = shared_redis_url().await;
    let store = store_on(&url).await;
    let prefix = format!("{}:", unique_name("events"));
    let sink = Arc::new(
        RedisStreamsSink::new(store.clone(), &prefix)
            .with_format("counter.bumped", granary_events::Format::MessagePack),
    );
    let relay = Relay::builder(store.clone()).sink(sink.clone()).start();
    let silo = silo(store.clone()).await;
    bump_all(&silo, 5, 20).await;
    let stream = sink.stream("counter.bumped");
    wait_until("the outbox is empty", async || {
        outbox_len(&store).await == 0
    })
    .await;
    let raw = read_stream_raw(&url, &stream).await;
    assert_eq!(raw.len(), 100);
    assert!(
        !raw[0]["event"].starts_with('{'),
        "the entries hold MessagePack, not JSON"
    );
    let consumer = StreamConsumer::new(&url, &stream, "g", "c", ConsumerConfig::default())
        .await
        .unwrap();
    let received = Arc::new(Mutex::new(Vec::new()));
    let stop = CancellationToken::new();
    let run = {
        let (received, stop) = (received.clone(), stop.clone());
        tokio::spawn(async move {
            consumer
                .run(
                    |event: EventEnvelope| {
                        received.lock().unwrap().push(event);
                        async { Ok(()) }
                    },
                    stop,
                )
                .await
        })
    };
    wait_until("every event was read", async || {
        received.lock().unwrap().len() == 100
    })
    .await;
    stop.cancel();
    run.await.unwrap().unwrap();
    check_exactly_once_in_order(&received.lock().unwrap(), 5, 20);
    relay.stop().await;
    silo.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_newest_events_are_read_back_across_topics() {
    use granary_events::Sink as _;
    let url = shared_redis_url().await;
    let store = store_on(&url).await;
    // Glob characters in the prefix match themselves only.
    let prefix = format!("{}[x]:", unique_name("recent"));
    let sink = RedisStreamsSink::new(store.clone(), &prefix);
    let envelope = |topic: &str, n: u64| {
        EventEnvelope::from_json(
            format!(
                r#"{{"id":"g:{n}","type":"{topic}","source":{{"type":"g","key":"k","key_kind":"string"}},"version":{n},"index":0,"timestamp_ms":{n},"trace":null,"payload":{{}}}}"#
            )
            .as_bytes(),
        )
        .unwrap()
    };
    for (topic, n) in [("a.one", 1), ("b.two", 2), ("a.one", 4), ("b.two", 3)] {
        sink.publish(&[Outgoing::new(topic, envelope(topic, n))])
            .await
            .unwrap();
    }
    let mut conn = granary_redis::RedisConnection::open(url.as_str(), None)
        .await
        .unwrap();
    let not_a_stream = format!("{prefix}c.three");
    redis::cmd("SET")
        .arg(&not_a_stream)
        .arg("x")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    // A stream that `[x]`, read as a glob, would match: not a topic of this prefix.
    let lookalike = format!("{}x:a.one", prefix.trim_end_matches("[x]:"));
    RedisStreamsSink::new(store.clone(), prefix.trim_end_matches("[x]:"))
        .publish(&[Outgoing::new("x:a.one", envelope("a.one", 9))])
        .await
        .unwrap();

    let topics = sink.topics(10).await.unwrap();
    assert_eq!(topics, ["a.one", "b.two"]);
    assert_eq!(sink.topics(1).await.unwrap().len(), 1, "at most the limit");
    let ids = |events: Vec<EventEnvelope>| events.into_iter().map(|e| e.id).collect::<Vec<_>>();
    assert_eq!(
        ids(sink.recent(&topics, 10).await.unwrap()),
        ["g:4", "g:3", "g:2", "g:1"],
        "newest first by commit time, across topics"
    );
    assert_eq!(ids(sink.recent(&topics, 2).await.unwrap()), ["g:4", "g:3"]);
    assert!(sink.recent(&[], 2).await.unwrap().is_empty());
    redis::cmd("DEL")
        .arg(sink.stream("a.one"))
        .arg(sink.stream("b.two"))
        .arg(&not_a_stream)
        .arg(&lookalike)
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_appended_between_a_read_and_the_wait_wakes_the_wait_at_once() {
    let url = shared_redis_url().await;
    let store = store_on(&url).await;
    let shards: Vec<u32> = (0..store.shards()).collect();
    for shard in &shards {
        assert!(store.pending_in(*shard, 100).await.unwrap().is_empty());
    }
    if url.starts_with("redis+cluster://") {
        // A blocking read cannot span the shards' slots: on a Redis Cluster the wait is the
        // relay's poll interval, as `docs/running-a-cluster.md` says.
        let waited = Instant::now();
        store
            .wait_for_entries(&shards, Duration::from_millis(200))
            .await;
        assert!(waited.elapsed() >= Duration::from_millis(200));
        return;
    }
    // The relay has read every shard empty; a commit lands before it starts waiting.
    let silo = silo(store.clone()).await;
    silo.client().grain::<CounterGrain>(1).bump().await.unwrap();
    let waited = Instant::now();
    tokio::time::timeout(
        Duration::from_secs(5),
        store.wait_for_entries(&shards, Duration::from_secs(30)),
    )
    .await
    .expect("the wait saw the entry appended before it started");
    assert!(waited.elapsed() < Duration::from_secs(5));
    // Once that entry is read, the wait blocks again until something new arrives.
    let mut shard = None;
    for s in &shards {
        if !store.pending_in(*s, 100).await.unwrap().is_empty() {
            shard = Some(*s);
        }
    }
    let shard = shard.expect("the commit's shard");
    assert!(
        tokio::time::timeout(
            Duration::from_millis(300),
            store.wait_for_entries(&[shard], Duration::from_secs(30)),
        )
        .await
        .is_err(),
        "nothing new: the wait blocks"
    );
    silo.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_outbox_entry_goes_to_the_dead_letter_stream_and_the_shard_goes_on() {
    let url = shared_redis_url().await;
    let cluster = unique_name("ev-undecodable");
    let store = Arc::new(
        RedisStore::connect(RedisConfig::new(&url, &cluster).shards(2))
            .await
            .unwrap(),
    );
    let silo = silo(store.clone()).await;
    let counter = silo.client().grain::<CounterGrain>(1);
    counter.bump().await.unwrap();
    let shard = store.pending(10).await.unwrap()[0].position.shard;
    // An entry no commit wrote: fields missing, a version that is not a number.
    let mut conn = granary_redis::RedisConnection::open(url.as_str(), None)
        .await
        .unwrap();
    let _: String = redis::cmd("XADD")
        .arg(format!("granary:{{{cluster}:{shard}}}:outbox"))
        .arg("*")
        .arg("g")
        .arg("garbage")
        .arg("v")
        .arg("x")
        .query_async(&mut conn)
        .await
        .unwrap();
    counter.bump().await.unwrap();

    let prefix = format!("{cluster}:");
    let sink = Arc::new(RedisStreamsSink::new(store.clone(), &prefix));
    let relay = Relay::builder(store.clone())
        .sink(sink.clone())
        .config(RelayConfig {
            idle_poll: Duration::from_millis(20),
            ..RelayConfig::default()
        })
        .start();
    wait_until("the outbox drained", async || outbox_len(&store).await == 0).await;
    relay.stop().await;

    let delivered: Vec<u64> = read_stream(&url, &sink.stream(Bumped::TYPE_NAME))
        .await
        .iter()
        .map(|e| e.version)
        .collect();
    assert_eq!(delivered, [1, 2], "the events around it went out, in order");
    let dead = store.dead_letters(shard, 10).await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(dead[0].reason.contains("undecodable"), "{}", dead[0].reason);
    assert_eq!(dead[0].id, None);
    silo.shutdown().await.unwrap();
}

/// The sink writes each envelope straight into its XADD: the entries hold, byte for byte, the
/// fields and the envelope [`EventEnvelope::encode`] gives, in the batch's order, for envelopes
/// larger than the sink's size estimate and text that JSON escapes, in both formats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_entry_holds_the_envelope_as_encoded_in_batch_order() {
    use granary_events::{Format, Sink as _};
    let url = shared_redis_url().await;
    let store = store_on(&url).await;
    let prefix = format!("{}:", unique_name("direct"));
    let sink =
        RedisStreamsSink::new(store.clone(), &prefix).with_format("b.packed", Format::MessagePack);
    let big = "x".repeat(20_000);
    let batch: Vec<Outgoing> = (0..600u64)
        .map(|n| {
            let topic = if n % 3 == 0 { "b.packed" } else { "a.json" };
            // Quotes, a backslash, a control character and non-ASCII text, escaped by JSON;
            // every 100th envelope far larger than the estimate of its command's size.
            let text = if n % 100 == 7 {
                big.as_str()
            } else {
                "say \"hi\" \\ \u{1} é 🦀"
            };
            let payload = serde_json::json!({ "n": n, "text": text });
            let envelope = EventEnvelope::from_json(
                serde_json::json!({
                    "id": format!("o/1:g:s:k\"{n}:{n}:0"),
                    "type": topic,
                    "source": {"type": "g", "key": format!("k\"{n}"), "key_kind": "string"},
                    "version": n, "index": 0, "timestamp_ms": n,
                    "trace": if n % 2 == 0 { Some("00-trace-01") } else { None },
                    "payload": payload,
                })
                .to_string()
                .as_bytes(),
            )
            .unwrap();
            Outgoing::new(topic, envelope)
        })
        .collect();
    sink.publish(&batch).await.unwrap();

    let mut written = HashMap::new();
    for topic in ["a.json", "b.packed"] {
        written.insert(topic, xrange_all(&url, &sink.stream(topic)).await.ids);
    }
    let field = |entry: &redis::streams::StreamId, name: &str| match entry.map.get(name) {
        Some(redis::Value::BulkString(bytes)) => bytes.clone(),
        other => panic!("field {name}: {other:?}"),
    };
    let mut next: HashMap<&str, usize> = HashMap::new();
    for out in &batch {
        let at = next.entry(&*out.topic).or_default();
        let entry = &written[&*out.topic][*at];
        *at += 1;
        let format = if &*out.topic == "b.packed" {
            Format::MessagePack
        } else {
            Format::Json
        };
        assert_eq!(field(entry, "id"), out.event.id.as_bytes());
        assert_eq!(field(entry, "type"), out.event.type_name.as_bytes());
        assert_eq!(
            field(entry, "event"),
            out.event.encode(format),
            "{}",
            out.event.id
        );
    }
    assert_eq!(next["a.json"] + next["b.packed"], 600);
    assert_eq!(
        written["a.json"].len() + written["b.packed"].len(),
        600,
        "nothing more"
    );
    let mut conn = granary_redis::RedisConnection::open(url.as_str(), None)
        .await
        .unwrap();
    // One key per command: on a Redis Cluster the two streams may lie in different slots.
    for topic in ["a.json", "b.packed"] {
        redis::cmd("DEL")
            .arg(sink.stream(topic))
            .query_async::<()>(&mut conn)
            .await
            .unwrap();
    }
}

//! The Kafka sink and consumer against a real Kafka-protocol broker: a private `tansu broker`
//! (memory storage) started by each test on a free loopback port.
#![allow(clippy::unwrap_used, reason = "test helpers fail loudly")]

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use granary::provider::MemoryStore;
use granary::{Event, GrainContext, Silo, SiloConfig, grain};
use granary_events::{EventEnvelope, Relay, RelayConfig};
use granary_kafka::{
    EVENT_ID_HEADER, KafkaConsumer, KafkaConsumerConfig, KafkaSink, KafkaSinkConfig,
};
use granary_testkit::redis_server::unique_name;
use granary_testkit::tansu_server::PrivateTansu;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Headers;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Serialize, Deserialize)]
struct Bumped {
    n: u64,
}

impl Event for Bumped {
    const TYPE_NAME: &'static str = "bumped";
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Count {
    n: u64,
}

#[derive(Debug, Default)]
struct CounterGrain;

#[grain(name = "kafka.counter", state = Count)]
impl CounterGrain {
    pub async fn bump(&self, ctx: &GrainContext<Self>) -> granary::Result<u64> {
        let n = {
            let mut state = ctx.state();
            state.n += 1;
            state.n
        };
        ctx.publish(&Bumped { n })?;
        ctx.write_state().await?;
        Ok(n)
    }
}

async fn silo(store: Arc<MemoryStore>) -> Silo {
    Silo::builder()
        .config(SiloConfig::test_profile())
        .storage(store)
        .register::<CounterGrain>()
        .start()
        .await
        .unwrap()
}

async fn bump(silo: &Silo, grains: std::ops::Range<i64>, times: u64) {
    for g in grains {
        for _ in 0..times {
            silo.client().grain::<CounterGrain>(g).bump().await.unwrap();
        }
    }
}

async fn wait_until(what: &str, seconds: u64, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn relay_config() -> RelayConfig {
    RelayConfig {
        retry_max: Duration::from_millis(200),
        ..RelayConfig::default()
    }
}

/// Runs `consumer` with `handler` in a task; returns its stop token and handle.
fn spawn_consumer<F, Fut>(
    consumer: KafkaConsumer,
    handler: F,
) -> (CancellationToken, tokio::task::JoinHandle<KafkaConsumer>)
where
    F: Fn(EventEnvelope) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let stop = CancellationToken::new();
    let task = {
        let stop = stop.clone();
        tokio::spawn(async move {
            consumer.run(handler, stop).await.unwrap();
            consumer
        })
    };
    (stop, task)
}

/// A consumer that records every envelope it is handed.
fn collecting(
    consumer: KafkaConsumer,
) -> (
    Arc<Mutex<Vec<EventEnvelope>>>,
    CancellationToken,
    tokio::task::JoinHandle<KafkaConsumer>,
) {
    let received = Arc::new(Mutex::new(Vec::<EventEnvelope>::new()));
    let into = received.clone();
    let (stop, task) = spawn_consumer(consumer, move |event| {
        into.lock().unwrap().push(event);
        async { Ok(()) }
    });
    (received, stop, task)
}

fn distinct(events: &[EventEnvelope]) -> usize {
    events.iter().map(|e| &e.id).collect::<HashSet<_>>().len()
}

/// After dedupe by id: every grain's counts are exactly 1..=times, in that order.
fn assert_once_in_order(events: &[EventEnvelope], grains: usize, times: u64) {
    let mut seen = HashSet::new();
    let mut per_grain: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for event in events {
        if seen.insert(event.id.clone()) {
            per_grain
                .entry(event.source.key.clone())
                .or_default()
                .push(event.decode::<Bumped>().unwrap().n);
        }
    }
    assert_eq!(per_grain.len(), grains, "events of every grain");
    for (grain, counts) in per_grain {
        assert_eq!(
            counts,
            (1..=times).collect::<Vec<_>>(),
            "grain {grain}: each event once, in commit order"
        );
    }
}

async fn consumer(brokers: &str, topic: &str, config: KafkaConsumerConfig) -> KafkaConsumer {
    KafkaConsumer::connect(brokers, &unique_name("group"), &[topic], config)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_committed_event_arrives_once_in_grain_order() {
    let broker = PrivateTansu::start().await;
    let brokers = broker.brokers();
    let prefix = format!("{}.", unique_name("game"));
    let sink = Arc::new(
        KafkaSink::connect(&brokers, &prefix, KafkaSinkConfig::default())
            .await
            .unwrap(),
    );
    let store = Arc::new(MemoryStore::new());
    let relay = Relay::builder(store.clone())
        .sink(sink.clone())
        .config(relay_config())
        .start();
    let silo = silo(store.clone()).await;
    let (received, stop, task) = collecting(
        consumer(
            &brokers,
            &sink.topic("bumped"),
            KafkaConsumerConfig::default(),
        )
        .await,
    );
    bump(&silo, 0..30, 100).await;
    wait_until("every event arrived", 120, || {
        distinct(&received.lock().unwrap()) >= 3_000
    })
    .await;
    wait_until("the outbox is empty", 30, || {
        store.outbox_entries().is_empty()
    })
    .await;
    stop.cancel();
    task.await.unwrap();
    let events = received.lock().unwrap().clone();
    assert_eq!(distinct(&events), 3_000);
    assert_once_in_order(&events, 30, 100);
    assert!(
        relay.delivered() >= 3_000,
        "the relay counted its deliveries"
    );
    relay.stop().await;
    silo.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_carry_the_grain_as_key_and_the_event_id_in_a_header() {
    let broker = PrivateTansu::start().await;
    let brokers = broker.brokers();
    let sink = Arc::new(
        KafkaSink::connect(&brokers, "fmt.", KafkaSinkConfig::default())
            .await
            .unwrap(),
    );
    let store = Arc::new(MemoryStore::new());
    let relay = Relay::builder(store.clone()).sink(sink.clone()).start();
    let silo = silo(store.clone()).await;
    bump(&silo, 0..4, 5).await;
    wait_until("the outbox is empty", 60, || {
        store.outbox_entries().is_empty()
    })
    .await;
    assert!(
        sink.is_idempotent(),
        "tansu accepts the idempotent producer"
    );
    // A plain Kafka consumer, as a service in another language would read the topic.
    let plain: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", unique_name("plain"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    plain.subscribe(&["fmt.bumped"]).unwrap();
    let mut partitions_of: BTreeMap<String, HashSet<i32>> = BTreeMap::new();
    for _ in 0..20 {
        let record = tokio::time::timeout(Duration::from_secs(30), plain.recv())
            .await
            .expect("20 records within 30 s")
            .unwrap();
        let key = std::str::from_utf8(record.key().unwrap())
            .unwrap()
            .to_owned();
        let envelope = EventEnvelope::from_json(record.payload().unwrap()).unwrap();
        assert_eq!(key, format!("13:kafka.counter:i:{}", envelope.source.key));
        let headers = record.headers().unwrap();
        let id = headers
            .iter()
            .find(|h| h.key == EVENT_ID_HEADER)
            .and_then(|h| h.value)
            .unwrap();
        assert_eq!(id, envelope.id.as_bytes());
        assert!(
            envelope.id.starts_with(store.origin()),
            "the id starts with the store's origin"
        );
        let content_type = headers.iter().find(|h| h.key == "content-type").unwrap();
        assert_eq!(content_type.value, Some(&b"application/json"[..]));
        partitions_of
            .entry(key)
            .or_default()
            .insert(record.partition());
    }
    assert_eq!(partitions_of.len(), 4);
    for (key, partitions) in partitions_of {
        assert_eq!(
            partitions.len(),
            1,
            "all of {key}'s events in one partition"
        );
    }
    relay.stop().await;
    silo.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_stopped_mid_stream_loses_nothing() {
    let broker = PrivateTansu::start().await;
    let brokers = broker.brokers();
    let prefix = format!("{}.", unique_name("mid"));
    let sink = Arc::new(
        KafkaSink::connect(&brokers, &prefix, KafkaSinkConfig::default())
            .await
            .unwrap(),
    );
    let store = Arc::new(MemoryStore::new());
    let silo = Arc::new(silo(store.clone()).await);
    let (received, stop, task) = collecting(
        consumer(
            &brokers,
            &sink.topic("bumped"),
            KafkaConsumerConfig::default(),
        )
        .await,
    );
    let relay = Relay::builder(store.clone())
        .sink(sink.clone())
        .config(relay_config())
        .start();
    let load = {
        let silo = silo.clone();
        tokio::spawn(async move { bump(&silo, 0..20, 100).await })
    };
    wait_until("the relay delivered some events", 60, || {
        relay.delivered() >= 300
    })
    .await;
    relay.stop().await;
    load.await.unwrap();
    assert!(
        !store.outbox_entries().is_empty(),
        "stopped mid-stream: events were left in the outbox"
    );
    let relay = Relay::builder(store.clone())
        .sink(sink.clone())
        .config(relay_config())
        .start();
    wait_until("every event arrived", 120, || {
        distinct(&received.lock().unwrap()) >= 2_000
    })
    .await;
    wait_until("the outbox is empty", 30, || {
        store.outbox_entries().is_empty()
    })
    .await;
    stop.cancel();
    task.await.unwrap();
    assert_once_in_order(&received.lock().unwrap(), 20, 100);
    relay.stop().await;
    Arc::into_inner(silo).unwrap().shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_wait_in_the_outbox_while_the_broker_is_down_and_flow_when_it_returns() {
    let mut broker = PrivateTansu::start().await;
    let brokers = broker.brokers();
    let sink = Arc::new(
        KafkaSink::connect(
            &brokers,
            "down.",
            KafkaSinkConfig {
                delivery_timeout: Duration::from_secs(2),
                ..KafkaSinkConfig::default()
            },
        )
        .await
        .unwrap(),
    );
    let store = Arc::new(MemoryStore::new());
    let silo = silo(store.clone()).await;
    // Delivered once while the broker is up: the sink has created and verified the topic.
    let relay = Relay::builder(store.clone())
        .sink(sink.clone())
        .config(relay_config())
        .start();
    bump(&silo, 0..1, 1).await;
    wait_until("the first event was delivered", 60, || {
        store.outbox_entries().is_empty()
    })
    .await;
    broker.kill();
    bump(&silo, 0..10, 10).await;
    let failures = relay.failures();
    wait_until("the relay failed while the broker was down", 60, || {
        relay.failures() >= failures + 2
    })
    .await;
    assert_eq!(store.outbox_entries().len(), 100, "nothing left the outbox");
    // Memory storage: the broker comes back empty, without the topic; the sink creates it
    // again.
    broker.restart().await;
    wait_until("the events flowed after the broker came back", 120, || {
        store.outbox_entries().is_empty()
    })
    .await;
    let (received, stop, task) = collecting(
        consumer(
            &brokers,
            &sink.topic("bumped"),
            KafkaConsumerConfig::default(),
        )
        .await,
    );
    wait_until("the consumer read the 100 events", 60, || {
        distinct(&received.lock().unwrap()) >= 100
    })
    .await;
    stop.cancel();
    task.await.unwrap();
    let events = received.lock().unwrap().clone();
    assert_eq!(
        distinct(&events),
        100,
        "the events of the outage, none lost"
    );
    let mut per_grain: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut seen = HashSet::new();
    for event in &events {
        if seen.insert(event.id.clone()) {
            per_grain
                .entry(event.source.key.clone())
                .or_default()
                .push(event.decode::<Bumped>().unwrap().n);
        }
    }
    for (grain, counts) in per_grain {
        let first = if grain == "0" { 2 } else { 1 };
        assert_eq!(
            counts,
            (first..first + 10).collect::<Vec<_>>(),
            "grain {grain} in commit order"
        );
    }
    relay.stop().await;
    silo.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_is_dead_lettered_after_its_attempts_without_blocking_the_rest() {
    let broker = PrivateTansu::start().await;
    let brokers = broker.brokers();
    let sink = Arc::new(
        KafkaSink::connect(&brokers, "poison.", KafkaSinkConfig::default())
            .await
            .unwrap(),
    );
    let consumer = consumer(
        &brokers,
        &sink.topic("bumped"),
        KafkaConsumerConfig {
            max_attempts: 3,
            retry_min: Duration::from_millis(20),
            ..KafkaConsumerConfig::default()
        },
    )
    .await;
    let dead_topic = consumer.dead_letter_topics().remove(0);
    assert_eq!(dead_topic, "poison.bumped.dead");
    let store = Arc::new(MemoryStore::new());
    let relay = Relay::builder(store.clone()).sink(sink).start();
    let silo = silo(store.clone()).await;
    bump(&silo, 0..4, 5).await;
    let poison_id = granary_events::event_id(
        store.origin(),
        &granary::GrainId::new("kafka.counter", 2),
        3,
        0,
    );
    let done = Arc::new(Mutex::new(Vec::new()));
    let tries = Arc::new(Mutex::new(0));
    let (handler_done, handler_tries, handler_poison) =
        (done.clone(), tries.clone(), poison_id.clone());
    let (stop, task) = spawn_consumer(consumer, move |event| {
        let poison = event.id == handler_poison;
        if poison {
            *handler_tries.lock().unwrap() += 1;
        } else {
            handler_done.lock().unwrap().push(event);
        }
        async move {
            if poison {
                Err("cannot process this one".into())
            } else {
                Ok(())
            }
        }
    });
    wait_until("the others are processed", 60, || {
        distinct(&done.lock().unwrap()) == 19
    })
    .await;
    // Grain 2's events after the poison one (counts 4 and 5) were processed: not blocked.
    let grain_2: Vec<u64> = done
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.source.key == "2")
        .map(|e| e.decode::<Bumped>().unwrap().n)
        .collect();
    assert_eq!(grain_2, [1, 2, 4, 5]);
    // The dead-letter topic holds the poison record, with why and how many attempts.
    let dead: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", unique_name("dead"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    dead.subscribe(&[dead_topic.as_str()]).unwrap();
    let record = tokio::time::timeout(Duration::from_secs(30), dead.recv())
        .await
        .expect("the poison event was dead-lettered")
        .unwrap();
    let envelope = EventEnvelope::from_json(record.payload().unwrap()).unwrap();
    assert_eq!(envelope.id, poison_id);
    let header = |name: &str| {
        record
            .headers()
            .unwrap()
            .iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value)
            .map(|v| String::from_utf8(v.to_vec()).unwrap())
    };
    assert_eq!(
        header("granary-dead-reason").unwrap(),
        "cannot process this one"
    );
    assert_eq!(header("granary-attempts").unwrap(), "3");
    assert_eq!(header(EVENT_ID_HEADER).unwrap(), poison_id);
    assert_eq!(*tries.lock().unwrap(), 3, "handled max_attempts times");
    stop.cancel();
    task.await.unwrap();
    relay.stop().await;
    silo.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_consumer_takes_its_dead_letter_topic_along() {
    let broker = PrivateTansu::start().await;
    let brokers = broker.brokers();
    let consumer = consumer(&brokers, "del.bumped", KafkaConsumerConfig::default()).await;
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .create()
            .unwrap();
    let topics = move |admin: &rdkafka::admin::AdminClient<_>| -> HashSet<String> {
        admin
            .inner()
            .fetch_metadata(None, Duration::from_secs(10))
            .unwrap()
            .topics()
            .iter()
            .map(|t| t.name().to_owned())
            .collect()
    };
    let before = topics(&admin);
    assert!(before.contains("del.bumped") && before.contains("del.bumped.dead"));
    consumer.delete().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let after = topics(&admin);
        assert!(after.contains("del.bumped"), "the topic read stays");
        if !after.contains("del.bumped.dead") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dead-letter topic was not deleted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

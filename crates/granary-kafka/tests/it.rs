//! The Kafka sink and consumer against a real Kafka-protocol broker: a private `tansu broker`
//! (memory storage) started by each test on a free loopback port; over TLS and SASL SCRAM
//! behind a TLS-terminating proxy (that broker on SQLite storage, which keeps its users).
#![allow(clippy::unwrap_used, reason = "test helpers fail loudly")]

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use granary::provider::MemoryStore;
use granary_events::{EventEnvelope, Relay, RelayConfig};
use granary_kafka::{
    ClientProperties, EVENT_ID_HEADER, KafkaConsumer, KafkaConsumerConfig, KafkaSink,
    KafkaSinkConfig,
};
use granary_testkit::events::{
    Deliveries, HoldAfter, assert_once_in_order, assert_once_in_order_with, bump, bumped_id,
    outbox_drained, silo, spawn_consumer, wait_until,
};
use granary_testkit::redis_server::unique_name;
use granary_testkit::tansu_server::PrivateTansu;
use granary_testkit::tls::{TestPki, TlsProxy, connect_fails, free_port};
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Headers;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

fn relay_config() -> RelayConfig {
    RelayConfig {
        retry_max: Duration::from_millis(200),
        ..RelayConfig::default()
    }
}

/// A silo on a fresh in-memory store whose relay (with [`relay_config`]) delivers to `sink`.
async fn relayed(sink: Arc<KafkaSink>) -> (Arc<MemoryStore>, Relay, granary::Silo) {
    let store = Arc::new(MemoryStore::new());
    let relay = Relay::builder(store.clone())
        .sink(sink)
        .config(relay_config())
        .start();
    let silo = silo(store.clone()).await;
    (store, relay, silo)
}

/// A consumer run in a task that records every envelope it is handed; returns the deliveries,
/// the stop token and the task (which hands the consumer back).
fn collecting(
    consumer: KafkaConsumer,
) -> (Deliveries, CancellationToken, JoinHandle<KafkaConsumer>) {
    let received = Deliveries::new();
    let handler = received.recorder();
    let (stop, task) = spawn_consumer(|stop| async move {
        consumer.run(handler, stop).await.unwrap();
        consumer
    });
    (received, stop, task)
}

/// A sink with the default configuration, topics `<prefix><topic>`.
async fn sink(brokers: &str, prefix: &str) -> Arc<KafkaSink> {
    Arc::new(
        KafkaSink::connect(brokers, prefix, KafkaSinkConfig::default())
            .await
            .unwrap(),
    )
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
    let sink = sink(&brokers, &prefix).await;
    let (store, relay, silo) = relayed(sink.clone()).await;
    let (received, stop, task) = collecting(
        consumer(
            &brokers,
            &sink.topic("bumped"),
            KafkaConsumerConfig::default(),
        )
        .await,
    );
    bump(&silo, 0..30, 100).await;
    wait_until("every event arrived", Duration::from_secs(120), || {
        received.distinct() >= 3_000
    })
    .await;
    outbox_drained(&store, Duration::from_secs(30)).await;
    stop.cancel();
    task.await.unwrap();
    assert_eq!(received.distinct(), 3_000);
    assert_once_in_order(&received.events(), 30, 100);
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
    let sink = sink(&brokers, "fmt.").await;
    let store = Arc::new(MemoryStore::new());
    let relay = Relay::builder(store.clone()).sink(sink.clone()).start();
    let silo = silo(store.clone()).await;
    bump(&silo, 0..4, 5).await;
    outbox_drained(&store, Duration::from_secs(60)).await;
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
        assert_eq!(
            key,
            format!("21:testkit.event-counter:i:{}", envelope.source.key)
        );
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
    let sink = sink(&brokers, &prefix).await;
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
    let holding = Arc::new(HoldAfter::new(sink.clone(), 300));
    let relay = Relay::builder(store.clone())
        .sink(holding.clone())
        .config(relay_config())
        .start();
    let load = {
        let silo = silo.clone();
        tokio::spawn(async move { bump(&silo, 0..20, 100).await })
    };
    wait_until(
        "the relay delivered some events and holds a batch",
        Duration::from_secs(60),
        || holding.holding(),
    )
    .await;
    assert!(relay.delivered() >= 300);
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
    wait_until("every event arrived", Duration::from_secs(120), || {
        received.distinct() >= 2_000
    })
    .await;
    outbox_drained(&store, Duration::from_secs(30)).await;
    stop.cancel();
    task.await.unwrap();
    assert_once_in_order(&received.events(), 20, 100);
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
    wait_until(
        "the first event was delivered",
        Duration::from_secs(60),
        || store.outbox_entries().is_empty(),
    )
    .await;
    broker.kill();
    bump(&silo, 0..10, 10).await;
    let failures = relay.failures();
    wait_until(
        "the relay failed while the broker was down",
        Duration::from_secs(60),
        || relay.failures() >= failures + 2,
    )
    .await;
    assert_eq!(store.outbox_entries().len(), 100, "nothing left the outbox");
    // Memory storage: the broker comes back empty, without the topic; the sink creates it
    // again.
    broker.restart().await;
    wait_until(
        "the events flowed after the broker came back",
        Duration::from_secs(120),
        || store.outbox_entries().is_empty(),
    )
    .await;
    let (received, stop, task) = collecting(
        consumer(
            &brokers,
            &sink.topic("bumped"),
            KafkaConsumerConfig::default(),
        )
        .await,
    );
    wait_until(
        "the consumer read the 100 events",
        Duration::from_secs(60),
        || received.distinct() >= 100,
    )
    .await;
    stop.cancel();
    task.await.unwrap();
    assert_eq!(
        received.distinct(),
        100,
        "the events of the outage, none lost"
    );
    // Grain 0's first event went with the broker's memory: its outage events are counts 2 to 11.
    assert_once_in_order_with(&received.events(), 10, |grain| {
        if grain == "0" { 2..=11 } else { 1..=10 }
    });
    relay.stop().await;
    silo.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_is_dead_lettered_after_its_attempts_without_blocking_the_rest() {
    let broker = PrivateTansu::start().await;
    let brokers = broker.brokers();
    let sink = sink(&brokers, "poison.").await;
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
    let poison_id = bumped_id(store.origin(), 2, 3);
    let done = Deliveries::new();
    let handler = done.failing_on(&poison_id);
    let (stop, task) = spawn_consumer(|stop| async move {
        consumer.run(handler, stop).await.unwrap();
        consumer
    });
    wait_until("the others are processed", Duration::from_secs(60), || {
        done.distinct() == 19
    })
    .await;
    // Grain 2's events after the poison one (counts 4 and 5) were processed: not blocked.
    assert_eq!(done.counts_of("2"), [1, 2, 4, 5]);
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
    assert_eq!(done.failures(), 3, "handled max_attempts times");
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

/// The SCRAM user the TLS + SASL test's broker knows, and its password.
const USER: &str = "granary";
const PASSWORD: &str = "granary-secret";

/// The properties of a SASL_SSL client trusting `ca`, authenticating as [`USER`] with
/// `password` by the SASL `mechanism` (`SCRAM-SHA-256`, `SCRAM-SHA-512`, `PLAIN`, …).
fn sasl_ssl(ca: &std::path::Path, mechanism: &str, password: &str) -> ClientProperties {
    ClientProperties::new()
        .set("security.protocol", "SASL_SSL")
        .and_then(|p| p.set("sasl.mechanism", mechanism))
        .and_then(|p| p.set("sasl.username", USER))
        .and_then(|p| p.set("sasl.password", password))
        .and_then(|p| p.set("ssl.ca.location", ca.to_str().unwrap()))
        .unwrap()
}

/// [`sasl_ssl`] with SCRAM-SHA-256 and the right password.
fn scram_ssl(ca: &std::path::Path) -> ClientProperties {
    sasl_ssl(ca, "SCRAM-SHA-256", PASSWORD)
}

/// A sink connecting to `brokers` with `properties`, which must fail within 30 s; the message.
async fn refused(brokers: &str, properties: ClientProperties) -> String {
    let config = KafkaSinkConfig {
        properties,
        ..KafkaSinkConfig::default()
    };
    connect_fails(
        Duration::from_secs(30),
        Box::pin(KafkaSink::connect(brokers, "never.", config)),
    )
    .await
}

// tansu 0.6 has no TLS listener of its own (its `--cert`/`--key` are not used by its accept
// loop): a TLS-terminating proxy stands in front of it, and the broker advertises the proxy's
// address. It requires SASL (`--authentication`) with SCRAM: its SCRAM users are created
// beforehand with `tansu user create` and kept in SQLite storage (`start_with_scram_user`).
// SASL PLAIN is not tested: tansu 0.6 offers only SCRAM-SHA-256, SCRAM-SHA-512 and
// OAUTHBEARER, and closes a PLAIN handshake; `sasl_ssl` keeps the mechanism a parameter for a
// broker that has it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_flow_over_tls_with_sasl_and_bad_certificates_fail_at_connect() {
    let pki = TestPki::generate();
    let proxy_port = free_port();
    let brokers = format!("localhost:{proxy_port}");
    let broker = PrivateTansu::start_with_scram_user(&brokers, USER, PASSWORD).await;
    let _proxy = TlsProxy::start_at(proxy_port, broker.addr(), &pki.server).await;
    let prefix = format!("{}.", unique_name("tls"));
    let config = KafkaSinkConfig {
        properties: scram_ssl(&pki.ca),
        ..KafkaSinkConfig::default()
    };
    let sink = Arc::new(KafkaSink::connect(&brokers, &prefix, config).await.unwrap());
    let (store, relay, silo) = relayed(sink.clone()).await;
    let config = KafkaConsumerConfig {
        properties: scram_ssl(&pki.ca),
        ..KafkaConsumerConfig::default()
    };
    let (received, stop, task) =
        collecting(consumer(&brokers, &sink.topic("bumped"), config).await);
    bump(&silo, 0..4, 5).await;
    wait_until(
        "every event arrived over TLS",
        Duration::from_secs(60),
        || received.distinct() >= 20,
    )
    .await;
    outbox_drained(&store, Duration::from_secs(30)).await;
    stop.cancel();
    task.await.unwrap();
    assert_once_in_order(&received.events(), 4, 5);
    relay.stop().await;
    silo.shutdown().await.unwrap();

    // Each bad case fails at connect, after the sink's 10 s metadata deadline: all at once. A
    // wrong password's message is the metadata request's `BrokerTransportFailure`, as the
    // others'; librdkafka logs the cause ("SASL SCRAM authentication failed: broker responded
    // with invalid-proof").
    let expired_port = free_port();
    let _expired = TlsProxy::start_at(expired_port, broker.addr(), &pki.expired_server).await;
    let expired = format!("localhost:{expired_port}");
    let plaintext = broker.brokers();
    let cases = [
        (
            "wrong password (SCRAM-SHA-256)",
            refused(&brokers, sasl_ssl(&pki.ca, "SCRAM-SHA-256", "wrong")),
        ),
        (
            "wrong password (SCRAM-SHA-512)",
            refused(&brokers, sasl_ssl(&pki.ca, "SCRAM-SHA-512", "wrong")),
        ),
        ("wrong CA", refused(&brokers, scram_ssl(&pki.other_ca))),
        (
            "plaintext at TLS",
            refused(&brokers, ClientProperties::new()),
        ),
        ("TLS at plaintext", refused(&plaintext, scram_ssl(&pki.ca))),
        ("expired", refused(&expired, scram_ssl(&pki.ca))),
    ];
    let messages = futures::future::join_all(
        cases.map(|(case, refused)| async move { (case, refused.await) }),
    )
    .await;
    for (case, message) in messages {
        assert!(message.contains("cannot reach Kafka"), "{case}: {message}");
    }
    // The right password by SCRAM-SHA-512 connects (so the broker still serves).
    let config = KafkaSinkConfig {
        properties: sasl_ssl(&pki.ca, "SCRAM-SHA-512", PASSWORD),
        ..KafkaSinkConfig::default()
    };
    KafkaSink::connect(&brokers, &prefix, config).await.unwrap();
}

#[test]
fn properties_granary_sets_itself_are_refused_and_secrets_are_not_shown() {
    for reserved in granary_kafka::RESERVED {
        let err = ClientProperties::new().set(reserved, "x").unwrap_err();
        assert!(err.contains(reserved), "{err}");
    }
    let properties = scram_ssl(std::path::Path::new("/ca.pem"));
    let shown = format!("{properties:?}");
    assert!(
        shown.contains("SASL_SSL") && !shown.contains(PASSWORD),
        "{shown}"
    );
}

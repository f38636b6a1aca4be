//! The NATS JetStream sink and consumer against the real server at 127.0.0.1:4222 (or
//! `GRANARY_TEST_NATS`), and against private servers: one that goes down, and ones that
//! require TLS.
#![allow(clippy::unwrap_used, reason = "test helpers fail loudly")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use granary::Silo;
use granary::provider::MemoryStore;
use granary_events::{EventEnvelope, Outgoing, Relay, Sink};
use granary_nats::{NatsConsumer, NatsConsumerConfig, NatsSink, NatsTls};
use granary_testkit::events::{
    Deliveries, assert_once_in_order, bump, bumped_id, silo, spawn_consumer, wait_until,
};
use granary_testkit::nats_server::PrivateNats;
use granary_testkit::redis_server::unique_name;
use granary_testkit::tls::{TestPki, connect_fails};

/// How long a test waits for the events to arrive.
const WAIT: Duration = Duration::from_secs(30);

fn nats_url() -> String {
    let url = std::env::var("GRANARY_TEST_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let addr = url.trim_start_matches("nats://").to_owned();
    assert!(
        std::net::TcpStream::connect(&addr).is_ok(),
        "these tests need NATS with JetStream at {url}: start `nats-server -js` (Debian: apt-get \
         install nats-server), or set GRANARY_TEST_NATS; `./test` does it for you"
    );
    url
}

/// A silo whose grains `0..grains` each commit `times` events, relayed to `sink`.
async fn publish_through(
    sink: Arc<dyn Sink>,
    grains: i64,
    times: u64,
) -> (Silo, Relay, Arc<MemoryStore>) {
    let store = Arc::new(MemoryStore::new());
    let relay = Relay::builder(store.clone()).sink(sink).start();
    let silo = silo(store.clone()).await;
    bump(&silo, 0..grains, times).await;
    (silo, relay, store)
}

/// Deletes the streams a test created (the server is shared).
async fn clean_up(url: &str, streams: &[String]) {
    let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
    for stream in streams {
        let _ = js.delete_stream(stream).await;
    }
}

async fn stream_messages(url: &str, stream: &str) -> u64 {
    let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
    let mut stream = js.get_stream(stream).await.unwrap();
    stream.info().await.unwrap().state.messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_arrive_once_in_order_and_republishing_is_deduplicated_by_the_server() {
    let url = nats_url();
    let name = unique_name("ev");
    let sink = Arc::new(
        NatsSink::connect(&url, &name, &format!("{name}."))
            .await
            .unwrap(),
    );
    let (silo, relay, _store) = publish_through(sink.clone(), 40, 50).await;
    let consumer = NatsConsumer::connect(
        &url,
        &name,
        "reader",
        &sink.subject(">"),
        NatsConsumerConfig::default(),
    )
    .await
    .unwrap();
    let received = Deliveries::new();
    let handler = received.recorder();
    let (stop, run) = spawn_consumer(|stop| async move { consumer.run(handler, stop).await });
    wait_until("every event arrived", WAIT, || received.len() >= 2_000).await;
    // The relay publishing the same events again (as after a crash before its outbox ack):
    // the server drops them by Nats-Msg-Id.
    let again: Vec<Outgoing> = received
        .events()
        .into_iter()
        .take(100)
        .map(|e| Outgoing::new("bumped", e))
        .collect();
    sink.publish(&again).await.unwrap();
    assert_eq!(
        stream_messages(&url, &name).await,
        2_000,
        "no duplicate stored"
    );
    stop.cancel();
    run.await.unwrap().unwrap();
    let events = received.events();
    assert_eq!((events.len(), received.distinct()), (2_000, 2_000));
    assert_once_in_order(&events, 40, 50);
    relay.stop().await;
    silo.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_is_dead_lettered_after_max_deliveries_without_blocking_the_rest() {
    let url = nats_url();
    let name = unique_name("ev");
    let sink = Arc::new(
        NatsSink::connect(&url, &name, &format!("{name}."))
            .await
            .unwrap(),
    );
    // Where dead events are kept.
    let dead_subject = format!("{name}-dead");
    let js = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
    js.get_or_create_stream(async_nats::jetstream::stream::Config {
        name: format!("{name}-dead"),
        subjects: vec![dead_subject.clone()],
        ..Default::default()
    })
    .await
    .unwrap();
    let (silo, relay, store) = publish_through(sink.clone(), 4, 5).await;
    let config = NatsConsumerConfig {
        max_deliver: 3,
        retry_delay: Duration::from_millis(50),
        dead_letter_subject: Some(dead_subject),
        ..NatsConsumerConfig::default()
    };
    let consumer = NatsConsumer::connect(&url, &name, "picky", &sink.subject(">"), config)
        .await
        .unwrap();
    let poison_id = bumped_id(store.origin(), 2, 3);
    let done = Deliveries::new();
    let handler = done.failing_on(&poison_id);
    let (stop, run) = spawn_consumer(|stop| async move { consumer.run(handler, stop).await });
    wait_until("the others are processed", WAIT, || done.distinct() == 19).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while stream_messages(&url, &format!("{name}-dead")).await == 0 {
        assert!(
            Instant::now() < deadline,
            "the poison event was not dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    run.await.unwrap().unwrap();
    assert_eq!(done.failures(), 3, "delivered max_deliver times");
    let dead = js.get_stream(format!("{name}-dead")).await.unwrap();
    let message = dead.get_raw_message(1).await.unwrap();
    let envelope = EventEnvelope::from_json(&message.payload).unwrap();
    assert_eq!(envelope.id, poison_id);
    relay.stop().await;
    silo.shutdown().await.unwrap();
    clean_up(&url, &[name.clone(), format!("{name}-dead")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_wait_in_the_outbox_while_nats_is_down_and_flow_when_it_returns() {
    let mut server = PrivateNats::start().await;
    let url = server.url();
    let sink = Arc::new(NatsSink::connect(&url, "EVENTS", "events.").await.unwrap());
    server.kill();
    let store = Arc::new(MemoryStore::new());
    let silo = silo(store.clone()).await;
    bump(&silo, 0..10, 10).await;
    let relay = Relay::builder(store.clone())
        .sink(sink)
        .config(granary_events::RelayConfig {
            retry_max: Duration::from_millis(200),
            ..granary_events::RelayConfig::default()
        })
        .start();
    wait_until("the relay failed while NATS was down", WAIT, || {
        relay.failures() >= 1
    })
    .await;
    assert_eq!(store.outbox_entries().len(), 100, "nothing left the outbox");
    server.restart().await;
    wait_until(
        "the events flowed after NATS came back",
        Duration::from_secs(60),
        || store.outbox_entries().is_empty(),
    )
    .await;
    assert_eq!(
        stream_messages(&url, "EVENTS").await,
        100,
        "each once (Nats-Msg-Id)"
    );
    relay.stop().await;
    silo.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_consumer_is_gone_and_its_stream_stays() {
    let url = nats_url();
    let name = unique_name("del");
    let sink = NatsSink::connect(&url, &name, &format!("{name}."))
        .await
        .unwrap();
    let consumer = NatsConsumer::connect(
        &url,
        &name,
        "short-lived",
        &sink.subject(">"),
        NatsConsumerConfig::default(),
    )
    .await
    .unwrap();
    let js = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
    let stream = js.get_stream(&name).await.unwrap();
    assert!(stream.consumer_info("short-lived").await.is_ok());
    consumer.delete().await.unwrap();
    assert!(
        stream.consumer_info("short-lived").await.is_err(),
        "the consumer is deleted"
    );
    assert!(js.get_stream(&name).await.is_ok(), "the stream stays");
    clean_up(&url, &[name]).await;
}

/// A grain's events of two types (two subjects of one stream) reach a stock client reading
/// the stream's wildcard in commit order: the relay hands the sink one batch in commit order,
/// not one batch per topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_several_types_reach_one_stream_in_commit_order_per_grain() {
    use futures::StreamExt as _;

    let url = nats_url();
    let name = unique_name("ev-order");
    let prefix = format!("{name}.");
    let sink = Arc::new(NatsSink::connect(&url, &name, &prefix).await.unwrap());
    // Everything committed before the relay starts, so that its batches mix both types.
    let store = Arc::new(MemoryStore::new());
    let silo = silo(store.clone()).await;
    granary_testkit::events::bump_mixed(&silo, 0..8, 30, 3).await;
    let relay = Relay::builder(store.clone()).sink(sink).start();
    granary_testkit::events::outbox_drained(&store, WAIT).await;

    // A stock client: an ephemeral ordered consumer of `<prefix>>`.
    let js = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
    let stream = js.get_stream(&name).await.unwrap();
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
            filter_subject: format!("{prefix}>"),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut events = Vec::new();
    let mut subjects = std::collections::HashSet::new();
    while events.len() < 240 {
        let message = tokio::time::timeout(WAIT, messages.next())
            .await
            .expect("every event is in the stream")
            .unwrap()
            .unwrap();
        subjects.insert(message.subject.to_string());
        events.push(EventEnvelope::from_bytes(&message.payload).unwrap());
    }
    assert_eq!(
        subjects,
        [format!("{prefix}bumped"), format!("{prefix}milestone")]
            .into_iter()
            .collect(),
        "two subjects"
    );
    assert_once_in_order(&events, 8, 30);
    relay.stop().await;
    silo.shutdown().await.unwrap();
    clean_up(&url, &[name]).await;
}

/// Connects a sink to `url` with `tls`, which must fail within 15 s; the error's message.
async fn refused_over_tls(url: &str, tls: &NatsTls) -> String {
    let connect = NatsSink::connect_with_tls(url, "EVENTS", "events.", tls);
    connect_fails(Duration::from_secs(15), Box::pin(connect)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_flow_over_tls_with_client_certificates_and_bad_ones_fail_at_connect() {
    let pki = TestPki::generate();
    // The server requires TLS and a client certificate signed by the CA.
    let server = PrivateNats::start_tls(&pki.server, Some(&pki.ca)).await;
    let url = server.url().replace("nats://", "tls://");
    let client = Some((pki.client.cert.clone(), pki.client.key.clone()));
    let tls = NatsTls {
        ca: Some(pki.ca.clone()),
        client: client.clone(),
    };
    let sink = Arc::new(
        NatsSink::connect_with_tls(&url, "EVENTS", "events.", &tls)
            .await
            .unwrap(),
    );
    let (silo, relay, _store) = publish_through(sink.clone(), 4, 5).await;
    let config = NatsConsumerConfig {
        tls: tls.clone(),
        ..NatsConsumerConfig::default()
    };
    let consumer = NatsConsumer::connect(&url, "EVENTS", "reader", &sink.subject(">"), config)
        .await
        .unwrap();
    let received = Deliveries::new();
    let handler = received.recorder();
    let (stop, run) = spawn_consumer(|stop| async move { consumer.run(handler, stop).await });
    wait_until("every event arrived over TLS", WAIT, || {
        received.len() >= 20
    })
    .await;
    stop.cancel();
    run.await.unwrap().unwrap();
    assert_once_in_order(&received.events(), 4, 5);
    relay.stop().await;
    silo.shutdown().await.unwrap();

    let wrong_ca = NatsTls {
        ca: Some(pki.other_ca.clone()),
        client: client.clone(),
    };
    let message = refused_over_tls(&url, &wrong_ca).await;
    assert!(message.contains("UnknownIssuer"), "wrong CA: {message}");
    let without_client = NatsTls {
        ca: Some(pki.ca.clone()),
        client: None,
    };
    let message = refused_over_tls(&url, &without_client).await;
    assert!(
        message.contains("cannot connect"),
        "no client certificate: {message}"
    );
    // A client that does not trust the server's CA cannot fall back to plaintext.
    let message = refused_over_tls(&server.url(), &NatsTls::default()).await;
    assert!(
        message.contains("cannot connect"),
        "plaintext client: {message}"
    );

    // A TLS client at a plaintext server, and a server with an expired certificate.
    let plain = PrivateNats::start().await;
    let message = refused_over_tls(&plain.url(), &tls).await;
    assert!(
        message.contains("cannot connect"),
        "TLS at plaintext: {message}"
    );
    let expired = PrivateNats::start_tls(&pki.expired_server, None).await;
    let message = refused_over_tls(&expired.url(), &without_client).await;
    assert!(
        message.to_lowercase().contains("expired"),
        "expired: {message}"
    );
}

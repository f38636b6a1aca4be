//! The RabbitMQ sink and consumer against the real broker at 127.0.0.1:5672 (or
//! `GRANARY_TEST_AMQP`), in plaintext and over TLS (`amqps://`, through a TLS-terminating
//! proxy in front of it).
#![allow(clippy::unwrap_used, reason = "test helpers fail loudly")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use granary::provider::MemoryStore;
use granary_events::{EventEnvelope, Relay, RelayConfig};
use granary_rabbitmq::{RabbitConsumer, RabbitConsumerConfig, RabbitSink, RabbitTls};
use granary_testkit::events::{
    Deliveries, assert_once_in_order, bump, bumped_id, outbox_drained, silo, spawn_consumer,
    wait_until,
};
use granary_testkit::redis_server::unique_name;
use granary_testkit::tls::{TestPki, TlsProxy, connect_fails};

/// How long a test waits for the events to arrive.
const WAIT: Duration = Duration::from_secs(30);

fn amqp_uri() -> String {
    if let Ok(uri) = std::env::var("GRANARY_TEST_AMQP") {
        return uri;
    }
    assert!(
        std::net::TcpStream::connect("127.0.0.1:5672").is_ok(),
        "these tests need RabbitMQ at 127.0.0.1:5672 (guest/guest): start `rabbitmq-server \
         -detached` (Debian: apt-get install rabbitmq-server), or set GRANARY_TEST_AMQP; \
         `./test` does it for you"
    );
    "amqp://guest:guest@127.0.0.1:5672/%2f".into()
}

/// Deletes what a test declared (the broker is shared).
async fn clean_up(uri: &str, exchange: &str, queue: &str) {
    let connection = lapin::Connection::connect(uri, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    for q in [
        queue.to_owned(),
        format!("{queue}.dead"),
        format!("{queue}.retry"),
    ] {
        let _ = channel
            .queue_delete(
                q.as_str().into(),
                lapin::options::QueueDeleteOptions::default(),
            )
            .await;
    }
    for x in [exchange.to_owned(), format!("{queue}.dlx")] {
        let _ = channel
            .exchange_delete(
                x.as_str().into(),
                lapin::options::ExchangeDeleteOptions::default(),
            )
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unroutable_events_wait_in_the_outbox_then_arrive_once_in_order() {
    let uri = amqp_uri();
    let name = unique_name("ex");
    let sink = Arc::new(RabbitSink::connect(&uri, &name, "game.").await.unwrap());
    let store = Arc::new(MemoryStore::new());
    let relay = Relay::builder(store.clone())
        .sink(sink.clone())
        .config(RelayConfig {
            retry_max: Duration::from_millis(100),
            ..RelayConfig::default()
        })
        .start();
    let silo = silo(store.clone()).await;
    bump(&silo, 0..40, 50).await;
    // No queue is bound yet: RabbitMQ returns the mandatory messages, the relay keeps them.
    wait_until("the relay saw returned messages", WAIT, || {
        relay.failures() >= 2
    })
    .await;
    assert_eq!(
        store.outbox_entries().len(),
        2_000,
        "nothing left the outbox"
    );

    let consumer = RabbitConsumer::connect(
        &uri,
        &name,
        &format!("{name}-q"),
        "game.#",
        RabbitConsumerConfig::default(),
    )
    .await
    .unwrap();
    let received = Deliveries::new();
    let handler = received.recorder();
    let (stop, task) = spawn_consumer(|stop| async move { consumer.run(handler, stop).await });
    wait_until("every event arrived", WAIT, || received.len() >= 2_000).await;
    outbox_drained(&store, WAIT).await;
    stop.cancel();
    task.await.unwrap().unwrap();
    assert_eq!(received.distinct(), 2_000, "every event, once after dedupe");
    assert_once_in_order(&received.events(), 40, 50);
    relay.stop().await;
    silo.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_is_dead_lettered_after_its_attempts_without_blocking_the_rest() {
    let uri = amqp_uri();
    let name = unique_name("ex");
    let queue = format!("{name}-q");
    let consumer = RabbitConsumer::connect(
        &uri,
        &name,
        &queue,
        "game.#",
        RabbitConsumerConfig {
            max_attempts: 3,
            retry_delay: Duration::from_millis(50),
            ..RabbitConsumerConfig::default()
        },
    )
    .await
    .unwrap();
    let dead_queue = consumer.dead_letter_queue();
    let sink = Arc::new(RabbitSink::connect(&uri, &name, "game.").await.unwrap());
    let store = Arc::new(MemoryStore::new());
    let relay = Relay::builder(store.clone()).sink(sink).start();
    let silo = silo(store.clone()).await;
    bump(&silo, 0..4, 5).await;
    let poison_id = bumped_id(store.origin(), 2, 3);
    let done = Deliveries::new();
    let handler = done.failing_on(&poison_id);
    let (stop, task) = spawn_consumer(|stop| async move { consumer.run(handler, stop).await });
    wait_until("the others are processed", WAIT, || done.distinct() == 19).await;
    // The dead-letter queue receives the poison event.
    let connection = lapin::Connection::connect(&uri, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let dead = loop {
        let got = channel
            .basic_get(
                dead_queue.as_str().into(),
                lapin::options::BasicGetOptions::default(),
            )
            .await
            .unwrap();
        if let Some(message) = got {
            break message;
        }
        assert!(
            Instant::now() < deadline,
            "the poison event was not dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let envelope = EventEnvelope::from_json(&dead.delivery.data).unwrap();
    assert_eq!(envelope.id, poison_id);
    assert_eq!(done.failures(), 3, "delivered max_attempts times");
    stop.cancel();
    task.await.unwrap().unwrap();
    relay.stop().await;
    silo.shutdown().await.unwrap();
    clean_up(&uri, &name, &queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_consumer_takes_its_queues_along() {
    let uri = amqp_uri();
    let name = unique_name("del");
    let consumer = RabbitConsumer::connect(
        &uri,
        &name,
        &format!("{name}.q"),
        "#",
        RabbitConsumerConfig::default(),
    )
    .await
    .unwrap();
    consumer.delete().await.unwrap();
    let connection = lapin::Connection::connect(&uri, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    for queue in [
        format!("{name}.q"),
        format!("{name}.q.retry"),
        format!("{name}.q.dead"),
    ] {
        // A passive declare fails (and closes its channel) when the queue does not exist.
        let channel = connection.create_channel().await.unwrap();
        let found = channel
            .queue_declare(
                queue.as_str().into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await;
        assert!(found.is_err(), "queue {queue} was deleted");
    }
    let channel = connection.create_channel().await.unwrap();
    channel
        .exchange_delete(
            name.as_str().into(),
            lapin::options::ExchangeDeleteOptions::default(),
        )
        .await
        .unwrap();
}

/// A grain's events of two types (two routing keys) reach a stock client's queue bound with
/// `#` in commit order: the relay hands the sink one batch in commit order, not one batch per
/// topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_several_types_reach_one_queue_in_commit_order_per_grain() {
    use futures::StreamExt as _;
    use lapin::options::{
        BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions,
    };
    use lapin::types::FieldTable;

    let uri = amqp_uri();
    let name = unique_name("ex-order");
    let queue = format!("{name}-q");
    let sink = Arc::new(RabbitSink::connect(&uri, &name, "game.").await.unwrap());
    // A stock client's queue, bound to every routing key of the exchange.
    let connection = lapin::Connection::connect(&uri, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            queue.as_str().into(),
            name.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    // Everything committed before the relay starts, so that its batches mix both types.
    let store = Arc::new(MemoryStore::new());
    let silo = silo(store.clone()).await;
    granary_testkit::events::bump_mixed(&silo, 0..8, 30, 3).await;
    let relay = Relay::builder(store.clone()).sink(sink).start();
    outbox_drained(&store, WAIT).await;

    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "order-test".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut events = Vec::new();
    let mut keys = std::collections::HashSet::new();
    while events.len() < 240 {
        let delivery = tokio::time::timeout(WAIT, consumer.next())
            .await
            .expect("every event is in the queue")
            .unwrap()
            .unwrap();
        keys.insert(delivery.routing_key.to_string());
        events.push(EventEnvelope::from_bytes(&delivery.data).unwrap());
        delivery.ack(BasicAckOptions::default()).await.unwrap();
    }
    assert_eq!(
        keys,
        ["game.bumped", "game.milestone"]
            .into_iter()
            .map(str::to_owned)
            .collect(),
        "two routing keys"
    );
    assert_once_in_order(&events, 8, 30);
    relay.stop().await;
    silo.shutdown().await.unwrap();
    clean_up(&uri, &name, &queue).await;
}

/// A batch goes out in its order, byte for byte: the sink queues every message of a batch
/// before it waits for any write or confirm, and a stock client's queue bound to both routing
/// keys holds the batch's events in exactly the batch's order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_reaches_a_queue_in_exactly_its_order() {
    use futures::StreamExt as _;
    use granary_events::{Format, Outgoing, Sink as _};
    use lapin::options::{
        BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions,
    };
    use lapin::types::FieldTable;

    let uri = amqp_uri();
    let name = unique_name("ex-batch");
    let queue = format!("{name}-q");
    let sink = RabbitSink::connect(&uri, &name, "game.")
        .await
        .unwrap()
        .with_format("packed", Format::MessagePack);
    let connection = lapin::Connection::connect(&uri, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            queue.as_str().into(),
            name.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let batch: Vec<Outgoing> = (0..1_000u64)
        .map(|n| {
            let topic = if n % 3 == 0 { "packed" } else { "json" };
            let envelope = EventEnvelope::from_json(
                format!(
                    r#"{{"id":"g:{n}","type":"{topic}","source":{{"type":"g","key":"k{}","key_kind":"string"}},"version":{n},"index":0,"timestamp_ms":{n},"trace":null,"payload":{{"n":{n}}}}}"#,
                    n % 7
                )
                .as_bytes(),
            )
            .unwrap();
            Outgoing::new(topic, envelope)
        })
        .collect();
    sink.publish(&batch).await.unwrap();
    // Confirmed: every message is in the queue, and nothing more.
    let declared = channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(declared.message_count(), 1_000);

    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "batch-test".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    for out in &batch {
        let delivery = tokio::time::timeout(WAIT, consumer.next())
            .await
            .expect("every event is in the queue")
            .unwrap()
            .unwrap();
        let format = if &*out.topic == "packed" {
            Format::MessagePack
        } else {
            Format::Json
        };
        assert_eq!(
            delivery.routing_key.as_str(),
            format!("game.{}", out.topic),
            "{}",
            out.event.id
        );
        assert_eq!(delivery.data, out.event.encode(format), "{}", out.event.id);
        let properties = &delivery.properties;
        assert_eq!(
            properties.message_id().as_ref().map(|m| m.as_str()),
            Some(out.event.id.as_str())
        );
        assert_eq!(
            properties.content_type().as_ref().map(|c| c.as_str()),
            Some(format.content_type())
        );
        delivery.ack(BasicAckOptions::default()).await.unwrap();
    }
    drop(consumer);
    channel
        .queue_delete(
            queue.as_str().into(),
            lapin::options::QueueDeleteOptions::default(),
        )
        .await
        .unwrap();
    channel
        .exchange_delete(
            name.as_str().into(),
            lapin::options::ExchangeDeleteOptions::default(),
        )
        .await
        .unwrap();
}

/// Connects a sink to `uri` with `tls`, which must fail within 20 s; the error's message.
async fn refused_over_tls(uri: &str, tls: &RabbitTls) -> String {
    let exchange = unique_name("never");
    let connect = RabbitSink::connect_with_tls(uri, &exchange, "game.", tls);
    connect_fails(Duration::from_secs(20), Box::pin(connect)).await
}

/// The shared broker's address, from its URI.
async fn broker_address(uri: &str) -> std::net::SocketAddr {
    let host_port = uri
        .rsplit('@')
        .next()
        .and_then(|rest| rest.split('/').next())
        .unwrap();
    tokio::net::lookup_host(host_port)
        .await
        .unwrap()
        .next()
        .unwrap()
}

// The shared RabbitMQ has no TLS listener, and adding one means restarting it with new
// configuration: a TLS-terminating proxy in front of it (as a load balancer in front of a
// broker would be) is the TLS server these tests talk to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_flow_over_amqps_and_bad_certificates_fail_at_connect() {
    let uri = amqp_uri();
    let broker = broker_address(&uri).await;
    let pki = TestPki::generate();
    let proxy = TlsProxy::start(broker, &pki.server).await;
    let tls_uri = format!("amqps://guest:guest@localhost:{}/%2f", proxy.port());
    let tls = RabbitTls {
        ca: Some(std::fs::read_to_string(&pki.ca).unwrap()),
        client: None,
    };
    let name = unique_name("tls");
    let queue = format!("{name}-q");
    let config = RabbitConsumerConfig {
        tls: tls.clone(),
        ..RabbitConsumerConfig::default()
    };
    let consumer = RabbitConsumer::connect(&tls_uri, &name, &queue, "game.#", config)
        .await
        .unwrap();
    let sink = Arc::new(
        RabbitSink::connect_with_tls(&tls_uri, &name, "game.", &tls)
            .await
            .unwrap(),
    );
    let store = Arc::new(MemoryStore::new());
    let relay = Relay::builder(store.clone()).sink(sink).start();
    let silo = silo(store.clone()).await;
    bump(&silo, 0..4, 5).await;
    let received = Deliveries::new();
    let handler = received.recorder();
    let (stop, task) = spawn_consumer(|stop| async move { consumer.run(handler, stop).await });
    wait_until("every event arrived over TLS", WAIT, || {
        received.len() >= 20
    })
    .await;
    outbox_drained(&store, WAIT).await;
    stop.cancel();
    task.await.unwrap().unwrap();
    assert_once_in_order(&received.events(), 4, 5);
    relay.stop().await;
    silo.shutdown().await.unwrap();
    clean_up(&uri, &name, &queue).await;

    let wrong_ca = RabbitTls {
        ca: Some(std::fs::read_to_string(&pki.other_ca).unwrap()),
        client: None,
    };
    let message = refused_over_tls(&tls_uri, &wrong_ca).await;
    assert!(message.contains("UnknownIssuer"), "wrong CA: {message}");
    // A plaintext client at the TLS port, and a TLS client at the plaintext port.
    let plain_at_tls = format!("amqp://guest:guest@127.0.0.1:{}/%2f", proxy.port());
    let message = refused_over_tls(&plain_at_tls, &RabbitTls::default()).await;
    assert!(
        message.contains("cannot connect"),
        "plaintext at TLS: {message}"
    );
    let tls_at_plain = format!("amqps://guest:guest@localhost:{}/%2f", broker.port());
    let message = refused_over_tls(&tls_at_plain, &tls).await;
    assert!(
        message.contains("cannot connect"),
        "TLS at plaintext: {message}"
    );
    // Certificates for a plaintext URI are refused, not silently unused.
    let message = refused_over_tls(&uri, &tls).await;
    assert!(message.contains("not amqps://"), "{message}");
    let expired = TlsProxy::start(broker, &pki.expired_server).await;
    let expired_uri = format!("amqps://guest:guest@localhost:{}/%2f", expired.port());
    let message = refused_over_tls(&expired_uri, &tls).await;
    assert!(
        message.to_lowercase().contains("expired"),
        "expired: {message}"
    );
}

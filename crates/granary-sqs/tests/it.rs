//! The SQS sink and consumer against a real SQS-compatible server: a private `moto_server`
//! per test (PyPI `moto[server]`), on a free loopback port, stopped at the end.
#![allow(clippy::unwrap_used, reason = "test helpers fail loudly")]

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use granary::provider::MemoryStore;
use granary_events::{EventEnvelope, Format, Outgoing, Relay, RelayConfig, Sink};
use granary_sqs::{SqsConsumer, SqsConsumerConfig, SqsEndpoint, SqsSink};
use granary_testkit::events::{
    Deliveries, HoldAfter, assert_once_in_order, bump, bumped_id, outbox_drained, silo,
    spawn_consumer, wait_until,
};
use granary_testkit::moto_server::PrivateMoto;
use granary_testkit::redis_server::unique_name;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long a test waits for the events to arrive: moto is slow.
const WAIT: Duration = Duration::from_secs(90);

async fn client(moto: &PrivateMoto) -> aws_sdk_sqs::Client {
    // Logs shown when a test fails (RUST_LOG=granary_sqs=debug for more).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "granary_sqs=info,granary_events=info".into()),
        )
        .with_test_writer()
        .try_init();
    SqsEndpoint::url(&moto.url())
        .static_credentials("test", "test")
        .timeout(Duration::from_secs(5))
        .client()
        .await
}

fn fast_consumer() -> SqsConsumerConfig {
    SqsConsumerConfig {
        wait_time: Duration::from_secs(1),
        // Not zero: moto leaves a message made visible again within the same millisecond as
        // in flight, which holds back its group out of order.
        retry_delay: Duration::from_secs(1),
        ..SqsConsumerConfig::default()
    }
}

fn fast_relay() -> RelayConfig {
    RelayConfig {
        retry_max: Duration::from_millis(200),
        ..RelayConfig::default()
    }
}

/// Runs `consumer` in a task, recording every delivery; returns the deliveries, the stop token
/// and the task (which hands the consumer back).
fn spawn_recording(
    mut consumer: SqsConsumer,
) -> (Deliveries, CancellationToken, JoinHandle<SqsConsumer>) {
    let received = Deliveries::new();
    let handler = received.recorder();
    let (stop, task) = spawn_consumer(|stop| async move {
        consumer.run(handler, stop).await;
        consumer
    });
    (received, stop, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_arrives_once_after_dedupe_in_per_grain_order() {
    let moto = PrivateMoto::start().await;
    let client = client(&moto).await;
    let sink = Arc::new(SqsSink::new(client.clone(), &unique_name("t")));
    let consumer = SqsConsumer::connect(client, &sink.queue_name("bumped"), fast_consumer())
        .await
        .unwrap();
    let (received, stop, task) = spawn_recording(consumer);
    let store = Arc::new(MemoryStore::new());
    let relay = Relay::builder(store.clone())
        .sink(sink.clone())
        .config(fast_relay())
        .start();
    let silo = silo(store.clone()).await;
    // In rounds of 200 events: moto scans a whole queue on every send and receive, so a long
    // backlog makes it quadratic (minutes for 2,000 queued messages); real SQS does not care.
    for round in 1..=10 {
        bump(&silo, 0..20, 10).await;
        wait_until("the round's events arrived", WAIT, || {
            received.distinct() == round * 200
        })
        .await;
    }
    outbox_drained(&store, WAIT).await;
    stop.cancel();
    let consumer = task.await.unwrap();
    assert_once_in_order(&received.events(), 20, 100);
    assert_eq!(relay.delivered(), 2_000);
    relay.stop().await;
    silo.shutdown().await.unwrap();
    consumer.delete().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_stopped_mid_stream_loses_nothing() {
    let moto = PrivateMoto::start().await;
    let client = client(&moto).await;
    let prefix = unique_name("t");
    let sink = Arc::new(SqsSink::new(client.clone(), &prefix));
    let consumer =
        SqsConsumer::connect(client.clone(), &sink.queue_name("bumped"), fast_consumer())
            .await
            .unwrap();
    let (received, stop, task) = spawn_recording(consumer);
    let store = Arc::new(MemoryStore::new());
    let silo = silo(store.clone()).await;
    bump(&silo, 0..12, 50).await;
    silo.shutdown().await.unwrap();
    // Small batches; after 100 confirmed events the sink refuses, so that the relay is stopped
    // mid-stream whatever the speeds.
    let holding = Arc::new(HoldAfter::new(sink, 100));
    let relay = Relay::builder(store.clone())
        .sink(holding.clone())
        .config(RelayConfig {
            batch: 50,
            ..fast_relay()
        })
        .start();
    wait_until(
        "the relay delivered some events and holds a batch",
        WAIT,
        || holding.holding(),
    )
    .await;
    assert!(relay.delivered() >= 100);
    relay.stop().await;
    let left = store.outbox_entries().len();
    assert!(left > 0 && left < 600, "stopped mid-stream: {left} left");

    // A new relay (as after a silo restart), with a new sink.
    let sink = Arc::new(SqsSink::new(client, &prefix));
    let relay = Relay::builder(store.clone())
        .sink(sink)
        .config(fast_relay())
        .start();
    wait_until("every event arrived", WAIT, || received.distinct() == 600).await;
    outbox_drained(&store, WAIT).await;
    stop.cancel();
    let consumer = task.await.unwrap();
    assert_once_in_order(&received.events(), 12, 50);
    relay.stop().await;
    consumer.delete().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_wait_in_the_outbox_while_sqs_is_down_then_flow() {
    let mut moto = PrivateMoto::start().await;
    let client = client(&moto).await;
    let sink = Arc::new(SqsSink::new(client.clone(), &unique_name("t")));
    let consumer =
        SqsConsumer::connect(client.clone(), &sink.queue_name("bumped"), fast_consumer())
            .await
            .unwrap();
    let (received, stop, task) = spawn_recording(consumer);
    let store = Arc::new(MemoryStore::new());
    let relay = Relay::builder(store.clone())
        .sink(sink)
        .config(fast_relay())
        .start();
    let silo = silo(store.clone()).await;
    bump(&silo, 0..10, 20).await;
    wait_until("the first events arrived", WAIT, || {
        received.distinct() == 200
    })
    .await;
    outbox_drained(&store, WAIT).await;

    moto.stop();
    let failures = relay.failures();
    bump(&silo, 0..10, 20).await;
    wait_until("the relay failed to publish", WAIT, || {
        relay.failures() >= failures + 2
    })
    .await;
    assert_eq!(
        store.outbox_entries().len(),
        200,
        "the events wait in the outbox"
    );
    assert_eq!(received.distinct(), 200);

    // moto comes back empty: the sink and the consumer create their queues again.
    moto.restart().await;
    wait_until("the events arrived after the outage", WAIT, || {
        received.distinct() == 400
    })
    .await;
    outbox_drained(&store, WAIT).await;
    stop.cancel();
    let consumer = task.await.unwrap();
    assert_once_in_order(&received.events(), 10, 40);
    // The consumer set its queue up again: dead-letter queue and redrive policy.
    let attributes = client
        .get_queue_attributes()
        .queue_url(consumer.queue_url())
        .attribute_names(QueueAttributeName::RedrivePolicy)
        .send()
        .await
        .unwrap();
    assert!(
        attributes.attributes().unwrap()[&QueueAttributeName::RedrivePolicy].contains("-dead.fifo")
    );
    client
        .get_queue_attributes()
        .queue_url(consumer.dead_letter_queue_url())
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap();
    relay.stop().await;
    silo.shutdown().await.unwrap();
    consumer.delete().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_is_dead_lettered_without_blocking_the_rest() {
    let moto = PrivateMoto::start().await;
    let client = client(&moto).await;
    let sink = Arc::new(SqsSink::new(client.clone(), &unique_name("t")));
    let mut consumer = SqsConsumer::connect(
        client.clone(),
        &sink.queue_name("bumped"),
        SqsConsumerConfig {
            max_attempts: 3,
            ..fast_consumer()
        },
    )
    .await
    .unwrap();
    let store = Arc::new(MemoryStore::new());
    let relay = Relay::builder(store.clone()).sink(sink).start();
    let silo = silo(store.clone()).await;
    bump(&silo, 0..4, 5).await;
    let poison_id = bumped_id(store.origin(), 2, 3);
    let done = Deliveries::new();
    let handler = done.failing_on(&poison_id);
    let (stop, task) = spawn_consumer(|stop| async move {
        consumer.run(handler, stop).await;
        consumer
    });
    wait_until("the others are processed", WAIT, || done.len() >= 19).await;

    stop.cancel();
    let consumer = task.await.unwrap();
    // The dead-letter queue holds the poison event, with its attributes.
    let deadline = Instant::now() + Duration::from_secs(30);
    let dead = loop {
        let got = client
            .receive_message()
            .queue_url(consumer.dead_letter_queue_url())
            .message_attribute_names("All")
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        if let Some(message) = got.messages().first() {
            break message.clone();
        }
        assert!(
            Instant::now() < deadline,
            "the poison event was not dead-lettered"
        );
    };
    let envelope = EventEnvelope::from_json(dead.body().unwrap().as_bytes()).unwrap();
    assert_eq!(envelope.id, poison_id);
    assert_eq!(
        dead.message_attributes().unwrap()["granary-event-id"].string_value(),
        Some(poison_id.as_str())
    );
    assert_eq!(
        dead.message_attributes().unwrap()["granary-failure"].string_value(),
        Some("after 3 attempts: cannot process this one")
    );
    assert_eq!(done.failures(), 3, "delivered max_attempts times");
    assert_eq!(done.len(), 19, "every other event, once");
    assert_eq!(
        done.counts_of("2"),
        [1, 2, 4, 5],
        "the poison's grain goes on after it, in order"
    );
    relay.stop().await;
    silo.shutdown().await.unwrap();

    // delete() removes both queues.
    let (queue, dead_queue) = (
        consumer.queue().to_owned(),
        format!("{}-dead.fifo", consumer.queue().trim_end_matches(".fifo")),
    );
    consumer.delete().await.unwrap();
    for name in [queue, dead_queue] {
        let found = client.get_queue_url().queue_name(&name).send().await;
        assert!(found.is_err(), "queue {name} was deleted");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_deduplication_drops_a_repeated_publish_and_long_ids_are_hashed() {
    let moto = PrivateMoto::start().await;
    let client = client(&moto).await;
    let sink = SqsSink::new(client.clone(), &unique_name("t"));
    let store = Arc::new(MemoryStore::new());
    let silo = silo(store.clone()).await;
    let long_key = "k".repeat(200);
    let keys = ["alice", long_key.as_str(), "jökull", "two words"];
    bump(&silo, keys, 3).await;
    let mut events: Vec<EventEnvelope> = store
        .outbox_entries()
        .iter()
        .map(|entry| EventEnvelope::from_entry(entry).unwrap())
        .collect();
    events.sort_by(|a, b| (&a.source.key, a.version).cmp(&(&b.source.key, b.version)));
    assert_eq!(events.len(), 12);
    // The relay publishes a batch, loses the confirmation, publishes it again with more.
    let events: Vec<Outgoing> = events
        .into_iter()
        .map(|e| Outgoing::new("bumped", e))
        .collect();
    sink.publish(&events[..7]).await.unwrap();
    sink.publish(&events).await.unwrap();
    sink.publish(&events[3..]).await.unwrap();

    let url = sink.ensure_queue("bumped").await.unwrap();
    let count = client
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await
        .unwrap();
    assert_eq!(
        count.attributes().unwrap()[&QueueAttributeName::ApproximateNumberOfMessages],
        "12",
        "one message per event"
    );
    let mut messages = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while messages.len() < 12 {
        assert!(
            Instant::now() < deadline,
            "messages missing: {}",
            messages.len()
        );
        let got = client
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        for message in got.messages() {
            client
                .delete_message()
                .queue_url(&url)
                .receipt_handle(message.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
            messages.push(message.clone());
        }
    }
    let mut per_group: HashMap<String, Vec<u64>> = HashMap::new();
    let mut ids = HashSet::new();
    for message in &messages {
        let envelope = EventEnvelope::from_json(message.body().unwrap().as_bytes()).unwrap();
        let system = message.attributes().unwrap();
        let dedupe = &system[&MessageSystemAttributeName::MessageDeduplicationId];
        let group = &system[&MessageSystemAttributeName::MessageGroupId];
        assert_eq!(
            message.message_attributes().unwrap()["granary-event-id"].string_value(),
            Some(envelope.id.as_str()),
            "the full id travels as an attribute"
        );
        if envelope.source.key == "alice" {
            assert_eq!(dedupe, &envelope.id, "a short ASCII id is itself");
            assert_eq!(group, "21:testkit.event-counter:s:alice");
        } else {
            assert!(
                dedupe.starts_with("sha256:") && dedupe.len() == 71,
                "{dedupe}"
            );
            assert!(group.len() <= 128 && !group.contains(' '), "{group}");
        }
        assert_eq!(dedupe, &granary_sqs::sqs_id(&envelope.id));
        assert!(ids.insert(envelope.id.clone()), "no repeat");
        per_group
            .entry(group.clone())
            .or_default()
            .push(envelope.version);
    }
    assert_eq!(per_group.len(), 4, "one group per grain");
    for (group, versions) in per_group {
        assert_eq!(versions, [1, 2, 3], "group {group} in order");
    }
    silo.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_handler_keeps_its_message_invisible_and_messagepack_travels() {
    let moto = PrivateMoto::start().await;
    let client = client(&moto).await;
    let sink = Arc::new(
        SqsSink::new(client.clone(), &unique_name("t")).with_format("bumped", Format::MessagePack),
    );
    let config = SqsConsumerConfig {
        visibility_timeout: Duration::from_secs(2),
        ..fast_consumer()
    };
    let queue = sink.queue_name("bumped");
    // Two consumers of the queue: if the slow handler's message became visible again, the
    // other one would receive it.
    let deliveries = Arc::new(Mutex::new(HashMap::<String, u32>::new()));
    let stop = CancellationToken::new();
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let mut consumer = SqsConsumer::connect(client.clone(), &queue, config.clone())
            .await
            .unwrap();
        let (deliveries, stop) = (deliveries.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            consumer
                .run(
                    move |event| {
                        let slow = event.version == 1;
                        *deliveries.lock().unwrap().entry(event.id).or_default() += 1;
                        async move {
                            if slow {
                                // Longer than twice the visibility timeout.
                                tokio::time::sleep(Duration::from_secs(5)).await;
                            }
                            Ok(())
                        }
                    },
                    stop,
                )
                .await;
            consumer
        }));
    }
    let store = Arc::new(MemoryStore::new());
    let relay = Relay::builder(store.clone()).sink(sink).start();
    let silo = silo(store.clone()).await;
    bump(&silo, 0..2, 3).await;
    let started = Instant::now();
    wait_until("every event was handled", WAIT, || {
        deliveries.lock().unwrap().len() == 6
    })
    .await;
    outbox_drained(&store, WAIT).await;
    // The slow handlers finish (their messages deleted) after 5 s; then nothing can come back.
    let queue_url = {
        let mut consumers = Vec::new();
        // Let the slow handlers run out before stopping: stopping waits for a running handler.
        while started.elapsed() < Duration::from_secs(7) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stop.cancel();
        for task in tasks {
            consumers.push(task.await.unwrap());
        }
        let url = consumers[0].queue_url().to_owned();
        drop(consumers);
        url
    };
    let deliveries = deliveries.lock().unwrap().clone();
    assert!(
        deliveries.values().all(|&n| n == 1),
        "each message delivered once: {deliveries:?}"
    );
    let left = client
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .unwrap();
    let attributes = left.attributes().unwrap();
    assert_eq!(
        attributes[&QueueAttributeName::ApproximateNumberOfMessages],
        "0"
    );
    assert_eq!(
        attributes[&QueueAttributeName::ApproximateNumberOfMessagesNotVisible],
        "0",
        "every message deleted"
    );
    relay.stop().await;
    silo.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_queues_deliver_every_event_at_least_once() {
    let moto = PrivateMoto::start().await;
    let client = client(&moto).await;
    let sink = Arc::new(SqsSink::new(client.clone(), &unique_name("t")).standard());
    let queue = sink.queue_name("bumped");
    assert!(!queue.ends_with(".fifo"));
    let consumer = SqsConsumer::connect(client, &queue, fast_consumer())
        .await
        .unwrap();
    let (received, stop, task) = spawn_recording(consumer);
    let store = Arc::new(MemoryStore::new());
    let relay = Relay::builder(store.clone()).sink(sink).start();
    let silo = silo(store.clone()).await;
    bump(&silo, 0..5, 20).await;
    wait_until("every event arrived", WAIT, || received.distinct() == 100).await;
    stop.cancel();
    task.await.unwrap().delete().await.unwrap();
    relay.stop().await;
    silo.shutdown().await.unwrap();
}

//! The RabbitMQ sink and consumer against the real broker at 127.0.0.1:5672 (or
//! `GRANARY_TEST_AMQP`).
#![allow(clippy::unwrap_used, reason = "test helpers fail loudly")]

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use granary::provider::MemoryStore;
use granary::{Event, GrainContext, Silo, SiloConfig, grain};
use granary_events::{EventEnvelope, Relay, RelayConfig};
use granary_rabbitmq::{RabbitConsumer, RabbitConsumerConfig, RabbitSink};
use granary_testkit::redis_server::unique_name;
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

#[grain(name = "amqp.counter", state = Count)]
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

fn amqp_uri() -> String {
    if let Ok(uri) = std::env::var("GRANARY_TEST_AMQP") {
        return uri;
    }
    assert!(
        std::net::TcpStream::connect("127.0.0.1:5672").is_ok(),
        "these tests need RabbitMQ at 127.0.0.1:5672 (guest/guest): start `rabbitmq-server \
         -detached` (Debian: apt-get install rabbitmq-server), or set GRANARY_TEST_AMQP; \
         `bash .ci/run` does it for you"
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

async fn silo(store: Arc<MemoryStore>) -> Silo {
    Silo::builder()
        .config(SiloConfig::test_profile())
        .storage(store)
        .register::<CounterGrain>()
        .start()
        .await
        .unwrap()
}

async fn bump(silo: &Silo, grains: i64, times: u64) {
    for g in 0..grains {
        for _ in 0..times {
            silo.client().grain::<CounterGrain>(g).bump().await.unwrap();
        }
    }
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `consumer` with `handler` in a task; returns its stop token and handle.
fn spawn_consumer<F, Fut>(
    consumer: RabbitConsumer,
    handler: F,
) -> (CancellationToken, tokio::task::JoinHandle<()>)
where
    F: Fn(EventEnvelope) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let stop = CancellationToken::new();
    let task = {
        let stop = stop.clone();
        tokio::spawn(async move { consumer.run(handler, stop).await.unwrap() })
    };
    (stop, task)
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
    bump(&silo, 40, 50).await;
    // No queue is bound yet: RabbitMQ returns the mandatory messages, the relay keeps them.
    wait_until("the relay saw returned messages", || relay.failures() >= 2).await;
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
    let received = Arc::new(Mutex::new(Vec::<EventEnvelope>::new()));
    let sink_of = received.clone();
    let (stop, task) = spawn_consumer(consumer, move |event| {
        sink_of.lock().unwrap().push(event);
        async { Ok(()) }
    });
    wait_until("every event arrived", || {
        received.lock().unwrap().len() >= 2_000
    })
    .await;
    wait_until("the outbox is empty", || store.outbox_entries().is_empty()).await;
    stop.cancel();
    task.await.unwrap();
    let events = received.lock().unwrap().clone();
    let ids: HashSet<&String> = events.iter().map(|e| &e.id).collect();
    assert_eq!(ids.len(), 2_000, "every event, once after dedupe");
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
        assert_eq!(
            counts,
            (1..=50).collect::<Vec<_>>(),
            "grain {grain} in commit order"
        );
    }
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
    bump(&silo, 4, 5).await;
    let poison_id = granary_events::event_id(
        store.origin(),
        &granary::GrainId::new("amqp.counter", 2),
        3,
        0,
    );
    let done = Arc::new(Mutex::new(HashSet::new()));
    let tries = Arc::new(Mutex::new(0));
    let (handler_done, handler_tries, handler_poison) =
        (done.clone(), tries.clone(), poison_id.clone());
    let (stop, task) = spawn_consumer(consumer, move |event| {
        let poison = event.id == handler_poison;
        if poison {
            *handler_tries.lock().unwrap() += 1;
        } else {
            handler_done.lock().unwrap().insert(event.id);
        }
        async move {
            if poison {
                Err("cannot process this one".into())
            } else {
                Ok(())
            }
        }
    });
    wait_until("the others are processed", || {
        done.lock().unwrap().len() == 19
    })
    .await;
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
    assert_eq!(*tries.lock().unwrap(), 3, "delivered max_attempts times");
    stop.cancel();
    task.await.unwrap();
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

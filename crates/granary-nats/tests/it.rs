//! The NATS JetStream sink and consumer against the real server at 127.0.0.1:4222 (or
//! `GRANARY_TEST_NATS`).
#![allow(clippy::unwrap_used, reason = "test helpers fail loudly")]

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use granary::provider::MemoryStore;
use granary::{Event, GrainContext, Silo, SiloConfig, grain};
use granary_events::{EventEnvelope, Relay, Sink};
use granary_nats::{NatsConsumer, NatsConsumerConfig, NatsSink};
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

#[grain(name = "nats.counter", state = Count)]
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

fn nats_url() -> String {
    let url = std::env::var("GRANARY_TEST_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let addr = url.trim_start_matches("nats://").to_owned();
    assert!(
        std::net::TcpStream::connect(&addr).is_ok(),
        "these tests need NATS with JetStream at {url}: start `nats-server -js` (Debian: apt-get \
         install nats-server), or set GRANARY_TEST_NATS; `bash .ci/run` does it for you"
    );
    url
}

/// A silo whose grains each commit `times` events, relayed to `sink`.
async fn publish_through(
    sink: Arc<dyn Sink>,
    grains: i64,
    times: u64,
) -> (Silo, Relay, Arc<MemoryStore>) {
    let store = Arc::new(MemoryStore::new());
    let relay = Relay::builder(store.clone()).sink(sink).start();
    let silo = Silo::builder()
        .config(SiloConfig::test_profile())
        .storage(store.clone())
        .register::<CounterGrain>()
        .start()
        .await
        .unwrap();
    for g in 0..grains {
        for _ in 0..times {
            silo.client().grain::<CounterGrain>(g).bump().await.unwrap();
        }
    }
    (silo, relay, store)
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
    let received = Arc::new(Mutex::new(Vec::<EventEnvelope>::new()));
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
    wait_until("every event arrived", || {
        received.lock().unwrap().len() >= 2_000
    })
    .await;
    // The relay publishing the same events again (as after a crash before its outbox ack):
    // the server drops them by Nats-Msg-Id.
    let again: Vec<EventEnvelope> = received.lock().unwrap().iter().take(100).cloned().collect();
    sink.publish("bumped", &again).await.unwrap();
    assert_eq!(
        stream_messages(&url, &name).await,
        2_000,
        "no duplicate stored"
    );
    stop.cancel();
    run.await.unwrap().unwrap();
    let events = received.lock().unwrap().clone();
    let ids: HashSet<&String> = events.iter().map(|e| &e.id).collect();
    assert_eq!((events.len(), ids.len()), (2_000, 2_000));
    let mut per_grain: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for event in &events {
        per_grain
            .entry(event.source.key.clone())
            .or_default()
            .push(event.decode::<Bumped>().unwrap().n);
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
    let poison_id = granary_events::event_id(
        store.origin(),
        &granary::GrainId::new("nats.counter", 2),
        3,
        0,
    );
    let done = Arc::new(Mutex::new(HashSet::new()));
    let tries = Arc::new(Mutex::new(0));
    let stop = CancellationToken::new();
    let run = {
        let (done, tries, stop, poison_id) =
            (done.clone(), tries.clone(), stop.clone(), poison_id.clone());
        tokio::spawn(async move {
            consumer
                .run(
                    |event| {
                        let poison = event.id == poison_id;
                        if poison {
                            *tries.lock().unwrap() += 1;
                        } else {
                            done.lock().unwrap().insert(event.id);
                        }
                        async move {
                            if poison {
                                Err("cannot process this one".into())
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
    wait_until("the others are processed", || {
        done.lock().unwrap().len() == 19
    })
    .await;
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
    assert_eq!(*tries.lock().unwrap(), 3, "delivered max_deliver times");
    let dead = js.get_stream(format!("{name}-dead")).await.unwrap();
    let message = dead.get_raw_message(1).await.unwrap();
    let envelope = EventEnvelope::from_json(&message.payload).unwrap();
    assert_eq!(envelope.id, poison_id);
    relay.stop().await;
    silo.shutdown().await.unwrap();
    clean_up(&url, &[name.clone(), format!("{name}-dead")]).await;
}

/// A `nats-server -js` of one test, on a free port, with its own store directory.
struct PrivateNats {
    port: u16,
    dir: std::path::PathBuf,
    child: Option<std::process::Child>,
}

impl PrivateNats {
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(unique_name("nats"));
        let mut server = Self {
            port,
            dir,
            child: None,
        };
        server.restart().await;
        server
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    async fn restart(&mut self) {
        self.kill();
        let child = std::process::Command::new("nats-server")
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(&self.dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server is installed (Debian: apt-get install nats-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "private nats-server did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_wait_in_the_outbox_while_nats_is_down_and_flow_when_it_returns() {
    let mut server = PrivateNats::start().await;
    let url = server.url();
    let sink = Arc::new(NatsSink::connect(&url, "EVENTS", "events.").await.unwrap());
    server.kill();
    let store = Arc::new(MemoryStore::new());
    let silo = Silo::builder()
        .config(SiloConfig::test_profile())
        .storage(store.clone())
        .register::<CounterGrain>()
        .start()
        .await
        .unwrap();
    for g in 0..10 {
        for _ in 0..10 {
            silo.client().grain::<CounterGrain>(g).bump().await.unwrap();
        }
    }
    let relay = Relay::builder(store.clone())
        .sink(sink)
        .config(granary_events::RelayConfig {
            retry_max: Duration::from_millis(200),
            ..granary_events::RelayConfig::default()
        })
        .start();
    wait_until("the relay failed while NATS was down", || {
        relay.failures() >= 1
    })
    .await;
    assert_eq!(store.outbox_entries().len(), 100, "nothing left the outbox");
    server.restart().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !store.outbox_entries().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the events did not flow after NATS came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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

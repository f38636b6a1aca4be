//! Clusters of silo processes (`test-silo`) over loopback TCP and a real Redis: a silo SIGKILLed
//! under load, and a zombie silo (SIGSTOPped past failure detection, then resumed).

use std::sync::Arc;
use std::time::{Duration, Instant};

use granary::provider::{GrainDirectory, MembershipTable, SiloStatus};
use granary::{CallError, ClientConfig, ClusterClient};
use granary_redis::{RedisConfig, RedisMembership, RedisStore};
use granary_testkit::process::SiloProcess;
use granary_testkit::redis_server::{shared_redis_url, unique_name};
use granary_tests::CounterGrain;

const SECRET: &str = "a cluster secret of at least 32 bytes";

pub(crate) async fn start(cluster: &str, name: &str, placement: &str) -> SiloProcess {
    start_with(cluster, name, placement, &[]).await
}

/// As [`start`], with more `GRANARY_*` variables.
async fn start_with(
    cluster: &str,
    name: &str,
    placement: &str,
    more: &[(&str, &str)],
) -> SiloProcess {
    let redis = shared_redis_url().await;
    let mut env = vec![
        ("GRANARY_CLUSTER", cluster),
        ("GRANARY_SECRET", SECRET),
        ("GRANARY_REDIS", redis.as_str()),
        ("GRANARY_PLACEMENT", placement),
        // Where grains are active is what these tests look at (the directory, the activation
        // gauge): no idle collection under them (the test profile's 200 ms races a loaded
        // machine).
        ("GRANARY_IDLE_AFTER", "10m"),
    ];
    env.extend_from_slice(more);
    SiloProcess::start(env!("CARGO_BIN_EXE_test-silo"), name, &env).await
}

/// A free loopback address for a silo's metrics endpoint.
fn metrics_address() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

pub(crate) async fn client(cluster: &str, gateways: Vec<std::net::SocketAddr>) -> ClusterClient {
    connect(ClientConfig::new(cluster, SECRET, gateways)).await
}

/// A client that uses only `gateway`.
async fn pinned(cluster: &str, gateway: std::net::SocketAddr) -> ClusterClient {
    let mut config = ClientConfig::new(cluster, SECRET, vec![gateway]);
    config.discover = false;
    connect(config).await
}

async fn connect(mut config: ClientConfig) -> ClusterClient {
    config.call_timeout = Duration::from_secs(3);
    config.refresh = Duration::from_millis(200);
    ClusterClient::connect(config).await.unwrap()
}

/// Waits until the membership table in Redis marks `name` dead.
async fn declared_dead(membership: &RedisMembership, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let table = membership.read().await.unwrap();
        if table
            .entries
            .iter()
            .any(|e| e.silo.name() == name && e.status == SiloStatus::Dead)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} was not declared dead: {table:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn membership(cluster: &str) -> RedisMembership {
    let store = RedisStore::connect(RedisConfig::new(shared_redis_url().await, cluster))
        .await
        .unwrap();
    RedisMembership::new(Arc::new(store))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silo_killed_under_load_loses_no_acknowledged_write() {
    let cluster = unique_name("kill");
    let mut silos = Vec::new();
    for i in 0..3 {
        silos.push(start(&cluster, &format!("p{i}"), "hash").await);
    }
    let client = client(&cluster, silos.iter().map(|s| s.addr).collect()).await;
    let grains: i64 = 24;
    let (phase_tx, phase) = tokio::sync::watch::channel(0u8);
    let writers: Vec<_> = (0..grains)
        .map(|g| {
            let counter = client.grain::<CounterGrain>(g);
            let phase = phase.clone();
            tokio::spawn(async move {
                let (mut acked, mut failures, mut after_kill) = (Vec::new(), Vec::new(), 0);
                while after_kill < 15 {
                    match counter.bump().await {
                        Ok((count, _)) => {
                            acked.push(count);
                            if *phase.borrow() == 1 {
                                after_kill += 1;
                            }
                        }
                        Err(err) => {
                            failures.push(err);
                            // The dead silo's grains come back once it is declared dead.
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
                (acked, failures)
            })
        })
        .collect();
    // Load is flowing on every grain: kill the second silo.
    let store = RedisStore::connect(RedisConfig::new(shared_redis_url().await, &cluster))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut all = true;
        for g in 0..grains {
            let (_, version) = store
                .read_raw(&granary::GrainId::new("cluster.counter", g))
                .await
                .unwrap();
            all &= version >= 3;
        }
        if all {
            break;
        }
        assert!(Instant::now() < deadline, "load did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The victim: the silo hosting the most grains, as the directory (in Redis) says.
    let mut hosted = std::collections::HashMap::<String, usize>::new();
    for g in 0..grains {
        let owner = store
            .lookup(&granary::GrainId::new("cluster.counter", g))
            .await
            .unwrap()
            .expect("an active grain has an owner");
        *hosted.entry(owner.silo.name().to_owned()).or_default() += 1;
    }
    let (busiest, count) = hosted.iter().max_by_key(|(_, n)| **n).unwrap();
    assert!(*count > 0);
    let victim = silos.remove(silos.iter().position(|s| &s.name == busiest).unwrap());
    victim.signal("-KILL");
    phase_tx.send_replace(1);

    for (g, writer) in writers.into_iter().enumerate() {
        let (acked, failures) = tokio::time::timeout(Duration::from_secs(60), writer)
            .await
            .expect("every grain answers again after the kill")
            .unwrap();
        assert!(
            acked.windows(2).all(|w| w[0] < w[1]),
            "grain {g}: an acknowledged count came back, so a write was lost: {acked:?}"
        );
        let last = *acked.last().unwrap();
        let stored = client.grain::<CounterGrain>(g as i64).get().await.unwrap();
        assert_eq!(
            stored, last,
            "grain {g}: the last acknowledged write is the state"
        );
        for err in failures {
            assert!(
                matches!(
                    err,
                    CallError::SiloUnavailable { .. }
                        | CallError::Timeout { .. }
                        | CallError::StorageConflict { .. }
                ),
                "grain {g}: {err}"
            );
        }
    }
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zombie_silo_commits_nothing_and_stops() {
    let cluster = unique_name("zombie");
    // Production timings (death after about 4 s, no idle collection for 15 min): the test-profile
    // ones (under a second, 200 ms) let a loaded machine collect the grain before the SIGSTOP, or
    // declare the zombie dead before the call below reached the survivor.
    let production = [("GRANARY_PROFILE", "production")];
    let mut zombie = start_with(&cluster, "zombie", "prefer-local", &production).await;
    let metrics = metrics_address();
    let survivor = start_with(
        &cluster,
        "survivor",
        "prefer-local",
        &[
            ("GRANARY_PROFILE", "production"),
            ("GRANARY_METRICS", &metrics),
        ],
    )
    .await;
    // Through the zombie as its only gateway, the grain activates there (prefer-local).
    let via_zombie = pinned(&cluster, zombie.addr).await;
    let via_survivor = pinned(&cluster, survivor.addr).await;
    let grain = via_zombie.grain::<CounterGrain>(7);
    assert_eq!(grain.bump().await.unwrap().0, 1);

    zombie.signal("-STOP");
    // A call through the survivor while the zombie still counts as alive: the survivor
    // forwards it to the grain's owner, the stopped zombie, and it hangs there...
    let in_flight = {
        let grain = via_survivor
            .grain::<CounterGrain>(7)
            .with_timeout(Duration::from_secs(30));
        tokio::spawn(async move { grain.get().await })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !scrape(&metrics)
        .await
        .lines()
        .any(|l| l == "granary_forwards_total 1")
    {
        assert!(
            Instant::now() < deadline,
            "the survivor never forwarded the call to the zombie"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    declared_dead(&membership(&cluster).await, &zombie.name).await;
    // ...until the zombie is declared dead: then it fails at once, long before its deadline.
    let err = tokio::time::timeout(Duration::from_secs(10), in_flight)
        .await
        .expect("the call failed when the zombie was declared dead, not at its deadline")
        .unwrap()
        .expect_err("nobody answered it");
    assert!(matches!(err, CallError::SiloUnavailable { .. }), "{err}");
    // The survivor takes the grain over, from its last committed state.
    let taken = via_survivor.grain::<CounterGrain>(7);
    assert_eq!(taken.bump().await.unwrap().0, 2);

    zombie.signal("-CONT");
    // The zombie still holds its old activation; whatever it is asked now, it commits nothing.
    match grain.bump().await {
        Ok(answer) => panic!("the zombie committed: {answer:?}"),
        Err(err) => assert!(
            matches!(
                err,
                CallError::StorageConflict { .. }
                    | CallError::ShuttingDown
                    | CallError::SiloUnavailable { .. }
                    | CallError::Timeout { .. }
            ),
            "{err}"
        ),
    }
    assert_eq!(
        taken.get().await.unwrap(),
        2,
        "the survivor's state is intact"
    );
    // And it stops: dead is final.
    assert_eq!(
        zombie.exit_code(Duration::from_secs(20)).await,
        Some(3),
        "exit status of a silo declared dead"
    );
    // What Redis holds: the survivor's commit, nothing after it.
    let store = RedisStore::connect(RedisConfig::new(shared_redis_url().await, &cluster))
        .await
        .unwrap();
    let (data, version) = store
        .read_raw(&granary::GrainId::new("cluster.counter", 7))
        .await
        .unwrap();
    assert_eq!(
        version, 2,
        "two commits: the zombie's first, the survivor's second"
    );
    let state = granary::codec::state_codec::decode::<CounterGrain>(&data.unwrap()).unwrap();
    assert_eq!(format!("{state:?}"), "Tally { count: 2 }");
    via_zombie.close().await;
    via_survivor.close().await;
    drop(survivor);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_through_a_stopped_gateway_fail_once_it_is_declared_dead() {
    let cluster = unique_name("gateway");
    let mut silos = Vec::new();
    for i in 0..3 {
        silos.push(start(&cluster, &format!("g{i}"), "hash").await);
    }
    // A deadline of a minute: waiting it out is what this test catches.
    let mut config = ClientConfig::new(&cluster, SECRET, silos.iter().map(|s| s.addr).collect());
    config.call_timeout = Duration::from_secs(60);
    config.refresh = Duration::from_millis(200);
    let client = ClusterClient::connect(config).await.unwrap();
    assert_eq!(client.gateways().len(), 3);
    for g in 0..6 {
        client.grain::<CounterGrain>(g).bump().await.unwrap();
    }
    let stopped = &silos[0];
    stopped.signal("-STOP");
    // Three calls at once go through the three gateways in turn: one is in flight through the
    // stopped gateway, and hangs there until the others declare it dead.
    let calls: Vec<_> = (0..3)
        .map(|g| {
            let grain = client.grain::<CounterGrain>(100 + g);
            tokio::spawn(async move { grain.bump().await })
        })
        .collect();
    let results = tokio::time::timeout(Duration::from_secs(30), futures::future::join_all(calls))
        .await
        .expect("every call ended long before its 60 s deadline");
    let mut through_stopped = 0;
    for result in results {
        match result.unwrap() {
            Ok(_) => {}
            Err(CallError::SiloUnavailable {
                silo,
                outcome_unknown: true,
                ..
            }) if silo == stopped.addr.to_string() => through_stopped += 1,
            // Forwarded by another gateway to a grain of the stopped silo: failed there, at
            // once too, when it was declared dead.
            Err(err @ CallError::SiloUnavailable { .. }) => {
                assert!(err.outcome_unknown() || err.is_retryable(), "{err}");
            }
            Err(err) => panic!("unexpected failure: {err}"),
        }
    }
    assert_eq!(
        through_stopped, 1,
        "the call in flight through the stopped gateway failed when it was declared dead"
    );
    declared_dead(&membership(&cluster).await, &stopped.name).await;
    // New calls avoid it: the other gateways serve every grain.
    assert!(
        !client.gateways().contains(&stopped.addr),
        "{:?}",
        client.gateways()
    );
    for g in 0..6 {
        client.grain::<CounterGrain>(g).bump().await.unwrap();
    }
    client.close().await;
}

/// The body of `GET /metrics` at `addr`, once the endpoint answers.
async fn scrape(addr: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await {
            stream
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).await.unwrap();
            return response;
        }
        assert!(Instant::now() < deadline, "no metrics endpoint at {addr}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silo_process_serves_its_metrics() {
    let cluster = unique_name("metrics");
    let redis = shared_redis_url().await;
    let metrics_addr = metrics_address();
    let prefix = format!("{cluster}:");
    let silo = SiloProcess::start(
        env!("CARGO_BIN_EXE_test-silo"),
        "measured",
        &[
            ("GRANARY_CLUSTER", &cluster),
            ("GRANARY_SECRET", SECRET),
            ("GRANARY_REDIS", &redis),
            ("GRANARY_METRICS", &metrics_addr),
            ("GRANARY_EVENTS_PREFIX", &prefix),
            // The activation gauge is checked: no idle collection under the test.
            ("GRANARY_IDLE_AFTER", "10m"),
        ],
    )
    .await;
    let client = pinned(&cluster, silo.addr).await;
    for _ in 0..3 {
        client.grain::<CounterGrain>(1).bump().await.unwrap();
    }
    for _ in 0..2 {
        client
            .grain::<CounterGrain>(2)
            .bump_and_announce()
            .await
            .unwrap();
    }
    // The relay delivers the two events to the Redis stream soon after their commit.
    let delivered = r#"granary_relay_delivered_total{sink="redis-streams"} 2"#;
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let body = scrape(&metrics_addr).await;
        if body.lines().any(|l| l == delivered) {
            break body;
        }
        assert!(Instant::now() < deadline, "never {delivered:?}: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(
        body.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text; version=1.0.0; charset=utf-8"),
        "OpenMetrics text is served as such: {body}"
    );
    for line in [
        r#"granary_calls_total{grain_type="cluster.counter",method="bump"} 3"#,
        r#"granary_activations{grain_type="cluster.counter"} 2"#,
        // Caught up: every event read was confirmed.
        r#"granary_relay_lag_seconds{sink="redis-streams"} 0.0"#,
        r#"granary_relay_failures_total{sink="redis-streams"} 0"#,
    ] {
        assert!(
            body.lines().any(|l| l == line),
            "missing {line:?} in {body}"
        );
    }
    assert_eq!(
        body.matches("# EOF").count(),
        1,
        "one text, the silo's metrics and the relay's: {body}"
    );
    assert!(body.trim_end().ends_with("# EOF"), "{body}");
    client.close().await;
}

/// Records the `<type> <id>` of each event a consumer is handed.
fn recorder(
    seen: &Arc<std::sync::Mutex<Vec<String>>>,
) -> impl Fn(granary_events::EventEnvelope) -> std::future::Ready<Result<(), String>> + use<> {
    let seen = seen.clone();
    move |event| {
        seen.lock()
            .unwrap()
            .push(format!("{} {}", event.type_name, event.id));
        std::future::ready(Ok(()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silo_process_relays_to_the_nats_stream_and_rabbitmq_exchange_its_settings_name() {
    use granary_nats::{NatsConsumer, NatsConsumerConfig};
    use granary_rabbitmq::{RabbitConsumer, RabbitConsumerConfig};
    let nats =
        std::env::var("GRANARY_TEST_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let amqp = std::env::var("GRANARY_TEST_AMQP")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let cluster = unique_name("names");
    let stream = cluster.replace('-', "_").to_uppercase();
    let subjects = format!("{cluster}.events.");
    let exchange = format!("{cluster}.events");
    // Bound before the silo relays: RabbitMQ drops what no queue is bound to.
    let rabbit = RabbitConsumer::connect(
        &amqp,
        &exchange,
        &format!("{cluster}.q"),
        "#",
        RabbitConsumerConfig::default(),
    )
    .await
    .unwrap();
    let silo = start_with(
        &cluster,
        "named",
        "prefer-local",
        &[
            ("GRANARY_NATS", &nats),
            ("GRANARY_NATS_STREAM", &stream),
            ("GRANARY_NATS_SUBJECTS", &subjects),
            ("GRANARY_AMQP", &amqp),
            ("GRANARY_AMQP_EXCHANGE", &exchange),
        ],
    )
    .await;
    // The silo created the stream, capturing `<subjects>>`.
    let jetstream = NatsConsumer::connect(
        &nats,
        &stream,
        "names",
        &format!("{subjects}>"),
        NatsConsumerConfig::default(),
    )
    .await
    .unwrap();
    let client = pinned(&cluster, silo.addr).await;
    let count = client
        .grain::<CounterGrain>(1)
        .bump_and_announce()
        .await
        .unwrap();
    assert_eq!(count, 1);

    let (from_nats, from_rabbit) = (Arc::default(), Arc::default());
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::join!(
        async {
            tokio::select! {
                result = jetstream.run(recorder(&from_nats), stop.clone()) => result.unwrap(),
                () = wait_for_one(&from_nats) => {}
            }
        },
        async {
            tokio::select! {
                result = rabbit.run(recorder(&from_rabbit), stop.clone()) => result.unwrap(),
                () = wait_for_one(&from_rabbit) => {}
            }
        },
    );
    stop.cancel();
    for seen in [&from_nats, &from_rabbit] {
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert!(
            seen[0].starts_with(&format!("cluster.counter.bumped {cluster}.")),
            "{seen:?}"
        );
    }
    client.close().await;
    drop(silo);
    jetstream.delete().await.unwrap();
    rabbit.delete().await.unwrap();
    let js = async_nats::jetstream::new(async_nats::connect(&nats).await.unwrap());
    js.delete_stream(&stream).await.unwrap();
    let connection = lapin::Connection::connect(&amqp, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    connection
        .create_channel()
        .await
        .unwrap()
        .exchange_delete(
            exchange.as_str().into(),
            lapin::options::ExchangeDeleteOptions::default(),
        )
        .await
        .unwrap();
}

/// Waits (at most 20 s) until `seen` holds an event.
async fn wait_for_one(seen: &Arc<std::sync::Mutex<Vec<String>>>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "no event within 20 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silo_process_logs_to_stderr_and_its_stdout_starts_with_the_ready_line() {
    let cluster = unique_name("logs");
    // At `info` the silo logs "silo started" before its ready line: on stdout, that log line
    // would come first and `SiloProcess::start` would find no ready line.
    let silo = start_with(&cluster, "chatty", "prefer-local", &[("RUST_LOG", "info")]).await;
    let client = pinned(&cluster, silo.addr).await;
    assert_eq!(client.grain::<CounterGrain>(1).bump().await.unwrap().0, 1);
    client.close().await;
}

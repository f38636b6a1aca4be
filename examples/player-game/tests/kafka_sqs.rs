//! The demo on Redis with every queue: the silo processes relay every event to NATS JetStream
//! and RabbitMQ (the shared servers), and route `match.ended` to a private tansu broker (Kafka
//! protocol) and `player.died` to a private `moto_server` (SQS) by `GRANARY_ROUTES`, while one
//! of them is SIGKILLed; the demo's consumer on each queue must receive every committed event
//! routed to it.

use std::process::Command;

use granary_testkit::moto_server::PrivateMoto;
use granary_testkit::redis_server::{shared_redis_url, unique_name};
use granary_testkit::tansu_server::PrivateTansu;

/// The figure after `label` on the reconciliation line that starts with it.
fn figure(stdout: &str, label: &str) -> u64 {
    let line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with(label))
        .unwrap_or_else(|| panic!("no {label:?} line in {stdout}"));
    line.trim_start()[label.len()..]
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no figure on {line:?}"))
}

/// `(received, committed)` from the line `<queue> consumer: <received> of <committed> …`.
fn received(stdout: &str, queue: &str) -> (u64, u64) {
    let label = format!("{queue} consumer: ");
    let line = stdout
        .lines()
        .find_map(|l| l.trim_start().strip_prefix(&label))
        .unwrap_or_else(|| panic!("no {label:?} line in {stdout}"));
    let number = |word: Option<&str>| -> u64 {
        word.and_then(|w| w.parse().ok())
            .unwrap_or_else(|| panic!("unexpected line {line:?}"))
    };
    let mut words = line.split_whitespace();
    let got = number(words.next());
    assert_eq!(words.next(), Some("of"), "unexpected line {line:?}");
    (got, number(words.next()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn match_results_reach_kafka_and_deaths_reach_sqs_by_configuration() {
    let redis = shared_redis_url().await;
    let nats =
        std::env::var("GRANARY_TEST_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let amqp = std::env::var("GRANARY_TEST_AMQP")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let kafka = PrivateTansu::start().await;
    let sqs = PrivateMoto::start().await;
    let cluster = unique_name("demo-kafka-sqs");
    let output = Command::new(env!("CARGO_BIN_EXE_example-player-game"))
        .args(["--matches", "60", "--players", "4", "--concurrency", "8"])
        .args(["--redis", &redis, "--cluster", &cluster])
        .args(["--nats", &nats, "--amqp", &amqp])
        .args(["--kafka", &kafka.brokers(), "--sqs", &sqs.url()])
        // moto accepts any credentials; the SDK wants some.
        .env("AWS_ACCESS_KEY_ID", "granary")
        .env("AWS_SECRET_ACCESS_KEY", "granary")
        .output()
        .expect("the demo binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "the demo failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("*** killing silo-c"), "{stdout}");
    assert!(stdout.contains("OK: nothing lost"), "{stdout}");
    let ended = figure(&stdout, "MatchEnded events");
    let died = figure(&stdout, "PlayerDied events");
    assert_eq!(ended, 60, "{stdout}");
    assert!(died > 0, "{stdout}");
    // Each consumer counts the events of this run its queue received, by id, against the
    // committed events of its type (as Redis Streams hold them): every one of them arrived.
    assert!(
        stdout.contains(&format!(
            "Kafka consumer: {ended} of {ended} match.ended events"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "SQS consumer: {died} of {died} player.died events"
        )),
        "{stdout}"
    );
    for queue in ["NATS JetStream", "RabbitMQ"] {
        let (got, of) = received(&stdout, queue);
        assert_eq!(got, of, "{queue}: {stdout}");
        // Every type: match.created and match.started too.
        assert!(of > ended + died + 60, "{queue}: {stdout}");
    }
    assert!(!stdout.contains("MISSING"), "{stdout}");
}

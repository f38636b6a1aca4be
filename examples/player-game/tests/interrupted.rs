//! The demo on Redis with `--amqp`, interrupted with SIGTERM while it plays: it stops its silo
//! processes and deletes its RabbitMQ consumer's queues, leaving nothing to fill.
#![allow(clippy::unwrap_used, reason = "test steps fail loudly")]

use std::process::Stdio;
use std::time::Duration;

use granary_testkit::redis_server::{shared_redis_url, unique_name};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

fn amqp_uri() -> String {
    std::env::var("GRANARY_TEST_AMQP")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// Whether the queue exists (a passive declare fails, closing its channel, when it does not).
async fn queue_exists(connection: &lapin::Connection, queue: &str) -> bool {
    let channel = connection.create_channel().await.unwrap();
    channel
        .queue_declare(
            queue.into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_demo_deletes_its_queue_consumers() {
    let redis = shared_redis_url().await;
    let amqp = amqp_uri();
    let cluster = unique_name("demo-interrupted");
    let mut demo = Command::new(env!("CARGO_BIN_EXE_example-player-game"))
        // Far more matches than it plays before the signal.
        .args(["--matches", "1000000", "--players", "4", "--kill-at", "0"])
        .args(["--redis", &redis, "--cluster", &cluster, "--amqp", &amqp])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(demo.stdout.take().unwrap()).lines();
    // The consumer is bound before the silos start; it is playing once a progress line shows.
    let playing = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains(" matches ") && line.contains("calls/s") {
                return;
            }
        }
        panic!("the demo ended before it played");
    };
    tokio::time::timeout(Duration::from_secs(60), playing)
        .await
        .expect("the demo plays within a minute");
    let connection = lapin::Connection::connect(&amqp, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let queue = format!("{cluster}.demo");
    assert!(
        queue_exists(&connection, &queue).await,
        "the demo's consumer queue {queue} exists while it plays"
    );

    let pid = demo.id().unwrap().to_string();
    let signalled = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(signalled.success());
    let status = tokio::time::timeout(Duration::from_secs(30), demo.wait())
        .await
        .expect("the demo stops within 30 s of SIGTERM")
        .unwrap();
    assert!(
        !status.success(),
        "an interrupted demo does not report success"
    );
    for queue in [
        queue.clone(),
        format!("{queue}.retry"),
        format!("{queue}.dead"),
    ] {
        assert!(
            !queue_exists(&connection, &queue).await,
            "the interrupted demo deleted {queue}"
        );
    }
}

//! The `granary` command against a running silo on the shared Redis.
#![allow(clippy::unwrap_used, reason = "test helpers fail loudly")]

use std::process::Output;
use std::sync::Arc;

use granary::provider::MembershipTable;
use granary::{ClusterConfig, Event, GrainContext, Silo, SiloConfig, grain};
use granary_events::Relay;
use granary_redis::{RedisConfig, RedisMembership, RedisStore, RedisStreamsSink};
use granary_testkit::redis_server::{shared_redis_url, unique_name};
use serde::{Deserialize, Serialize};

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
    label: String,
}

#[derive(Debug, Default)]
struct CounterGrain;

#[grain(name = "cli.counter", state = Count)]
impl CounterGrain {
    pub async fn bump(&self, ctx: &GrainContext<Self>) -> granary::Result<u64> {
        let n = {
            let mut state = ctx.state();
            state.n += 1;
            state.label = "busy".into();
            state.n
        };
        ctx.publish(&Bumped { n })?;
        ctx.write_state().await?;
        Ok(n)
    }
}

fn granary(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_granary"))
        .args(args)
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_grain_and_events_tail_show_a_running_cluster() {
    let url = shared_redis_url().await;
    let cluster = unique_name("cli");
    let store = Arc::new(
        RedisStore::connect(RedisConfig::new(&url, &cluster).shards(4))
            .await
            .unwrap(),
    );
    let prefix = format!("{cluster}:");
    let relay = Relay::builder(store.clone())
        .sink(Arc::new(RedisStreamsSink::new(store.clone(), &prefix)))
        .start();
    let silo = Silo::builder()
        .config(SiloConfig {
            name: "inspected".into(),
            ..SiloConfig::test_profile()
        })
        .storage(store.clone())
        .membership(Arc::new(RedisMembership::new(store.clone())))
        .cluster(
            ClusterConfig::new(
                &cluster,
                b"a cli test cluster secret, 32 bytes".to_vec(),
                "127.0.0.1:0".parse().unwrap(),
            )
            .test_profile(),
        )
        .register::<CounterGrain>()
        .start()
        .await
        .unwrap();
    silo.client().grain::<CounterGrain>(7).bump().await.unwrap();
    // The status command reads heartbeats: wait for the one that counts the activation.
    let table = RedisMembership::new(store.clone());
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            let beats = table.heartbeats().await.unwrap();
            if beats
                .iter()
                .any(|(_, b)| b.by_type == [("cli.counter".to_owned(), 1)])
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a heartbeat counts the counter's activation");

    let base = ["--redis", url.as_str(), "--cluster", cluster.as_str()];
    let status = granary(&[&base[..], &["status"]].concat());
    assert!(status.status.success(), "{}", stderr(&status));
    let out = stdout(&status);
    assert!(
        out.contains("inspected@") && out.contains("Active"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["cli.counter", "1"]),
        "activations per type: {out}"
    );

    let shown = granary(&[&base[..], &["grain", "cli.counter", "7", "--int"]].concat());
    assert!(shown.status.success(), "{}", stderr(&shown));
    let out = stdout(&shown);
    assert!(out.contains("active on inspected@"), "{out}");
    assert!(out.contains("version 1"), "{out}");
    assert!(
        out.contains("\"n\": 1") && out.contains("\"label\": \"busy\""),
        "{out}"
    );

    let missing = granary(&[&base[..], &["grain", "cli.counter", "nobody"]].concat());
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("no stored state"),
        "{}",
        stderr(&missing)
    );

    let stream = format!("{prefix}bumped");
    let tail = tokio::process::Command::new(env!("CARGO_BIN_EXE_granary"))
        .args([
            "--redis",
            &url,
            "events",
            "tail",
            &stream,
            "--from-start",
            "--count",
            "1",
        ])
        .output();
    let tail = tokio::time::timeout(std::time::Duration::from_secs(20), tail)
        .await
        .unwrap()
        .unwrap();
    assert!(tail.status.success(), "{}", stderr(&tail));
    let line = stdout(&tail);
    assert!(
        line.contains("\"type\":\"bumped\"") && line.contains("\"n\":1"),
        "{line}"
    );

    relay.stop().await;
    silo.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_wrong_url_or_a_missing_setting_says_what_to_do() {
    let url = shared_redis_url().await;
    let nothing = granary(&["status"]);
    assert_eq!(nothing.status.code(), Some(1));
    assert!(stderr(&nothing).contains("--redis"), "{}", stderr(&nothing));
    let wrong = granary(&["--redis", "redis://127.0.0.1:1", "--cluster", "c", "status"]);
    assert_eq!(wrong.status.code(), Some(1));
    assert!(
        stderr(&wrong).contains("cannot reach Redis"),
        "{}",
        stderr(&wrong)
    );
    let never = unique_name("never-created");
    let no_cluster = granary(&["--redis", &url, "--cluster", &never, "status"]);
    assert_eq!(no_cluster.status.code(), Some(1));
    assert!(
        stderr(&no_cluster).contains("holds no cluster"),
        "{}",
        stderr(&no_cluster)
    );
}

//! The `granary` command against a running silo on the shared Redis, and host binaries (the
//! command with grain types compiled in: the `host` example) running silos.
#![allow(clippy::unwrap_used, reason = "test helpers fail loudly")]

use std::process::Output;
use std::sync::Arc;

use granary::provider::{MembershipTable, SiloStatus};
use granary::{
    ClientConfig, ClusterClient, ClusterConfig, Event, GrainContext, Silo, SiloConfig, grain,
};
use granary_events::Relay;
use granary_redis::{RedisConfig, RedisMembership, RedisStore, RedisStreamsSink};
use granary_testkit::process::SiloProcess;
use granary_testkit::redis_server::{shared_redis_url, unique_name};
use serde::{Deserialize, Serialize};

#[allow(
    dead_code,
    reason = "the host's grain, for the client; its main is the example's"
)]
#[path = "../examples/host.rs"]
mod host;

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
            // `granary grain` must find the grain active: no idle collection under the test
            // (the test profile's 200 ms deactivated it before the command looked).
            idle_timeout: std::time::Duration::from_secs(600),
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
        .role("sim")
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
    // The silo's hosted types and roles, under its row.
    assert!(
        out.lines().any(|l| l.trim() == "hosts: cli.counter"),
        "{out}"
    );
    assert!(out.lines().any(|l| l.trim() == "roles: sim"), "{out}");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_dead_lists_dead_letters_and_redrives_them_to_the_outbox() {
    use granary::provider::Outbox;

    let url = shared_redis_url().await;
    let cluster = unique_name("cli-dead");
    let store = Arc::new(
        RedisStore::connect(RedisConfig::new(&url, &cluster).shards(2))
            .await
            .unwrap(),
    );
    let silo = Silo::builder()
        .config(SiloConfig::test_profile())
        .storage(store.clone())
        .register::<CounterGrain>()
        .start()
        .await
        .unwrap();
    silo.client()
        .grain::<CounterGrain>("poison")
        .bump()
        .await
        .unwrap();
    silo.client()
        .grain::<CounterGrain>("good")
        .bump()
        .await
        .unwrap();
    silo.shutdown().await.unwrap();
    let pending = store.pending(100).await.unwrap();
    let poison = pending
        .iter()
        .find(|e| e.id.grain.key().to_string() == "poison")
        .unwrap()
        .clone();
    store
        .dead_letter(&[(
            poison.position.clone(),
            "kafka refused it 5 times: too large".into(),
        )])
        .await
        .unwrap();

    let base = ["--redis", url.as_str(), "--cluster", cluster.as_str()];
    let listed = granary(&[&base[..], &["events", "dead", "list"]].concat());
    assert!(listed.status.success(), "{}", stderr(&listed));
    let out = stdout(&listed);
    let line = out
        .lines()
        .find(|l| l.contains("kafka refused it 5 times: too large"))
        .unwrap_or_else(|| panic!("the dead letter is listed: {out}"));
    assert!(line.contains("bumped") && line.contains("poison"), "{line}");
    assert!(out.contains("1 dead letters"), "{out}");
    let letter = line.split_whitespace().next().unwrap().to_owned();
    assert!(
        letter.starts_with(&format!("{}/", poison.position.shard)),
        "{letter}"
    );

    let bad = granary(&[&base[..], &["events", "dead", "redrive", "nonsense"]].concat());
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr(&bad).contains("<shard>/<entry>"), "{}", stderr(&bad));

    let redriven = granary(&[&base[..], &["events", "dead", "redrive", &letter]].concat());
    assert!(redriven.status.success(), "{}", stderr(&redriven));
    assert!(
        stdout(&redriven).contains("re-drove 1 of 1"),
        "{}",
        stdout(&redriven)
    );
    let back = store.pending(100).await.unwrap();
    assert!(
        back.iter()
            .any(|e| e.id == poison.id && e.event == poison.event),
        "back in the outbox with its id: {back:?}"
    );
    let listed = granary(&[&base[..], &["events", "dead", "list"]].concat());
    assert!(
        stdout(&listed).contains("0 dead letters"),
        "{}",
        stdout(&listed)
    );
    let all = granary(&[&base[..], &["events", "dead", "redrive", "--all"]].concat());
    assert!(all.status.success(), "{}", stderr(&all));
    assert!(stdout(&all).contains("re-drove 0 of 0"), "{}", stdout(&all));
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

const SECRET: &str = "a cli host test secret of 32 bytes";

/// The `host` example: `granary` with the `host.greeter` grain type compiled in. Cargo builds
/// examples with the tests, next to the binaries.
fn host_binary() -> String {
    let granary = std::path::Path::new(env!("CARGO_BIN_EXE_granary"));
    let host = granary.parent().unwrap().join("examples").join("host");
    assert!(host.exists(), "{} is built with the tests", host.display());
    host.to_string_lossy().into_owned()
}

/// Runs `binary` with `args` and only the `GRANARY_*` variables in `env`.
fn command(binary: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = std::process::Command::new(binary);
    command.args(args);
    for (key, _) in std::env::vars() {
        if key.starts_with("GRANARY_") {
            command.env_remove(key);
        }
    }
    command.envs(env.iter().copied()).output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_binary_runs_a_silo_that_serves_calls_and_stops_on_sigterm() {
    let url = shared_redis_url().await;
    let cluster = unique_name("cli-host");
    // The settings file holds the cluster; the environment (GRANARY_NAME) wins over its name.
    let file = std::env::temp_dir().join(format!("{cluster}.toml"));
    std::fs::write(
        &file,
        format!(
            "cluster = \"{cluster}\"\nsecret = \"{SECRET}\"\nredis = \"{url}\"\nname = \"from-file\"\nbootstrap = \"create\"\n"
        ),
    )
    .unwrap();
    let mut silo = SiloProcess::start_with_args(
        &host_binary(),
        &["silo", "--config", file.to_str().unwrap()],
        "hosted",
        // The grain stays active until the inspection commands have looked at it (the test
        // profile would deactivate it after 200 ms).
        &[("GRANARY_ROLES", "sim, eu"), ("GRANARY_IDLE_AFTER", "10m")],
    )
    .await;
    std::fs::remove_file(&file).unwrap();

    let mut config = ClientConfig::new(&cluster, SECRET, vec![silo.addr]);
    config.discover = false;
    let client = ClusterClient::connect(config).await.unwrap();
    let greeter = client.grain::<host::GreeterGrain>("ann");
    assert_eq!(greeter.greet("ann".into()).await.unwrap(), "hello ann (1)");
    assert_eq!(greeter.greet("ann".into()).await.unwrap(), "hello ann (2)");
    client.close().await;

    // The host's inspection commands see the silo and the grain it serves.
    let base = ["--redis", url.as_str(), "--cluster", cluster.as_str()];
    let host = host_binary();
    let status = command(&host, &[&base[..], &["status"]].concat(), &[]);
    assert!(status.status.success(), "{}", stderr(&status));
    assert!(stdout(&status).contains("hosted@"), "{}", stdout(&status));
    // GRANARY_ROLES reached the silo's membership row.
    assert!(
        stdout(&status)
            .lines()
            .any(|l| l.trim() == "roles: sim, eu"),
        "{}",
        stdout(&status)
    );
    let shown = command(
        &host,
        &[&base[..], &["grain", "host.greeter", "ann"]].concat(),
        &[],
    );
    assert!(shown.status.success(), "{}", stderr(&shown));
    let out = stdout(&shown);
    assert!(
        out.contains("active on hosted@") && out.contains("\"count\": 2"),
        "{out}"
    );

    silo.signal("-TERM");
    assert_eq!(
        silo.exit_code(std::time::Duration::from_secs(20)).await,
        Some(0),
        "a clean stop"
    );
    let store = Arc::new(
        RedisStore::connect(RedisConfig::new(&url, &cluster))
            .await
            .unwrap(),
    );
    let table = RedisMembership::new(store).read().await.unwrap();
    let row = table
        .entries
        .iter()
        .find(|e| e.silo.name() == "hosted")
        .unwrap();
    assert_eq!(row.status, SiloStatus::Dead, "it left the membership table");
}

#[tokio::test]
async fn a_silo_with_no_grain_types_a_missing_secret_or_a_wrong_url_says_what_to_do() {
    let url = shared_redis_url().await;
    let cluster = unique_name("cli-refused");
    let host = host_binary();
    let stock = env!("CARGO_BIN_EXE_granary");
    let complete = [
        ("GRANARY_CLUSTER", cluster.as_str()),
        ("GRANARY_SECRET", SECRET),
        ("GRANARY_REDIS", url.as_str()),
        ("GRANARY_LISTEN", "127.0.0.1:0"),
    ];

    // The stock binary knows no grain type: it refuses, and says how to build a host.
    let refused = command(stock, &["silo"], &complete);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("no grain types") && stderr(&refused).contains("main_with"),
        "{}",
        stderr(&refused)
    );
    // With no command at all, it shows its usage instead of trying to run a silo.
    let bare = command(stock, &[], &complete);
    assert_eq!(bare.status.code(), Some(2));
    assert!(stderr(&bare).contains("Usage"), "{}", stderr(&bare));

    let no_secret = command(&host, &["silo"], &[complete[0], complete[2], complete[3]]);
    assert_eq!(no_secret.status.code(), Some(2), "{}", stderr(&no_secret));
    assert!(
        stderr(&no_secret).contains("GRANARY_SECRET")
            && stderr(&no_secret).contains("`secret` in the settings file"),
        "{}",
        stderr(&no_secret)
    );

    // A Redis nobody listens on: named, with the flag that overrides the variable.
    let unreachable = command(
        &host,
        &["--redis", "redis://127.0.0.1:1", "silo"],
        &complete,
    );
    assert_eq!(
        unreachable.status.code(),
        Some(1),
        "{}",
        stderr(&unreachable)
    );
    let err = stderr(&unreachable);
    assert!(
        err.contains("GRANARY_REDIS")
            && err.contains("cannot reach Redis")
            && err.contains("--redis"),
        "{err}"
    );
    let malformed = command(
        &host,
        &["silo"],
        &[
            complete[0],
            complete[1],
            ("GRANARY_REDIS", "htp://nowhere"),
            complete[3],
        ],
    );
    assert_eq!(malformed.status.code(), Some(2), "{}", stderr(&malformed));
    assert!(
        stderr(&malformed).contains("GRANARY_REDIS")
            && stderr(&malformed).contains("invalid Redis URL"),
        "{}",
        stderr(&malformed)
    );
    // A cluster that does not exist is not created unless asked for: a Redis that lost its
    // data is not taken for a new, empty cluster.
    let never_created = command(&host, &["silo"], &complete);
    assert_eq!(
        never_created.status.code(),
        Some(2),
        "{}",
        stderr(&never_created)
    );
    let err = stderr(&never_created);
    assert!(
        err.contains("holds no cluster") && err.contains("GRANARY_BOOTSTRAP=create"),
        "{err}"
    );

    // None of them joined the cluster.
    let store = RedisStore::connect(RedisConfig::new(&url, &cluster))
        .await
        .unwrap();
    let table = RedisMembership::new(Arc::new(store)).read().await.unwrap();
    assert!(table.entries.is_empty(), "{table:?}");

    // A host knows its grain types.
    let unknown = command(&host, &["grain", "player", "alice"], &complete);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(
        stderr(&unknown).contains("unknown grain type player; known: host.greeter"),
        "{}",
        stderr(&unknown)
    );
}

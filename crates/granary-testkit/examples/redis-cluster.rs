//! Runs a command against a private Redis Cluster: starts 3 primaries on free loopback ports
//! ([`PrivateRedisCluster`]), runs the command with `GRANARY_TEST_REDIS` set to the cluster's
//! `redis+cluster://` URL, and kills the cluster when the command ends. The tests that use the
//! shared Redis then run on the cluster:
//!
//! ```text
//! cargo run -p granary-testkit --example redis-cluster -- cargo nextest run -p granary-tests
//! ```
//!
//! The exit status is the command's.

use std::process::ExitCode;

use granary_testkit::redis_cluster::PrivateRedisCluster;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((program, args)) = args.split_first() else {
        eprintln!(
            "usage: redis-cluster <command> [args…]: runs the command with GRANARY_TEST_REDIS naming a private Redis Cluster"
        );
        return ExitCode::from(2);
    };
    let cluster = PrivateRedisCluster::start(0).await;
    eprintln!("Redis Cluster up: GRANARY_TEST_REDIS={}", cluster.url());
    let status = tokio::process::Command::new(program)
        .args(args)
        .env("GRANARY_TEST_REDIS", cluster.url())
        .status()
        .await;
    drop(cluster);
    match status {
        Ok(status) if status.success() => ExitCode::SUCCESS,
        Ok(status) => {
            eprintln!("{program} ended with {status}");
            ExitCode::from(u8::try_from(status.code().unwrap_or(1)).unwrap_or(1))
        }
        Err(err) => {
            eprintln!("cannot run {program}: {err}");
            ExitCode::from(2)
        }
    }
}

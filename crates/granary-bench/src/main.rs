//! Granary benchmark runner: `cargo run --release -p granary-bench -- all` (or `-- P1 P5 P6`).
//!
//! Every metric runs its baseline and the Granary candidate interleaved, `--reps` times, and
//! prints one `BENCH <id> … value= baseline= ratio=` line of medians; the other peers print
//! their own `BENCH` lines for context.
#![allow(clippy::print_stdout, reason = "benchmark output")]

mod alloc;
mod cluster;
mod engines;
mod events;
mod grpc;
mod metrics;
mod placement;
mod push;
mod reminders;
mod report;
mod storage;
mod subscriptions;
mod tls;

use clap::Parser;

#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;

/// Runs Granary's benchmarks against their baselines.
#[derive(Debug, Parser)]
struct Args {
    /// Metrics to run: all, P1, P1a-filter, P1b-1M, P2, P3, P4 (P3 or P4 also prints P3-tonic and
    /// P4-tonic, and either tonic id runs all of them), P5, P6 (with P6c), P6c, P5-cluster and
    /// P6-cluster (on a private 3-primary Redis Cluster the run starts), P7 or one P7
    /// sink (P7-redis-streams, P7-nats, P7-rabbitmq, P7-kafka, P7-sqs), P8, P8-1M, P9 (also
    /// prints P9-prod), P10, P11, P12, P13, P14, P3-tls and P4-tls (either prints both, and P3-tls-p99:
    /// P3/P4's Granary side over mutual TLS against the same in plaintext). P3–P7, P9, P10, P13, P14 and
    /// the TLS ids need Redis, `GRANARY_BENCH_REDIS`; P7 also
    /// NATS, `GRANARY_BENCH_NATS`, and RabbitMQ, `GRANARY_BENCH_AMQP`, all three defaulting to
    /// the local servers; and Kafka, `GRANARY_BENCH_KAFKA`, and SQS, `GRANARY_BENCH_SQS`, which
    /// default to a private `tansu` broker and `moto_server` that P7 starts.
    #[arg(default_value = "all")]
    ids: Vec<String>,
    /// Interleaved repetitions per metric (medians are reported).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Smaller workloads, for a smoke run.
    #[arg(long)]
    quick: bool,
    /// Internal: serve as a process of the cluster benchmarks (`silo`, `echo` or `tonic`).
    #[arg(long, hide = true)]
    serve: Option<String>,
    /// Internal, with `--serve`: the core to pin the server process to.
    #[arg(long, hide = true, requires = "serve")]
    cpu: Option<usize>,
    /// Runs only the Granary side of one workload (p1a, p1b, p2, p4, p5, p8, p13), for a
    /// profiler.
    #[arg(long)]
    profile: Option<String>,
    /// With `--profile p4`: the calls of the 256-in-flight phase (default 400,000, or 40,000
    /// with `--quick`); with `--profile p1b`, the calls of all 8 callers together (default
    /// 1,000,000, or 100,000 with `--quick`); with `--profile p13`, the broadcasts to the
    /// 1,000 clients (default 200). Two runs with different counts give the cost of
    /// one call under `valgrind --tool=callgrind --trace-children=yes` (the difference over
    /// the extra calls).
    #[arg(long, requires = "profile")]
    calls: Option<usize>,
    /// With `--profile p1b` or `p8`: the grains called or activated (default 1,000 for p1b,
    /// 100,000 for p8, a tenth of that with `--quick`). P1b runs with two counts under
    /// `valgrind --tool=cachegrind` show what a large catalog costs a call in cache misses; p8
    /// under `valgrind --tool=dhat` attributes an idle activation's bytes.
    #[arg(long, requires = "profile")]
    grains: Option<usize>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(role) = &args.serve {
        // Pinned before the runtime starts, so that every one of its threads inherits the pin.
        let _pinned = args.cpu.map(placement::pin_current_thread).transpose()?;
        let rt = engines::multi_thread(2);
        return match role.as_str() {
            "silo" => rt.block_on(cluster::serve_silo()),
            "echo" => rt.block_on(cluster::serve_echo()),
            "tonic" => rt.block_on(grpc::serve_tonic()),
            other => anyhow::bail!("unknown role {other}: use silo, echo or tonic"),
        };
    }
    let selection = Selection::parse(&args.ids).map_err(anyhow::Error::msg)?;
    let wants = |id: &str| selection.wants(id);
    let scale = if args.quick { 10 } else { 1 };
    if let Some(workload) = &args.profile {
        let value = match workload.as_str() {
            "p1a" => engines::granary::p1a(1_000_000 / scale),
            "p1b" => engines::granary::p1b(
                args.grains.unwrap_or(1_000),
                8,
                args.calls.unwrap_or(1_000_000 / scale) / 8,
            ),
            "p2" => engines::granary::p2(5_000_000 / scale),
            "p8" => engines::granary::p8(args.grains.unwrap_or(100_000 / scale)),
            // P3 then P4's Granary side (a silo process is started): calls/s of P4.
            "p4" => {
                cluster::granary_calls(
                    5_000 / scale,
                    1_000 / scale.min(10),
                    args.calls.unwrap_or(400_000 / scale),
                    placement::CpuPlacement::for_this_machine(),
                    cluster::Profile::Production,
                    None,
                )
                .calls_per_sec
            }
            "p5" => {
                let bench = storage::RedisBench::connect()?;
                bench.seed_p5(100_000 / scale);
                let rate = bench.p5_granary(100_000 / scale, 128);
                bench.cleanup();
                rate
            }
            // Pushes/s to the observers of 1,000 clients (100 with `--quick`).
            "p13" => push::granary(1_000 / scale, args.calls.unwrap_or(200)).pushes_per_sec,
            other => {
                anyhow::bail!("unknown workload {other}: use p1a, p1b, p2, p4, p5, p8 or p13")
            }
        };
        println!("granary {workload}: {value:.1}");
        return Ok(());
    }
    println!(
        "# granary-bench: {} repetitions, medians; machine: {} cores",
        args.reps,
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    if wants("P1") {
        metrics::p1(args.reps, scale)?;
    }
    if wants("P1a-filter") {
        metrics::p1a_filter(args.reps, scale);
    }
    if wants("P1b-1M") {
        metrics::p1b_1m(args.reps, scale);
    }
    if wants("P2") {
        metrics::p2(args.reps, scale)?;
    }
    let storage = metrics::StorageIds {
        p5: wants("P5"),
        p6: wants("P6"),
        p6c: wants("P6") || wants("P6c"),
    };
    if storage.p5 || storage.p6 || storage.p6c {
        metrics::storage(args.reps, scale, storage)?;
    }
    if wants("P5-cluster") || wants("P6-cluster") {
        metrics::storage_cluster(args.reps, scale, wants("P5-cluster"), wants("P6-cluster"))?;
    }
    if ["P3", "P4", "P3-tonic", "P4-tonic"]
        .iter()
        .any(|id| wants(id))
    {
        metrics::p3_p4(args.reps, scale);
    }
    // `P7` runs every sink; `P7-kafka` (and so on) only the sinks named.
    let p7_sink = |sink: &str| wants("P7") || wants(&format!("P7-{sink}"));
    if events::SINKS.iter().any(|sink| p7_sink(sink)) {
        metrics::p7(args.reps, scale, &p7_sink);
    }
    if wants("P9") || wants("P9-prod") {
        metrics::p9(args.reps, scale);
    }
    if wants("P8") {
        metrics::p8(args.reps, scale)?;
    }
    if wants("P8-1M") {
        metrics::p8_1m(args.reps, scale);
    }
    if wants("P10") {
        metrics::p10(scale)?;
    }
    if wants("P11") {
        metrics::p11(args.reps, scale)?;
    }
    if wants("P12") {
        metrics::p12(args.reps, scale);
    }
    if wants("P13") {
        metrics::p13(args.reps, scale);
    }
    if wants("P14") {
        metrics::p14(args.reps, scale);
    }
    if wants("P3-tls") || wants("P4-tls") {
        metrics::p3_p4_tls(args.reps, scale)?;
    }
    Ok(())
}

/// The benchmark ids a run can name (besides `all` and `P7-<sink>`), in the order they run.
const IDS: [&str; 25] = [
    "P1",
    "P1a-filter",
    "P1b-1M",
    "P2",
    "P5",
    "P6",
    "P6c",
    "P5-cluster",
    "P6-cluster",
    "P3",
    "P4",
    "P3-tonic",
    "P4-tonic",
    "P7",
    "P9",
    "P9-prod",
    "P8",
    "P8-1M",
    "P10",
    "P11",
    "P12",
    "P13",
    "P14",
    "P3-tls",
    "P4-tls",
];

/// The metrics a run was asked for.
#[derive(Debug, PartialEq, Eq)]
struct Selection {
    all: bool,
    ids: Vec<String>,
}

impl Selection {
    /// Checks every id (case-insensitively) against the ones the runner knows.
    fn parse(ids: &[String]) -> Result<Self, String> {
        let known = |id: &str| {
            id.eq_ignore_ascii_case("all")
                || IDS.iter().any(|k| k.eq_ignore_ascii_case(id))
                || events::SINKS
                    .iter()
                    .any(|sink| format!("P7-{sink}").eq_ignore_ascii_case(id))
        };
        if let Some(unknown) = ids.iter().find(|id| !known(id)) {
            return Err(format!(
                "unknown benchmark id {unknown:?}: use all, {}, or P7-<sink> with a sink of {}",
                IDS.join(", "),
                events::SINKS.join(", ")
            ));
        }
        Ok(Self {
            all: ids.iter().any(|id| id.eq_ignore_ascii_case("all")),
            ids: ids.to_vec(),
        })
    }

    /// Whether `id` runs: named, or `all` named.
    fn wants(&self, id: &str) -> bool {
        self.all || self.ids.iter().any(|x| x.eq_ignore_ascii_case(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("granary-bench").chain(line.iter().copied()))
    }

    fn selection(ids: &[&str]) -> Result<Selection, String> {
        Selection::parse(&ids.iter().map(|id| (*id).to_owned()).collect::<Vec<_>>())
    }

    #[test]
    fn no_id_means_all_with_three_repetitions() {
        let args = args(&[]).expect("parses");
        assert_eq!(args.ids, ["all"]);
        assert_eq!(args.reps, 3);
        assert!(!args.quick);
        let all = Selection::parse(&args.ids).expect("all is known");
        assert!(IDS.iter().all(|id| all.wants(id)));
    }

    #[test]
    fn ids_options_and_the_server_core_parse() {
        let parsed = args(&["P3-tonic", "p10", "--reps", "5", "--quick"]).expect("parses");
        assert_eq!(parsed.ids, ["P3-tonic", "p10"]);
        assert_eq!((parsed.reps, parsed.quick), (5, true));
        let server = args(&["--serve", "echo", "--cpu", "1"]).expect("parses");
        assert_eq!(
            (server.serve.as_deref(), server.cpu),
            (Some("echo"), Some(1))
        );
        assert!(
            args(&["--cpu", "1"]).is_err(),
            "--cpu only goes with --serve"
        );
        assert!(args(&["--reps", "many"]).is_err());
    }

    #[test]
    fn only_the_named_ids_run_case_insensitively() {
        let chosen = selection(&["p8-1m", "P6c", "P7-kafka"]).expect("known ids");
        assert!(chosen.wants("P8-1M") && chosen.wants("P6c") && chosen.wants("P7-kafka"));
        assert!(!chosen.wants("P8"), "P8-1M does not run P8");
        assert!(!chosen.wants("P6") && !chosen.wants("P7") && !chosen.wants("P1"));
    }

    #[test]
    fn an_unknown_id_is_refused_with_the_known_ones() {
        let error = selection(&["P3", "P99"]).expect_err("P99 is unknown");
        assert!(error.contains("\"P99\""), "{error}");
        assert!(
            error.contains("P11") && error.contains("redis-streams"),
            "{error}"
        );
        assert!(selection(&["P7-redis-streams", "ALL"]).is_ok());
    }
}

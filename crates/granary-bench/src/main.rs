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
mod metrics;
mod report;
mod storage;

use clap::Parser;

#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;

/// Runs Granary's benchmarks against their baselines.
#[derive(Debug, Parser)]
struct Args {
    /// Metrics to run: P1…P9 or all, or one P7 sink (P7-redis-streams, P7-nats, P7-rabbitmq,
    /// P7-kafka, P7-sqs); P9 also prints P9-prod (P3–P7 and P9 need Redis, `GRANARY_BENCH_REDIS`; P7 also
    /// NATS, `GRANARY_BENCH_NATS`, and RabbitMQ, `GRANARY_BENCH_AMQP`, all three defaulting to
    /// the local servers; and Kafka, `GRANARY_BENCH_KAFKA`, and SQS, `GRANARY_BENCH_SQS`, which
    /// default to a private `tansu` broker and `moto_server` that P7 starts).
    #[arg(default_value = "all")]
    ids: Vec<String>,
    /// Interleaved repetitions per metric (medians are reported).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Smaller workloads, for a smoke run.
    #[arg(long)]
    quick: bool,
    /// Internal: serve as a process of the cluster benchmarks (`silo` or `echo`).
    #[arg(long, hide = true)]
    serve: Option<String>,
    /// Runs only the Granary side of one workload (p1a, p1b, p2, p4, p5, p8), for a profiler.
    #[arg(long)]
    profile: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(role) = &args.serve {
        let rt = engines::multi_thread(2);
        return match role.as_str() {
            "silo" => rt.block_on(cluster::serve_silo()),
            "echo" => rt.block_on(cluster::serve_echo()),
            other => anyhow::bail!("unknown role {other}"),
        };
    }
    let all = args.ids.iter().any(|id| id.eq_ignore_ascii_case("all"));
    let wants = |id: &str| all || args.ids.iter().any(|x| x.eq_ignore_ascii_case(id));
    let scale = if args.quick { 10 } else { 1 };
    if let Some(workload) = &args.profile {
        let value = match workload.as_str() {
            "p1a" => engines::granary::p1a(1_000_000 / scale),
            "p1b" => engines::granary::p1b(1_000, 8, 1_000_000 / scale),
            "p2" => engines::granary::p2(5_000_000 / scale),
            "p8" => engines::granary::p8(100_000 / scale),
            // P3 then P4's Granary side (a silo process is started): calls/s of P4.
            "p4" => {
                cluster::granary_calls(5_000 / scale, 1_000 / scale.min(10), 400_000 / scale)
                    .calls_per_sec
            }
            "p5" => {
                let bench = storage::RedisBench::connect()?;
                bench.seed_p5(100_000 / scale);
                let rate = bench.p5_granary(100_000 / scale, 128);
                bench.cleanup();
                rate
            }
            other => anyhow::bail!("unknown workload {other}: use p1a, p1b, p2, p4, p5 or p8"),
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
    if wants("P2") {
        metrics::p2(args.reps, scale)?;
    }
    if wants("P5") || wants("P6") {
        metrics::storage(args.reps, scale, wants("P5"), wants("P6"))?;
    }
    if wants("P3") || wants("P4") {
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
    Ok(())
}

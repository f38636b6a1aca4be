//! The Granary demo: a cluster of silos plays many matches between simulated players, shows
//! live progress, kills one silo part-way through and keeps going, then reconciles the
//! committed events against the grains' state to prove that nothing was lost or counted twice.
//!
//! `cargo run --release -p example-player-game` runs three silos in this process, on loopback
//! TCP, over in-memory providers. With `--redis redis://127.0.0.1:6379` (and optionally
//! `--nats nats://127.0.0.1:4222`, `--amqp amqp://guest:guest@127.0.0.1:5672`, and, built with
//! `--features kafka,sqs`, `--kafka 127.0.0.1:9092` for `match.ended` and `--sqs <URL>` for
//! `player.died`) each silo is its own process sharing the real Redis, events flow to the real
//! queues, and the kill is a real SIGKILL; `--verify --cluster <id>` in a later run reconciles that cluster again from Redis
//! without playing.
#![allow(clippy::print_stdout, reason = "demo output")]

mod local;
mod play;
mod processes;
mod queues;
mod reconcile;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::ensure;
use clap::Parser;
use granary::provider::{MembershipTable, SiloStatus};
use granary::{ClientConfig, ClusterClient};
use granary_events::EventEnvelope;

use crate::local::LocalCluster;
use crate::play::{Counters, Rng};
use crate::processes::{Backends, ProcessCluster};

/// Plays matches on a Granary cluster, kills a silo part-way through, and reconciles.
#[derive(Debug, Parser)]
#[command(name = "example-player-game")]
struct Args {
    /// Matches to play.
    #[arg(long, default_value_t = 20_000)]
    matches: u32,
    /// Players per match.
    #[arg(long, default_value_t = 8)]
    players: u32,
    /// Matches played at the same time.
    #[arg(long, default_value_t = 64)]
    concurrency: u32,
    /// Silos in the cluster.
    #[arg(long, default_value_t = 3)]
    silos: usize,
    /// Kill the last silo once this share of the matches is finished (0 keeps every silo).
    #[arg(long, default_value_t = 0.4)]
    kill_at: f64,
    /// Run the silos as processes sharing this Redis (e.g. `redis://127.0.0.1:6379`) instead of
    /// in this process over in-memory providers.
    #[arg(long, env = "GRANARY_REDIS")]
    redis: Option<String>,
    /// Also relay events to NATS JetStream at this URL (with `--redis`).
    #[arg(long, requires = "redis")]
    nats: Option<String>,
    /// Also relay events to RabbitMQ at this URI (with `--redis`).
    #[arg(long, requires = "redis")]
    amqp: Option<String>,
    /// Also relay `match.ended` to Kafka at these bootstrap servers, e.g. `127.0.0.1:9092`
    /// (with `--redis`; build with `--features kafka`).
    #[arg(long, requires = "redis")]
    kafka: Option<String>,
    /// Also relay `player.died` to SQS: `aws`, or an SQS-compatible server's URL such as
    /// `http://127.0.0.1:5000`, signed with `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (any
    /// value for a local server) (with `--redis`; build with `--features sqs`).
    #[arg(long, requires = "redis")]
    sqs: Option<String>,
    /// Serve the live dashboard and `/metrics` of the first silo on this address, e.g.
    /// `127.0.0.1:9100` (with `--redis`); the URL with its token is printed at start.
    #[arg(long, requires = "redis")]
    dashboard: Option<SocketAddr>,
    /// The cluster id (with `--redis`, runs with the same id share their grains and events).
    /// Default: `player-game-<time>`, a new cluster each run.
    #[arg(long)]
    cluster: Option<String>,
    /// Play nothing: start the silos of a cluster a previous run played (with `--redis`) and
    /// reconcile it again.
    #[arg(long, requires_all = ["redis", "cluster"])]
    verify: bool,
    /// Internal: run one silo process from `GRANARY_*` variables (how `--redis` starts silos).
    #[arg(long, hide = true)]
    serve_silo: bool,
}

/// The demo's cluster secret: the silos listen on loopback only.
const SECRET: &str = "granary-demo-secret-0123456789abcdef";

/// The name of silo `index`: `silo-a`, `silo-b`, …
pub(crate) fn silo_name(index: usize) -> String {
    let letter = u8::try_from(index % 26).map_or('?', |i| char::from(b'a' + i));
    if index < 26 {
        format!("silo-{letter}")
    } else {
        format!("silo-{letter}{}", index / 26)
    }
}

/// The running cluster, in either mode.
enum Cluster {
    Local(LocalCluster),
    Processes(ProcessCluster),
}

impl Cluster {
    fn names(&self) -> Vec<String> {
        match self {
            Self::Local(c) => c.names(),
            Self::Processes(c) => c.names(),
        }
    }
    fn gateways(&self) -> Vec<SocketAddr> {
        match self {
            Self::Local(c) => c.gateways(),
            Self::Processes(c) => c.gateways(),
        }
    }
    fn membership(&self) -> Arc<dyn MembershipTable> {
        match self {
            Self::Local(c) => c.membership(),
            Self::Processes(c) => c.membership(),
        }
    }
    async fn kill(&mut self, index: usize) -> anyhow::Result<()> {
        match self {
            Self::Local(c) => c.kill(index).await,
            Self::Processes(c) => c.kill(index).await,
        }
    }
    async fn committed_events(&self) -> anyhow::Result<Vec<EventEnvelope>> {
        match self {
            Self::Local(c) => c.committed_events().await,
            Self::Processes(c) => c.committed_events().await,
        }
    }
    async fn stop(self) -> anyhow::Result<()> {
        match self {
            Self::Local(c) => c.stop().await,
            Self::Processes(c) => c.stop().await,
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.serve_silo {
        return serve_silo().await;
    }
    // Ctrl-C or SIGTERM drops the demo, and with it the silos (processes are killed on drop);
    // the queue consumers are deleted either way.
    let mut taps = queues::Taps::default();
    let outcome = tokio::select! {
        result = demo(args, &mut taps) => result,
        signal = interrupted() => match signal {
            Ok(()) => Err(anyhow::anyhow!("interrupted: the silos were stopped")),
            Err(err) => Err(err),
        },
    };
    let closed = taps.close().await;
    outcome.and(closed)
}

/// Waits for Ctrl-C or SIGTERM.
async fn interrupted() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result?,
        _ = term.recv() => {}
    }
    Ok(())
}

async fn demo(args: Args, taps: &mut queues::Taps) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .init();
    ensure!(args.players >= 2, "a match needs at least two players");
    ensure!(args.silos >= 1, "a cluster needs a silo");
    ensure!(
        (0.0..1.0).contains(&args.kill_at),
        "--kill-at is a share of the matches, at least 0 and below 1"
    );
    let kill = args.kill_at > 0.0 && !args.verify;
    ensure!(
        !kill || args.silos >= 2,
        "killing a silo needs at least two (use --kill-at 0 with one silo)"
    );
    let cluster_id = args.cluster.clone().unwrap_or_else(|| {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        format!("player-game-{millis}")
    });

    if let Some(uri) = args.amqp.as_deref().filter(|_| !args.verify) {
        taps.add_rabbit(&cluster_id, uri).await?;
    }
    if let Some(brokers) = args.kafka.as_deref().filter(|_| !args.verify) {
        #[cfg(feature = "kafka")]
        taps.add_kafka(&cluster_id, brokers).await?;
        #[cfg(not(feature = "kafka"))]
        anyhow::bail!(
            "--kafka {brokers}: this build has no Kafka support; run it with \
             `cargo run --release -p example-player-game --features kafka -- …`"
        );
    }
    if let Some(endpoint) = args.sqs.as_deref().filter(|_| !args.verify) {
        #[cfg(feature = "sqs")]
        taps.add_sqs(&cluster_id, endpoint).await?;
        #[cfg(not(feature = "sqs"))]
        anyhow::bail!(
            "--sqs {endpoint}: this build has no SQS support; run it with \
             `cargo run --release -p example-player-game --features sqs -- …`"
        );
    }
    let mut cluster = match &args.redis {
        None => {
            println!(
                "granary demo: {} silos in this process on loopback TCP; state, directory, \
                 membership and events in in-memory providers shared by the silos",
                args.silos
            );
            Cluster::Local(LocalCluster::start(args.silos, &cluster_id, SECRET.as_bytes()).await?)
        }
        Some(redis) => {
            let backends = Backends {
                redis,
                nats: args.nats.as_deref(),
                amqp: args.amqp.as_deref(),
                kafka: args.kafka.as_deref(),
                sqs: args.sqs.as_deref(),
                dashboard: args.dashboard,
            };
            let also = |name: &str, at: Option<&String>| {
                at.map_or(String::new(), |at| format!(", {name} at {at}"))
            };
            println!(
                "granary demo: {} silo processes, cluster {cluster_id:?} in Redis at {redis}; \
                 events relayed to Redis Streams{}{}{}{}",
                args.silos,
                also("NATS", args.nats.as_ref()),
                also("RabbitMQ", args.amqp.as_ref()),
                also("Kafka (match.ended)", args.kafka.as_ref()),
                also("SQS (player.died)", args.sqs.as_ref()),
            );
            Cluster::Processes(
                ProcessCluster::start(args.silos, &cluster_id, SECRET, &backends).await?,
            )
        }
    };
    let names = cluster.names();
    println!("  started {}", names.join(", "));
    if let Some(url) = args.nats.as_deref().filter(|_| !args.verify) {
        taps.add_nats(&cluster_id, url).await?;
    }
    let client = ClusterClient::connect(ClientConfig {
        call_timeout: Duration::from_secs(5),
        refresh: Duration::from_millis(500),
        ..ClientConfig::new(&cluster_id, SECRET.as_bytes(), cluster.gateways())
    })
    .await?;
    let counters = Arc::new(Counters::default());

    if args.verify {
        println!(
            "reloading the {} matches of {} players a previous run played",
            args.matches, args.players
        );
    } else {
        let progress = tokio::spawn(progress(
            cluster.membership(),
            names.clone(),
            counters.clone(),
            args.matches,
        ));
        let started = Instant::now();
        let result = play(&client, &mut cluster, &counters, &args, kill).await;
        progress.abort();
        let _ = progress.await;
        result?;
        println!(
            "played {} matches in {:.1?} ({} calls retried after failures)",
            args.matches,
            started.elapsed(),
            counters.retries.load(Ordering::Relaxed)
        );
    }

    let events = cluster.committed_events().await?;
    let mut outcome = reconcile::reconcile(
        &client,
        &counters,
        &events,
        args.matches,
        args.players,
        !args.verify,
    )
    .await;
    let queues = taps.settle(&events).await;
    if outcome.is_ok() {
        outcome = queues;
    }
    client.close().await;
    cluster.stop().await?;
    outcome
}

/// Plays every match with `args.concurrency` workers; kills the last silo once
/// `args.kill_at` of the matches are finished.
async fn play(
    client: &ClusterClient,
    cluster: &mut Cluster,
    counters: &Arc<Counters>,
    args: &Args,
    kill: bool,
) -> anyhow::Result<()> {
    let next_match = Arc::new(AtomicU64::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..args.concurrency {
        let (client, next_match, counters) = (client.clone(), next_match.clone(), counters.clone());
        let (matches, players) = (u64::from(args.matches), args.players);
        workers.spawn(async move {
            let mut rng = Rng::new(u64::from(worker));
            loop {
                let game = next_match.fetch_add(1, Ordering::Relaxed);
                if game >= matches {
                    return Ok::<_, anyhow::Error>(());
                }
                play::play_match(&client, &counters, game, players, &mut rng).await?;
            }
        });
    }
    if kill {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "a share of a u32 count"
        )]
        let at = (f64::from(args.matches) * args.kill_at) as u64;
        let victim = cluster.names().len() - 1;
        let mut watch = tokio::time::interval(Duration::from_millis(10));
        while counters.finished.load(Ordering::Relaxed) < at && !workers.is_empty() {
            tokio::select! {
                _ = watch.tick() => {}
                Some(done) = workers.join_next() => done??,
            }
        }
        if counters.finished.load(Ordering::Relaxed) >= at {
            println!(
                "  *** killing {} after {at} matches: no shutdown, no goodbye; the others must notice",
                cluster.names()[victim]
            );
            cluster.kill(victim).await?;
        }
    }
    while let Some(done) = workers.join_next().await {
        done??;
    }
    Ok(())
}

/// Prints a progress line every second: matches finished, calls per second and active grains
/// per silo, as the silos' heartbeats in the membership table report them.
async fn progress(
    membership: Arc<dyn MembershipTable>,
    names: Vec<String>,
    counters: Arc<Counters>,
    total: u32,
) {
    let started = Instant::now();
    let mut last_calls: std::collections::HashMap<String, (u64, u64)> =
        std::collections::HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        let (Ok(table), Ok(beats)) = (membership.read().await, membership.heartbeats().await)
        else {
            println!("  (membership table out of reach)");
            continue;
        };
        let mut rate = None;
        let mut silos = Vec::new();
        for name in &names {
            let Some(entry) = table
                .entries
                .iter()
                .filter(|e| e.silo.name() == name)
                .max_by_key(|e| e.silo.generation())
            else {
                continue;
            };
            let beat = beats.iter().find(|(s, _)| *s == entry.silo).map(|(_, b)| b);
            let shown = match (entry.status, beat) {
                (SiloStatus::Active, Some(beat)) => {
                    if let Some((at, calls)) = last_calls.get(name)
                        && beat.at_ms > *at
                    {
                        *rate.get_or_insert(0.0) += (beat.calls.saturating_sub(*calls)) as f64
                            * 1000.0
                            / (beat.at_ms - at) as f64;
                    }
                    last_calls.insert(name.clone(), (beat.at_ms, beat.calls));
                    format!("{name} {:>6} grains", beat.activations)
                }
                (status, _) => format!("{name} {:>13}", format!("{status:?}").to_lowercase()),
            };
            silos.push(shown);
        }
        println!(
            "  [{:>5.1}s] matches {:>6}/{total}  {:>8} calls/s   {}",
            started.elapsed().as_secs_f64(),
            counters.finished.load(Ordering::Relaxed),
            rate.map_or_else(|| "-".to_owned(), |r: f64| format!("{r:.0}")),
            silos.join("  ")
        );
    }
}

/// `--serve-silo`: one silo process hosting the game's grains, configured by `GRANARY_*`
/// (the `silo` command of the game's host binary).
async fn serve_silo() -> anyhow::Result<()> {
    granary_cli::run(["granary", "silo"], example_player_game::host).await?;
    Ok(())
}

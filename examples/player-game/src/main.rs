//! Plays many matches between simulated players on one silo, shows live progress, then
//! reconciles the committed events against the grains' state.
//!
//! `cargo run --release -p example-player-game -- --matches 500 --players 8` runs on in-memory
//! storage. With `--redis redis://127.0.0.1:6379 --cluster league` state and events live in
//! Redis; running again with `--verify` (a new process) reloads every player from Redis and
//! reconciles without playing, which shows that a restart keeps every player's state.
#![allow(clippy::print_stdout, reason = "demo output")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
use clap::Parser;
use example_player_game::{
    Buff, BuffKind, DamageOutcome, GameGrain, JoinOutcome, MatchEnded, MatchPhase, PlayerDied,
    PlayerGrain,
};
use granary::provider::{GrainDirectory, MemoryStore, Outbox, StateStore};
use granary::{Silo, SiloConfig};
use granary_redis::{RedisConfig, RedisStore};

/// Simulates matches on a single in-process silo.
#[derive(Debug, Parser)]
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
    /// Seconds without a call after which a grain is deactivated.
    #[arg(long, default_value_t = 2)]
    idle_secs: u64,
    /// Keep state and events in this Redis (e.g. `redis://127.0.0.1:6379`) instead of memory.
    #[arg(long, env = "GRANARY_REDIS")]
    redis: Option<String>,
    /// The cluster id in Redis: runs with the same id share their grains.
    #[arg(long, default_value = "player-game")]
    cluster: String,
    /// Play nothing: reload the matches a previous run played (from Redis) and reconcile them.
    #[arg(long, requires = "redis")]
    verify: bool,
}

/// A small xorshift generator: the demo needs variety, not statistics.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap_or(0)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    ensure!(args.players >= 2, "a match needs at least two players");
    match &args.redis {
        Some(url) => {
            let config = RedisConfig::new(url, &args.cluster);
            let store = RedisStore::connect(config).await?;
            println!(
                "storage: Redis at {url}, cluster {:?} (epoch {})",
                args.cluster,
                store.epoch()
            );
            run(Arc::new(store), &args).await
        }
        None => run(Arc::new(MemoryStore::new()), &args).await,
    }
}

async fn run<S>(store: Arc<S>, args: &Args) -> anyhow::Result<()>
where
    S: StateStore + GrainDirectory + Outbox,
{
    let calls = Arc::new(AtomicU64::new(0));
    let counted = calls.clone();
    let silo = Silo::builder()
        .config(SiloConfig {
            name: "demo".into(),
            idle_timeout: Duration::from_secs(args.idle_secs),
            collection_quantum: Duration::from_millis(500),
            ..SiloConfig::default()
        })
        .storage(store.clone())
        .register::<PlayerGrain>()
        .register::<GameGrain>()
        .observe_calls(move |_, _, _| {
            counted.fetch_add(1, Ordering::Relaxed);
        })
        .start()
        .await?;
    if args.verify {
        println!(
            "granary demo: reloading the {} matches of {} players a previous run played",
            args.matches, args.players
        );
        reconcile(&silo, &*store, args).await?;
        return Ok(silo.shutdown().await?);
    }
    println!(
        "granary demo: {} matches of {} players on one silo ({} at a time)",
        args.matches, args.players, args.concurrency
    );

    let finished = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let silo = Arc::new(silo);
    let progress = {
        let (calls, finished, silo) = (calls.clone(), finished.clone(), silo.clone());
        let total = args.matches;
        tokio::spawn(async move {
            let mut last = (Instant::now(), 0);
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let now = (Instant::now(), calls.load(Ordering::Relaxed));
                let rate = (now.1 - last.1) as f64 / now.0.duration_since(last.0).as_secs_f64();
                println!(
                    "  {rate:>9.0} calls/s   {:>7} active grains   matches finished {:>6}/{total}",
                    silo.activation_count(),
                    finished.load(Ordering::Relaxed)
                );
                last = now;
            }
        })
    };

    let client = silo.client();
    let next_match = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for worker in 0..args.concurrency {
        let (client, next_match, finished) = (client.clone(), next_match.clone(), finished.clone());
        let (matches, players) = (u64::from(args.matches), args.players);
        workers.push(tokio::spawn(async move {
            let mut rng =
                Rng(0x9e37_79b9_7f4a_7c15
                    ^ (u64::from(worker) + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
            loop {
                let game_id = next_match.fetch_add(1, Ordering::Relaxed);
                if game_id >= matches {
                    return Ok::<_, anyhow::Error>(());
                }
                play_match(&client, i64::try_from(game_id)?, players, &mut rng).await?;
                finished.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for worker in workers {
        worker.await??;
    }
    progress.abort();
    let _ = progress.await;
    let elapsed = started.elapsed();
    let total_calls = calls.load(Ordering::Relaxed);
    println!(
        "played {} matches in {:.2?}: {total_calls} grain calls ({:.0}/s), {} grains active at the end",
        args.matches,
        elapsed,
        total_calls as f64 / elapsed.as_secs_f64(),
        silo.activation_count()
    );

    reconcile(&silo, &*store, args).await?;
    let silo = Arc::into_inner(silo).expect("the progress task is gone");
    silo.shutdown().await?;
    Ok(())
}

/// One match: create, join, start, fight until one player is left.
async fn play_match(
    client: &granary::Client,
    game_id: i64,
    players: u32,
    rng: &mut Rng,
) -> anyhow::Result<()> {
    let game = client.grain::<GameGrain>(game_id);
    game.create(players).await?;
    let names: Vec<String> = (0..players).map(|p| format!("m{game_id}-p{p}")).collect();
    for name in &names {
        ensure!(
            game.join(name.clone()).await? == JoinOutcome::Joined,
            "{name} could not join match {game_id}"
        );
    }
    game.start().await?;
    let mut alive = names.clone();
    while alive.len() > 1 {
        let attacker = alive[rng.below(alive.len())].clone();
        let victim_index = rng.below(alive.len());
        if alive[victim_index] == attacker {
            continue;
        }
        let victim = client.grain::<PlayerGrain>(alive[victim_index].as_str());
        if rng.below(10) == 0 {
            let buff = Buff {
                kind: BuffKind::Shield,
                amount: 15,
                remaining: Duration::from_secs(2),
            };
            let _ = victim.apply_buff(buff).await;
        }
        let damage = 10 + i32::try_from(rng.below(30))?;
        if victim.take_damage(damage, attacker).await? == DamageOutcome::Died {
            alive.swap_remove(victim_index);
        }
    }
    let info = game.info().await?;
    if info.phase != MatchPhase::Ended {
        bail!("match {game_id} did not end after its last death: {info:?}");
    }
    Ok(())
}

/// Proves nothing was lost: totals from committed events equal totals in the grains' state.
async fn reconcile(silo: &Silo, outbox: &dyn Outbox, args: &Args) -> anyhow::Result<()> {
    let entries = outbox.pending(usize::MAX).await?;
    let mut ids = std::collections::HashSet::new();
    let duplicates = entries.iter().filter(|e| !ids.insert(e.id.clone())).count();
    let died: Vec<PlayerDied> = entries
        .iter()
        .filter_map(|e| e.event.decode())
        .collect::<Result<_, _>>()?;
    let ended: Vec<MatchEnded> = entries
        .iter()
        .filter_map(|e| e.event.decode())
        .collect::<Result<_, _>>()?;
    let event_kills: u64 = ended
        .iter()
        .flat_map(|m| m.kills.iter())
        .map(|(_, k)| u64::from(*k))
        .sum();

    let client = silo.client();
    let (mut state_deaths, mut state_kills, mut state_wins) = (0_u64, 0_u64, 0_u64);
    for game in 0..args.matches {
        for p in 0..args.players {
            let status = client
                .grain::<PlayerGrain>(format!("m{game}-p{p}"))
                .status()
                .await?;
            state_deaths += u64::from(status.deaths);
            state_kills += u64::from(status.kills);
            state_wins += u64::from(status.wins);
        }
    }
    let winners = ended.iter().filter(|m| m.winner.is_some()).count() as u64;
    println!("reconciliation:");
    println!(
        "  MatchEnded events   {:>8}   matches played      {:>8}",
        ended.len(),
        args.matches
    );
    println!(
        "  PlayerDied events   {:>8}   deaths in state     {:>8}",
        died.len(),
        state_deaths
    );
    println!("  kills in events     {event_kills:>8}   kills in state      {state_kills:>8}");
    println!("  winners in events   {winners:>8}   wins in state       {state_wins:>8}");
    println!("  duplicate event ids {duplicates:>8}");
    let ok = ended.len() as u64 == u64::from(args.matches)
        && died.len() as u64 == state_deaths
        && event_kills == state_kills
        && winners == state_wins
        && duplicates == 0;
    if !ok {
        bail!("reconciliation failed: events and state disagree");
    }
    println!("  OK: nothing lost, nothing duplicated");
    Ok(())
}

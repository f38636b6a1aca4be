//! An analytics service: reads `match.ended` events from Redis Streams (the silos' relay puts
//! them there) in a consumer group and keeps a leaderboard of wins. Each event counts once:
//! redeliveries are dropped by event id.
//!
//! ```sh
//! cargo run -p example-player-game --bin leaderboard -- --redis redis://127.0.0.1:6379
//! ```
#![allow(clippy::print_stdout, reason = "demo output")]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use example_player_game::MatchEnded;
use granary_events::{EventEnvelope, typed};
use granary_redis::{ConsumerConfig, Idempotency, StreamConsumer};
use tokio_util::sync::CancellationToken;

/// Keeps a leaderboard of wins from `match.ended` events.
#[derive(Debug, Parser)]
struct Args {
    /// The Redis the events are in.
    #[arg(long, env = "GRANARY_REDIS")]
    redis: String,
    /// The silos' events prefix.
    #[arg(long, default_value = "events:")]
    prefix: String,
    /// The consumer group: consumers of one group share the events.
    #[arg(long, default_value = "leaderboard")]
    group: String,
    /// Stop after this many matches (default: run until Ctrl-C).
    #[arg(long)]
    count: Option<usize>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let stream = format!("{}match.ended", args.prefix);
    let consumer = StreamConsumer::new(
        &args.redis,
        &stream,
        &args.group,
        &format!("{}-{}", args.group, std::process::id()),
        ConsumerConfig::default(),
    )
    .await?
    .idempotent(
        Idempotency::connect(
            &args.redis,
            &format!("{}{}:seen:", args.prefix, args.group),
            Duration::from_secs(7 * 86_400),
        )
        .await?,
    );
    let wins: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let matches = Arc::new(Mutex::new(0_usize));
    let stop = CancellationToken::new();
    let (target, on_done) = (args.count, stop.clone());
    let (board, seen) = (wins.clone(), matches.clone());
    let handler = typed(move |ended: MatchEnded, _event: EventEnvelope| {
        let (board, seen, on_done) = (board.clone(), seen.clone(), on_done.clone());
        async move {
            if let Some(winner) = ended.winner {
                *board
                    .lock()
                    .map_err(|e| e.to_string())?
                    .entry(winner)
                    .or_default() += 1;
            }
            let mut seen = seen.lock().map_err(|e| e.to_string())?;
            *seen += 1;
            if target.is_some_and(|t| *seen >= t) {
                on_done.cancel();
            }
            Ok(())
        }
    });
    println!("reading {stream} as group {}", args.group);
    tokio::select! {
        result = consumer.run(handler, stop.clone()) => result?,
        _ = tokio::signal::ctrl_c() => stop.cancel(),
    }
    let mut board: Vec<(String, u32)> = wins
        .lock()
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .iter()
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    board.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let total = *matches.lock().map_err(|e| anyhow::anyhow!("{e}"))?;
    let recorded: u32 = board.iter().map(|(_, w)| w).sum();
    println!("leaderboard after {total} matches ({recorded} wins recorded):");
    for (player, wins) in board.iter().take(5) {
        println!("  {player:<16} {wins} wins");
    }
    Ok(())
}

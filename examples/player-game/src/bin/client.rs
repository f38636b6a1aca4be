//! A game front end that hosts no grains: plays matches on a running cluster through its
//! gateway silos.
//!
//! ```sh
//! GRANARY_CLUSTER=demo GRANARY_SECRET=0123456789abcdef0123456789abcdef \
//!   cargo run -p example-player-game --bin client -- --gateway 127.0.0.1:11111 --matches 20
//! ```
#![allow(clippy::print_stdout, reason = "demo output")]

use std::net::SocketAddr;

use anyhow::ensure;
use clap::Parser;
use example_player_game::{DamageOutcome, GameGrain, JoinOutcome, MatchPhase, PlayerGrain};
use granary::{ClientConfig, ClusterClient};

/// Plays matches on a cluster through its gateways.
#[derive(Debug, Parser)]
struct Args {
    /// The cluster id.
    #[arg(long, env = "GRANARY_CLUSTER")]
    cluster: String,
    /// The cluster secret.
    #[arg(long, env = "GRANARY_SECRET", hide_env_values = true)]
    secret: String,
    /// A gateway silo's address (repeat for more; the rest are learned from the cluster).
    #[arg(long = "gateway", required = true)]
    gateways: Vec<SocketAddr>,
    /// Matches to play.
    #[arg(long, default_value_t = 10)]
    matches: u32,
    /// Players per match.
    #[arg(long, default_value_t = 4)]
    players: u32,
    /// First match id (run again with another to play new matches).
    #[arg(long, default_value_t = 0)]
    first: i64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(args.players >= 2, "a match needs at least two players");
    let client = ClusterClient::connect(ClientConfig::new(
        &args.cluster,
        args.secret.as_bytes(),
        args.gateways,
    ))
    .await?;
    println!("connected; gateways: {:?}", client.gateways());
    for game_id in args.first..args.first + i64::from(args.matches) {
        let game = client.grain::<GameGrain>(game_id);
        game.create(args.players).await?;
        let names: Vec<String> = (0..args.players)
            .map(|p| format!("c{game_id}-p{p}"))
            .collect();
        for name in &names {
            ensure!(
                game.join(name.clone()).await? == JoinOutcome::Joined,
                "{name} could not join"
            );
        }
        game.start().await?;
        let mut alive = names.clone();
        let mut turn = 0usize;
        while alive.len() > 1 {
            turn += 1;
            let attacker = alive[turn % alive.len()].clone();
            let victim_index = (turn * 7 + 1) % alive.len();
            if alive[victim_index] == attacker {
                continue;
            }
            let victim = client.grain::<PlayerGrain>(alive[victim_index].as_str());
            if victim.take_damage(35, attacker).await? == DamageOutcome::Died {
                alive.swap_remove(victim_index);
            }
        }
        let info = game.info().await?;
        ensure!(
            info.phase == MatchPhase::Ended,
            "match {game_id} did not end: {info:?}"
        );
        println!("match {game_id}: {} won", alive[0]);
    }
    println!("played {} matches through the cluster", args.matches);
    client.close().await;
    Ok(())
}

//! A game front end that hosts no grains: plays matches on a running cluster through its
//! gateway silos. Its players queue through the matchmaker, each player's calls carry the
//! player as the request context's user, and at the end one forged call (a player's session
//! acting as another) shows the silos' authorization filter refusing it.
//!
//! ```sh
//! GRANARY_CLUSTER=demo GRANARY_SECRET=0123456789abcdef0123456789abcdef \
//!   cargo run -p example-player-game --bin client -- --gateway 127.0.0.1:11111 --matches 20
//! ```
#![allow(clippy::print_stdout, reason = "demo output")]

use std::net::SocketAddr;

use anyhow::{bail, ensure};
use clap::Parser;
use example_player_game::{
    DamageOutcome, GameGrain, MatchPhase, MatchmakerGrain, PlayerAuth, PlayerGrain, USER,
};
use granary::{CallError, ClientConfig, ClusterClient};

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
        let matchmaker = client.grain::<MatchmakerGrain>("lobby");
        for name in &names {
            ensure!(
                matchmaker.queue(name.clone(), vec![game_id]).await? == game_id,
                "{name} was not queued into match {game_id}"
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
            let victim = client
                .grain::<PlayerGrain>(alive[victim_index].as_str())
                .with_context(USER, alive[victim_index].as_str());
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
    // A forged call: one player's session asks for another's status; the silos' authorization
    // filter refuses it.
    let first = format!("c{}-p0", args.first);
    let forged = client
        .grain::<PlayerGrain>(format!("c{}-p1", args.first).as_str())
        .with_context(USER, first)
        .status()
        .await;
    match forged {
        Err(CallError::Refused { filter, reason, .. }) if filter == PlayerAuth::NAME => {
            println!("forged call refused: {reason}");
        }
        other => bail!(
            "a forged call was not refused by {}: {other:?}",
            PlayerAuth::NAME
        ),
    }
    client.close().await;
    Ok(())
}

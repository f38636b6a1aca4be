//! The proof at the end of the demo: the totals derived from the committed events equal the
//! totals in the grains' state, and no change was committed twice.

use std::collections::{HashMap, HashSet};

use anyhow::bail;
use example_player_game::{MatchEnded, PlayerDied, PlayerGrain};
use futures::StreamExt;
use granary::ClusterClient;
use granary_events::EventEnvelope;

use crate::play::{Counters, player_name, retry};

/// Compares the committed events with every player's state, read through the cluster.
pub(crate) async fn reconcile(
    client: &ClusterClient,
    counters: &Counters,
    events: &[EventEnvelope],
    matches: u32,
    players: u32,
) -> anyhow::Result<()> {
    // A relay that took over a dead silo's outbox shards may deliver an event again: the same
    // id, dropped here as any consumer drops it.
    let mut ids = HashSet::new();
    let unique: Vec<&EventEnvelope> = events
        .iter()
        .filter(|e| ids.insert(e.id.as_str()))
        .collect();
    let redelivered = events.len() - unique.len();
    let mut died = Vec::new();
    let mut ended = Vec::new();
    for event in unique {
        match event.type_name.as_str() {
            "player.died" => died.push(event.decode::<PlayerDied>()?),
            "match.ended" => ended.push(event.decode::<MatchEnded>()?),
            _ => {}
        }
    }
    // The same change committed twice would show as two events with different ids: each
    // player dies once (it plays one match) and each match ends once.
    let mut per_player: HashMap<&str, u32> = HashMap::new();
    for d in &died {
        *per_player.entry(d.player.as_str()).or_default() += 1;
    }
    let mut per_match: HashMap<i64, u32> = HashMap::new();
    for m in &ended {
        *per_match.entry(m.game).or_default() += 1;
    }
    let duplicates = per_player
        .values()
        .chain(per_match.values())
        .map(|n| n - 1)
        .sum::<u32>();
    let event_kills: u64 = ended
        .iter()
        .flat_map(|m| m.kills.iter())
        .map(|(_, k)| u64::from(*k))
        .sum();
    let winners = ended.iter().filter(|m| m.winner.is_some()).count() as u64;

    let names: Vec<String> = (0..u64::from(matches))
        .flat_map(|game| (0..players).map(move |p| player_name(game, p)))
        .collect();
    let statuses: Vec<anyhow::Result<_>> = futures::stream::iter(names.iter())
        .map(|name| {
            let player = client.grain::<PlayerGrain>(name.as_str());
            async move { retry(counters, "status", || player.status()).await }
        })
        .buffered(64)
        .collect()
        .await;
    let (mut deaths, mut kills, mut wins, mut in_match) = (0_u64, 0_u64, 0_u64, 0_u64);
    let mut stuck = Vec::new();
    for (name, status) in names.iter().zip(statuses) {
        let status = status?;
        if status.game.is_some() && stuck.len() < 8 {
            stuck.push(format!("{name}: {status:?}"));
        }
        deaths += u64::from(status.deaths);
        kills += u64::from(status.kills);
        wins += u64::from(status.wins);
        in_match += u64::from(status.game.is_some());
    }

    println!("reconciliation (events as committed, state as the grains hold it):");
    println!(
        "  MatchEnded events   {:>8}   matches played      {matches:>8}",
        ended.len()
    );
    println!(
        "  PlayerDied events   {:>8}   deaths in state     {deaths:>8}",
        died.len()
    );
    println!("  kills in events     {event_kills:>8}   kills in state      {kills:>8}");
    println!("  winners in events   {winners:>8}   wins in state       {wins:>8}");
    println!("  players still in a match {in_match:>3}   duplicates          {duplicates:>8}");
    if redelivered > 0 {
        println!(
            "  ({redelivered} events delivered twice by a relay taking over; same id, dropped)"
        );
    }
    let ok = ended.len() as u64 == u64::from(matches)
        && died.len() as u64 == deaths
        && event_kills == kills
        && winners == wins
        && in_match == 0
        && duplicates == 0;
    if !ok {
        for line in &stuck {
            println!("  still in a match: {line}");
        }
        bail!("reconciliation failed: events and state disagree");
    }
    println!("  OK: nothing lost, nothing duplicated");
    Ok(())
}

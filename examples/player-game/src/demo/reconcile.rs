//! The proof at the end of the demo: the totals derived from the committed events equal the
//! totals in the grains' state, no change was committed twice, and every player's energy came
//! back through its reminder with no tick applied twice; and a forged call (one player's
//! session acting as another) is refused by the silos' authorization filter.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use anyhow::bail;
use example_player_game::{
    ENERGY_REGEN, MATCH_ENERGY, MAX_ENERGY, MatchEnded, PlayerAuth, PlayerDied, PlayerGrain,
    PlayerStatus, USER,
};
use futures::StreamExt;
use granary::{CallError, ClusterClient};
use granary_events::EventEnvelope;

use crate::play::{Counters, player_name, player_session, retry};

/// Compares the committed events with every player's state, read through the cluster. `played`:
/// this run played the matches (so the matchmaker queued every player once), rather than
/// reloading what an earlier run played.
pub(crate) async fn reconcile(
    client: &ClusterClient,
    counters: &Counters,
    events: &[EventEnvelope],
    matches: u32,
    players: u32,
    played: bool,
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
    let mut statuses = read_statuses(client, counters, &names).await?;
    let refilled = wait_for_energy(client, counters, &names, &mut statuses).await?;
    let forged = forge_call(client, counters, &names).await?;
    let queued = counters.queued.load(std::sync::atomic::Ordering::Relaxed);
    let (mut deaths, mut kills, mut wins, mut in_match) = (0_u64, 0_u64, 0_u64, 0_u64);
    let (mut ticks, mut missed, mut doubled) = (0_u64, 0_u64, 0_u64);
    let mut stuck = Vec::new();
    for (name, status) in names.iter().zip(statuses) {
        if status.game.is_some() && stuck.len() < 8 {
            stuck.push(format!("{name}: {status:?}"));
        }
        deaths += u64::from(status.deaths);
        kills += u64::from(status.kills);
        wins += u64::from(status.wins);
        in_match += u64::from(status.game.is_some());
        ticks += u64::from(status.regen.ticks);
        missed += status.regen.missed;
        doubled += u64::from(status.regen.duplicates);
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
    println!("  energy regen ticks  {ticks:>8}   missed ticks        {missed:>8}");
    println!(
        "  players refilled    {refilled:>8}   ticks doubled       {doubled:>8}   (of {} players)",
        names.len()
    );
    println!("  matchmaker queued   {queued:>8}   refused forged calls {forged:>7}");
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
        && duplicates == 0
        && refilled == names.len()
        && doubled == 0
        && queued == if played { names.len() as u64 } else { 0 }
        && forged == 1;
    if !ok {
        for line in &stuck {
            println!("  still in a match: {line}");
        }
        bail!(
            "reconciliation failed: events and state disagree, energy was not refilled once, \
             a player was not queued once, or a forged call went through"
        );
    }
    println!("  OK: nothing lost, nothing duplicated");
    Ok(())
}

/// Every player's status, read through the cluster.
async fn read_statuses(
    client: &ClusterClient,
    counters: &Counters,
    names: &[String],
) -> anyhow::Result<Vec<PlayerStatus>> {
    futures::stream::iter(names)
        .map(|name| {
            let player = player_session(client, name);
            async move { retry(counters, "status", || player.status()).await }
        })
        .buffered(64)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// Waits until every player's energy is full again (the last matches' players get theirs
/// back a few periods after the end), reading again only those still regenerating; returns
/// how many are full. Gives up after a bounded wait: the summary then shows who is not.
async fn wait_for_energy(
    client: &ClusterClient,
    counters: &Counters,
    names: &[String],
    statuses: &mut [PlayerStatus],
) -> anyhow::Result<usize> {
    // Each spent point takes a period; a silo's death or a scan delays a tick by seconds.
    let deadline = tokio::time::Instant::now() + ENERGY_REGEN * (MATCH_ENERGY + 20);
    loop {
        let pending: Vec<usize> = (0..names.len())
            .filter(|&i| statuses[i].energy < MAX_ENERGY)
            .collect();
        if pending.is_empty() || tokio::time::Instant::now() >= deadline {
            return Ok(names.len() - pending.len());
        }
        tokio::time::sleep(ENERGY_REGEN.min(Duration::from_millis(500))).await;
        let again: Vec<String> = pending.iter().map(|&i| names[i].clone()).collect();
        let fresh = read_statuses(client, counters, &again).await?;
        for (i, status) in pending.into_iter().zip(fresh) {
            statuses[i] = status;
        }
    }
}

/// One deliberate forged call: the session of the first player asks for the status of the
/// second. Returns how many calls the authorization filter refused (1, or 0 if the call went
/// through); a failure of any other kind is an error.
async fn forge_call(
    client: &ClusterClient,
    counters: &Counters,
    names: &[String],
) -> anyhow::Result<u64> {
    let (Some(forger), Some(victim)) = (names.first(), names.get(1)) else {
        bail!("a forged call needs two players");
    };
    let forged = client
        .grain::<PlayerGrain>(victim.as_str())
        .with_context(USER, forger.as_str());
    let refused = retry(counters, "forged status", || async {
        match forged.status().await {
            Ok(_) => Ok(false),
            Err(CallError::Refused { filter, .. }) if filter == PlayerAuth::NAME => Ok(true),
            Err(err) => Err(err),
        }
    })
    .await?;
    Ok(u64::from(refused))
}

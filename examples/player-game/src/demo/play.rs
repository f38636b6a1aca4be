//! The simulated players: each worker plays matches through a cluster client, retrying a call
//! that failed because a silo died (every step of the game is idempotent, so a retry never
//! counts anything twice). Players queue through the matchmaker (a stateless worker), and each
//! player's own calls carry its name as the request context's user, which the silos'
//! authorization filter checks.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{bail, ensure};
use example_player_game::{
    Buff, BuffKind, DamageOutcome, GameGrain, MatchPhase, MatchmakerGrain, PlayerGrain, PlayerRef,
    USER,
};
use granary::{CallError, ClusterClient};

/// What the workers count, read by the progress line and the summary.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Matches played to their end.
    pub(crate) finished: AtomicU64,
    /// Calls retried after a failure a dead silo caused.
    pub(crate) retries: AtomicU64,
    /// Players the matchmaker put into a match.
    pub(crate) queued: AtomicU64,
}

/// A small xorshift generator: the demo needs variety, not statistics.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(0x9e37_79b9_7f4a_7c15 ^ (seed + 1).wrapping_mul(0x2545_f491_4f6c_dd1d))
    }

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

/// The name of player `index` of match `game`.
pub(crate) fn player_name(game: u64, index: u32) -> String {
    format!("m{game}-p{index}")
}

/// Player `name`, called from its own session: the request context's user is the player, as
/// the silos' authorization filter requires.
pub(crate) fn player_session(client: &ClusterClient, name: &str) -> PlayerRef {
    client.grain::<PlayerGrain>(name).with_context(USER, name)
}

/// The key of the matchmaker every worker queues through: one key, served by several
/// activations on each silo.
pub(crate) const LOBBY: &str = "lobby";

/// Whether a failed call is worth retrying: its silo died or was being replaced. The outcome
/// may be unknown, which the game's idempotent methods make safe.
fn transient(err: &CallError) -> bool {
    err.is_retryable() || err.outcome_unknown() || matches!(err, CallError::ActivationFailed { .. })
}

/// Runs `call` until it succeeds, retrying transient failures with backoff for up to 30 s.
pub(crate) async fn retry<T, F, Fut>(
    counters: &Counters,
    what: &str,
    mut call: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, CallError>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut pause = Duration::from_millis(10);
    loop {
        match call().await {
            Ok(value) => return Ok(value),
            Err(err) if transient(&err) && tokio::time::Instant::now() < deadline => {
                counters.retries.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%err, what, "retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
            Err(err) => bail!("{what}: {err}"),
        }
    }
}

/// One match: create, queue its players through the matchmaker (this match is the only open
/// one, so every player lands in it and the reconciliation's totals hold), start, fight until
/// one player is left.
pub(crate) async fn play_match(
    client: &ClusterClient,
    counters: &Counters,
    game_id: u64,
    players: u32,
    rng: &mut Rng,
) -> anyhow::Result<()> {
    let game = client.grain::<GameGrain>(i64::try_from(game_id)?);
    retry(counters, "create", || game.create(players)).await?;
    let names: Vec<String> = (0..players).map(|p| player_name(game_id, p)).collect();
    let matchmaker = client.grain::<MatchmakerGrain>(LOBBY);
    let open = vec![i64::try_from(game_id)?];
    for name in &names {
        let joined = retry(counters, "queue", || {
            matchmaker.queue(name.clone(), open.clone())
        })
        .await?;
        ensure!(
            open == [joined],
            "the matchmaker put {name} into match {joined}, not {game_id}"
        );
        counters.queued.fetch_add(1, Ordering::Relaxed);
    }
    retry(counters, "start", || game.start()).await?;
    let mut alive = names.clone();
    while alive.len() > 1 {
        let attacker = alive[rng.below(alive.len())].clone();
        let victim_index = rng.below(alive.len());
        if alive[victim_index] == attacker {
            continue;
        }
        let victim = player_session(client, &alive[victim_index]);
        if rng.below(10) == 0 {
            let buff = Buff {
                kind: BuffKind::Shield,
                amount: 15,
                remaining: Duration::from_secs(2),
            };
            // A shield is a bonus: a failed one is not retried.
            let _ = victim.apply_buff(buff).await;
        }
        let damage = 10 + i32::try_from(rng.below(30))?;
        let outcome = retry(counters, "take_damage", || {
            victim.take_damage(damage, attacker.clone())
        })
        .await?;
        // A retried hit whose first try killed finds the victim already dead.
        if matches!(outcome, DamageOutcome::Died | DamageOutcome::AlreadyDead) {
            alive.swap_remove(victim_index);
        }
    }
    let info = retry(counters, "info", || game.info()).await?;
    if info.phase != MatchPhase::Ended {
        bail!("match {game_id} did not end after its last death: {info:?}");
    }
    counters.finished.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

//! [`GameGrain`]: one match, from lobby to results.

use std::collections::BTreeMap;

use granary::{CallError, GrainContext, ObserverSet, Result, grain};
use player_game_api::{
    GameInfo, JoinOutcome, MAX_HEALTH, MatchPhase, MatchResult, MatchView, MatchWatcherRef,
    WATCH_LEASE,
};
use serde::{Deserialize, Serialize};

use crate::events::{MatchCreated, MatchEnded, MatchStarted};
use crate::player::PlayerGrain;

/// The persisted state of a match.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GameState {
    /// The phase.
    pub phase: MatchPhase,
    /// Lobby size.
    pub max_players: u32,
    /// Players, in joining order.
    pub players: Vec<String>,
    /// Players still alive (while running).
    pub alive: Vec<String>,
    /// Kills per player.
    pub kills: BTreeMap<String, u32>,
    /// Deaths so far.
    pub deaths: u32,
    /// Results, once ended.
    pub result: Option<MatchResult>,
    /// Each player's health as the match last heard it (set full at the start, then by
    /// `on_hit` and deaths): what the watchers are shown.
    #[serde(default)]
    pub health: BTreeMap<String, i32>,
    /// The screens watching the match ([`GameRef::watch`](player_game_api::GameRef::watch)),
    /// with their leases.
    #[serde(default)]
    pub watchers: ObserverSet<MatchWatcherRef>,
    /// How many pushes the match made ([`MatchView::seq`]).
    #[serde(default)]
    pub seq: u64,
}

/// One match: implements [`Game`](player_game_api::Game) (see there for what each method
/// promises, its idempotence among it), and pushes a [`MatchView`] to its watchers on every
/// change.
#[derive(Debug, Default)]
pub struct GameGrain;

#[grain(implements = player_game_api::Game, state = GameState)]
impl GameGrain {
    /// Opens the lobby for up to `max_players` players and publishes `MatchCreated`. Creating
    /// an existing match with the same size again succeeds and changes nothing.
    pub async fn create(&self, ctx: &GrainContext<Self>, max_players: u32) -> Result<()> {
        let game = self.game_id(ctx)?;
        {
            let mut s = ctx.state();
            if s.phase != MatchPhase::Unknown {
                if s.max_players == max_players {
                    return Ok(()); // a retried create
                }
                return Err(CallError::rejected(
                    ctx.id(),
                    format!("match already exists with {} players", s.max_players),
                ));
            }
            if max_players < 2 {
                return Err(CallError::rejected(
                    ctx.id(),
                    "a match needs room for two players",
                ));
            }
            s.phase = MatchPhase::Lobby;
            s.max_players = max_players;
        }
        ctx.publish(&MatchCreated { game, max_players })?;
        ctx.write_state().await
    }

    /// Adds `player` to the lobby (and the match to the player).
    pub async fn join(&self, ctx: &GrainContext<Self>, player: String) -> Result<JoinOutcome> {
        let game = self.game_id(ctx)?;
        {
            let s = ctx.state();
            if s.phase != MatchPhase::Lobby {
                return Ok(JoinOutcome::NotInLobby);
            }
            if s.players.contains(&player) {
                return Ok(JoinOutcome::AlreadyJoined);
            }
            if s.players.len() >= s.max_players as usize {
                return Ok(JoinOutcome::Full);
            }
        }
        if !ctx
            .grain::<PlayerGrain>(player.as_str())
            .enter_game(game)
            .await?
        {
            return Ok(JoinOutcome::InAnotherMatch);
        }
        ctx.state().players.push(player.clone());
        ctx.write_state().await?;
        self.push(ctx, format!("{player} joined")).await?;
        Ok(JoinOutcome::Joined)
    }

    /// Removes `player` from the lobby.
    pub async fn leave(&self, ctx: &GrainContext<Self>, player: String) -> Result<bool> {
        let game = self.game_id(ctx)?;
        {
            let mut s = ctx.state();
            if s.phase != MatchPhase::Lobby || !s.players.contains(&player) {
                return Ok(false);
            }
            s.players.retain(|p| *p != player);
        }
        ctx.grain::<PlayerGrain>(player.as_str())
            .leave_game(game)
            .await?;
        ctx.write_state().await?;
        Ok(true)
    }

    /// Starts the match (at least two players) and publishes `MatchStarted`. Starting a
    /// running match again succeeds and changes nothing.
    pub async fn start(&self, ctx: &GrainContext<Self>) -> Result<()> {
        let game = self.game_id(ctx)?;
        let players = {
            let mut s = ctx.state();
            if s.phase == MatchPhase::Running {
                return Ok(()); // a retried start
            }
            if s.phase != MatchPhase::Lobby {
                return Err(CallError::rejected(ctx.id(), "match is not in its lobby"));
            }
            if s.players.len() < 2 {
                return Err(CallError::rejected(
                    ctx.id(),
                    "a match needs two players to start",
                ));
            }
            s.phase = MatchPhase::Running;
            s.alive = s.players.clone();
            s.health = s.players.iter().map(|p| (p.clone(), MAX_HEALTH)).collect();
            s.players.clone()
        };
        ctx.publish(&MatchStarted { game, players })?;
        ctx.write_state().await?;
        self.push(ctx, "the match started".to_owned()).await
    }

    /// Records that `victim` was killed by `killer` (called by the victim's player grain). The
    /// killer is credited; when one player is left standing the match ends. Returns whether the
    /// match is over: the victim, waiting on this call, then leaves the match itself (every
    /// other player is told). A repeated report changes nothing; one that arrives after the end
    /// tells the other players again (they ignore an end they know), which finishes an end
    /// whose notices were cut short.
    pub async fn on_player_death(
        &self,
        ctx: &GrainContext<Self>,
        victim: String,
        killer: String,
    ) -> Result<bool> {
        let game = self.game_id(ctx)?;
        let ended = {
            let s = ctx.state();
            s.phase == MatchPhase::Ended && s.players.contains(&victim)
        };
        if ended {
            self.tell_players(ctx, Some(&victim)).await?;
            return Ok(true);
        }
        let credit = {
            let mut s = ctx.state();
            if s.phase != MatchPhase::Running || !s.alive.contains(&victim) {
                return Ok(false); // a late or duplicate report
            }
            s.alive.retain(|p| *p != victim);
            s.health.insert(victim.clone(), 0);
            s.deaths += 1;
            let credit = killer != victim && s.players.contains(&killer);
            if credit {
                *s.kills.entry(killer.clone()).or_default() += 1;
            }
            credit
        };
        if credit {
            ctx.grain::<PlayerGrain>(killer.as_str())
                .credit_kill(game, victim.clone())
                .await?;
        }
        if ctx.state().alive.len() <= 1 {
            self.finish(ctx, Some(&victim)).await?;
            Ok(true)
        } else {
            ctx.write_state().await?;
            self.push(ctx, format!("{killer} killed {victim}")).await?;
            Ok(false)
        }
    }

    /// Ends a running match now and returns its results.
    pub async fn end(&self, ctx: &GrainContext<Self>) -> Result<MatchResult> {
        if ctx.state().phase != MatchPhase::Running {
            return Err(CallError::rejected(ctx.id(), "match is not running"));
        }
        self.finish(ctx, None).await
    }

    /// The match as it is now.
    #[read_only]
    pub async fn info(&self, ctx: &GrainContext<Self>) -> Result<GameInfo> {
        let s = ctx.state();
        Ok(GameInfo {
            phase: s.phase,
            players: s.players.clone(),
            alive: s.alive.clone(),
            deaths: s.deaths,
            result: s.result.clone(),
        })
    }

    /// Subscribes `watcher` (or renews it) and returns the match as it is now.
    pub async fn watch(
        &self,
        ctx: &GrainContext<Self>,
        watcher: MatchWatcherRef,
    ) -> Result<MatchView> {
        let game = self.game_id(ctx)?;
        let now = ctx.now();
        let view = {
            let mut s = ctx.state();
            s.watchers.subscribe(watcher, now, WATCH_LEASE);
            view(game, &s, String::new())
        };
        ctx.write_state().await?;
        Ok(view)
    }

    /// Records a hit that `victim` survived with `health`, and tells the watchers.
    pub async fn on_hit(
        &self,
        ctx: &GrainContext<Self>,
        attacker: String,
        victim: String,
        health: i32,
    ) -> Result<()> {
        {
            let mut s = ctx.state();
            if s.phase != MatchPhase::Running || !s.alive.contains(&victim) {
                return Ok(());
            }
            s.health.insert(victim.clone(), health);
        }
        ctx.write_state().await?;
        self.push(
            ctx,
            format!("{attacker} hit {victim}: {health} health left"),
        )
        .await
    }
}

/// The match in `s` as its watchers see it, `last` saying what just happened.
fn view(game: i64, s: &GameState, last: String) -> MatchView {
    MatchView {
        game,
        seq: s.seq,
        phase: s.phase,
        players: s.players.clone(),
        alive: s.alive.clone(),
        health: s
            .players
            .iter()
            .map(|p| (p.clone(), s.health.get(p).copied().unwrap_or(MAX_HEALTH)))
            .collect(),
        last,
        result: s.result.clone(),
    }
}

impl GameGrain {
    /// Pushes the match as it is now to its watchers, `last` saying what happened, with
    /// one-way calls (each returns once queued for its client: no screen holds this turn),
    /// drops the watchers found gone or expired, and saves the state.
    async fn push(&self, ctx: &GrainContext<Self>, last: String) -> Result<()> {
        let game = self.game_id(ctx)?;
        let now = ctx.now();
        let pushes = {
            let mut s = ctx.state();
            if s.watchers.is_empty() {
                return Ok(());
            }
            s.seq += 1;
            let update = view(game, &s, last);
            s.watchers.notify(now, move |w| {
                let update = update.clone();
                async move { w.on_update(update).await }
            })
        };
        let notified = pushes.await;
        ctx.state().watchers.settle(&notified);
        // The count went up (and watchers may have gone): saved, so a view after a
        // reactivation is never numbered below one already pushed.
        ctx.write_state().await
    }

    fn game_id(&self, ctx: &GrainContext<Self>) -> Result<i64> {
        match ctx.key() {
            granary::GrainKey::Int(id) => Ok(*id),
            other => Err(CallError::rejected(
                ctx.id(),
                format!("game keys are integers, not {other:?}"),
            )),
        }
    }

    /// Final results: publish `MatchEnded` with the state, then tell every player but
    /// `in_chain` (the victim whose death ended the match waits on this call chain: it leaves
    /// the match itself).
    async fn finish(
        &self,
        ctx: &GrainContext<Self>,
        in_chain: Option<&str>,
    ) -> Result<MatchResult> {
        let game = self.game_id(ctx)?;
        let result = {
            let mut s = ctx.state();
            let winner = (s.alive.len() == 1).then(|| s.alive[0].clone());
            let kills = s.kills.iter().map(|(p, k)| (p.clone(), *k)).collect();
            let result = MatchResult {
                winner,
                kills,
                deaths: s.deaths,
            };
            s.phase = MatchPhase::Ended;
            s.result = Some(result.clone());
            result
        };
        ctx.publish(&MatchEnded {
            game,
            winner: result.winner.clone(),
            kills: result.kills.clone(),
            deaths: result.deaths,
        })?;
        ctx.write_state().await?;
        self.tell_players(ctx, in_chain).await?;
        let last = match &result.winner {
            Some(winner) => format!("the match ended: {winner} won"),
            None => "the match ended with no winner".to_owned(),
        };
        self.push(ctx, last).await?;
        Ok(result)
    }

    /// Tells each player but `skip` that the match ended, and whether they won; waits for
    /// each, so that a notice that did not arrive fails this call (and is sent again by its
    /// retry).
    async fn tell_players(&self, ctx: &GrainContext<Self>, skip: Option<&str>) -> Result<()> {
        let game = self.game_id(ctx)?;
        let (players, winner) = {
            let s = ctx.state();
            let winner = s.result.as_ref().and_then(|r| r.winner.clone());
            (s.players.clone(), winner)
        };
        for player in players.iter().filter(|p| Some(p.as_str()) != skip) {
            let won = winner.as_deref() == Some(player.as_str());
            ctx.grain::<PlayerGrain>(player.as_str())
                .match_ended(game, won)
                .await?;
        }
        Ok(())
    }
}

//! [`GameGrain`]: one match, from lobby to results.

use std::collections::BTreeMap;

use granary::{CallError, GrainContext, Result, grain};
use serde::{Deserialize, Serialize};

use crate::events::{MatchCreated, MatchEnded, MatchStarted};
use crate::player::PlayerGrain;

/// Where a match is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MatchPhase {
    /// Not created yet.
    #[default]
    Unknown,
    /// Players may join and leave.
    Lobby,
    /// Players fight.
    Running,
    /// Results are final.
    Ended,
}

/// The results of a finished match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchResult {
    /// The last player standing.
    pub winner: Option<String>,
    /// Kills per player.
    pub kills: Vec<(String, u32)>,
    /// Deaths in the match.
    pub deaths: u32,
}

/// The persisted state of a match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
}

/// The answer to [`GameRef::join`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JoinOutcome {
    /// The player is in the lobby.
    Joined,
    /// The player was already in the lobby.
    AlreadyJoined,
    /// The lobby is full.
    Full,
    /// The match is not in its lobby phase.
    NotInLobby,
    /// The player is in another match.
    InAnotherMatch,
}

/// A snapshot of a match, from [`GameRef::info`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GameInfo {
    /// The phase.
    pub phase: MatchPhase,
    /// Players.
    pub players: Vec<String>,
    /// Players alive.
    pub alive: Vec<String>,
    /// Deaths so far.
    pub deaths: u32,
    /// Results, once ended.
    pub result: Option<MatchResult>,
}

/// One match.
#[derive(Debug, Default)]
pub struct GameGrain;

#[grain(name = "game", state = GameState)]
impl GameGrain {
    /// Opens the lobby for up to `max_players` players and publishes `MatchCreated`.
    pub async fn create(&self, ctx: &GrainContext<Self>, max_players: u32) -> Result<()> {
        let game = self.game_id(ctx)?;
        {
            let mut s = ctx.state();
            if s.phase != MatchPhase::Unknown {
                return Err(CallError::rejected(ctx.id(), "match already exists"));
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
        ctx.state().players.push(player);
        ctx.write_state().await?;
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

    /// Starts the match (at least two players) and publishes `MatchStarted`.
    pub async fn start(&self, ctx: &GrainContext<Self>) -> Result<()> {
        let game = self.game_id(ctx)?;
        let players = {
            let mut s = ctx.state();
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
            s.players.clone()
        };
        ctx.publish(&MatchStarted { game, players })?;
        ctx.write_state().await
    }

    /// Records that `victim` was killed by `killer` (called by the victim's player grain). The
    /// killer is credited; when one player is left standing the match ends.
    pub async fn on_player_death(
        &self,
        ctx: &GrainContext<Self>,
        victim: String,
        killer: String,
    ) -> Result<()> {
        let credit = {
            let mut s = ctx.state();
            if s.phase != MatchPhase::Running || !s.alive.contains(&victim) {
                return Ok(()); // a late or duplicate report
            }
            s.alive.retain(|p| *p != victim);
            s.deaths += 1;
            let credit = killer != victim && s.players.contains(&killer);
            if credit {
                *s.kills.entry(killer.clone()).or_default() += 1;
            }
            credit
        };
        if credit {
            ctx.grain::<PlayerGrain>(killer.as_str())
                .credit_kill()
                .await?;
        }
        if ctx.state().alive.len() <= 1 {
            self.finish(ctx).await?;
        } else {
            ctx.write_state().await?;
        }
        Ok(())
    }

    /// Ends a running match now and returns its results.
    pub async fn end(&self, ctx: &GrainContext<Self>) -> Result<MatchResult> {
        if ctx.state().phase != MatchPhase::Running {
            return Err(CallError::rejected(ctx.id(), "match is not running"));
        }
        self.finish(ctx).await
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
}

impl GameGrain {
    fn game_id(&self, ctx: &GrainContext<Self>) -> Result<i64> {
        match ctx.key() {
            granary::GrainKey::Int(id) => Ok(*id),
            other => Err(CallError::rejected(
                ctx.id(),
                format!("game keys are integers, not {other:?}"),
            )),
        }
    }

    /// Final results: publish `MatchEnded` with the state, then tell the players (one-way, so
    /// that a victim waiting on this chain is not reentered).
    async fn finish(&self, ctx: &GrainContext<Self>) -> Result<MatchResult> {
        let game = self.game_id(ctx)?;
        let (result, players) = {
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
            (result, s.players.clone())
        };
        ctx.publish(&MatchEnded {
            game,
            winner: result.winner.clone(),
            kills: result.kills.clone(),
            deaths: result.deaths,
        })?;
        ctx.write_state().await?;
        for player in players {
            let won = result.winner.as_deref() == Some(player.as_str());
            ctx.grain::<PlayerGrain>(player.as_str())
                .match_ended(game, won)
                .await?;
        }
        Ok(result)
    }
}

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
///
/// `create`, `join`, `start` and `on_player_death` are idempotent, so that a caller may retry a
/// call whose outcome is unknown (its silo died while it ran): the same create, a second join
/// of the same player, a start of a running match and a repeated death report change nothing
/// twice.
#[derive(Debug, Default)]
pub struct GameGrain;

#[grain(name = "game", state = GameState)]
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
            s.players.clone()
        };
        ctx.publish(&MatchStarted { game, players })?;
        ctx.write_state().await
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

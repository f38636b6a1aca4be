//! [`Game`]: the interface of one match's grain, and the types its methods exchange.

use granary::{Result, grain_interface};
use serde::{Deserialize, Serialize};

use crate::watcher::{MatchView, MatchWatcherRef};

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

/// One match, from lobby to results (integer keys).
///
/// `create`, `join`, `start` and `on_player_death` are idempotent, so that a caller may retry a
/// call whose outcome is unknown (its silo died while it ran): the same create, a second join
/// of the same player, a start of a running match and a repeated death report change nothing
/// twice.
#[grain_interface(name = "game")]
pub trait Game {
    /// Opens the lobby for up to `max_players` players and publishes `MatchCreated`. Creating
    /// an existing match with the same size again succeeds and changes nothing.
    async fn create(&self, max_players: u32) -> Result<()>;
    /// Adds `player` to the lobby (and the match to the player).
    async fn join(&self, player: String) -> Result<JoinOutcome>;
    /// Removes `player` from the lobby.
    async fn leave(&self, player: String) -> Result<bool>;
    /// Starts the match (at least two players) and publishes `MatchStarted`. Starting a
    /// running match again succeeds and changes nothing.
    async fn start(&self) -> Result<()>;
    /// Records that `victim` was killed by `killer` (called by the victim's player grain). The
    /// killer is credited; when one player is left standing the match ends. Returns whether the
    /// match is over: the victim, waiting on this call, then leaves the match itself (every
    /// other player is told). A repeated report changes nothing; one that arrives after the end
    /// tells the other players again (they ignore an end they know), which finishes an end
    /// whose notices were cut short.
    async fn on_player_death(&self, victim: String, killer: String) -> Result<bool>;
    /// Ends a running match now and returns its results.
    async fn end(&self) -> Result<MatchResult>;
    /// The match as it is now.
    #[read_only]
    async fn info(&self) -> Result<GameInfo>;
    /// Subscribes `watcher` to the match's pushes (or renews its lease) for
    /// [`WATCH_LEASE`](crate::WATCH_LEASE), and returns the match as it is now. Anyone may
    /// watch (a player's screen, a spectator); subscribe again well within the lease, and
    /// again with the new reference after the client failed over to another gateway.
    async fn watch(&self, watcher: MatchWatcherRef) -> Result<MatchView>;
    /// Records that `attacker` hit `victim`, who survived with `health` (called by the
    /// attacker's player grain), and tells the watchers. A hit in a match that is not running,
    /// or on a player not alive in it, changes nothing.
    async fn on_hit(&self, attacker: String, victim: String, health: i32) -> Result<()>;
}

//! The domain events of the game, as consumers (analytics, leaderboards) receive them.

use granary::Event;
use serde::{Deserialize, Serialize};

/// A player's health reached zero.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlayerDied {
    /// The player who died.
    pub player: String,
    /// Who dealt the final damage.
    pub killer: String,
    /// The match the player was in, if any.
    pub game: Option<i64>,
}
impl Event for PlayerDied {
    const TYPE_NAME: &'static str = "player.died";
}

/// A match was created and opened its lobby.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchCreated {
    /// The match.
    pub game: i64,
    /// How many players may join.
    pub max_players: u32,
}
impl Event for MatchCreated {
    const TYPE_NAME: &'static str = "match.created";
}

/// A match left its lobby and began.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchStarted {
    /// The match.
    pub game: i64,
    /// Its players.
    pub players: Vec<String>,
}
impl Event for MatchStarted {
    const TYPE_NAME: &'static str = "match.started";
}

/// A match ended with its results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchEnded {
    /// The match.
    pub game: i64,
    /// The last player standing, if any.
    pub winner: Option<String>,
    /// Kills per player.
    pub kills: Vec<(String, u32)>,
    /// How many deaths the match saw.
    pub deaths: u32,
}
impl Event for MatchEnded {
    const TYPE_NAME: &'static str = "match.ended";
}

//! [`MatchWatcher`]: the observer through which a match pushes to its players' screens, and
//! the [`MatchView`] it pushes.

use std::time::Duration;

use granary::{Result, observer};
use serde::{Deserialize, Serialize};

use crate::game::{MatchPhase, MatchResult};

/// How long a [`GameRef::watch`](crate::GameRef::watch) subscription lasts unless renewed: a
/// client that vanished is dropped from the match's watchers after it.
pub const WATCH_LEASE: Duration = Duration::from_secs(60);

/// A match as its watchers see it: pushed on every change, and returned by
/// [`GameRef::watch`](crate::GameRef::watch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchView {
    /// The match.
    pub game: i64,
    /// How many pushes the match made before this view: a later view of the same match has a
    /// higher (or, for the answer to a `watch`, equal) number, so a screen that gets a push and
    /// a `watch` answer out of order keeps the newer.
    pub seq: u64,
    /// The phase.
    pub phase: MatchPhase,
    /// Players, in joining order.
    pub players: Vec<String>,
    /// Players alive (while running).
    pub alive: Vec<String>,
    /// Each player's health as the match last heard it (full at the start).
    pub health: Vec<(String, i32)>,
    /// What just happened, in words ("bob hit alice: 65 health left").
    pub last: String,
    /// Results, once ended (the winner among them).
    pub result: Option<MatchResult>,
}

/// What a player's screen is told about its match. The match pushes with one-way calls: each
/// returns once it is queued for the client, so no screen holds a turn of the match.
#[observer(name = "match_watcher")]
pub trait MatchWatcher {
    /// The match changed: here it is now.
    #[one_way]
    async fn on_update(&self, view: MatchView) -> Result<()>;
}

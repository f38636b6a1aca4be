//! [`Matchmaker`]: the interface of the stateless worker that queues players into matches.

use granary::{Result, grain_interface};

/// Puts players into matches (the example implements it as a stateless worker: every silo
/// serves its calls locally; the games it joins hold what must last).
#[grain_interface(name = "matchmaker")]
pub trait Matchmaker {
    /// Joins `player` to one of the `open` matches and returns the match's id. The player's
    /// first choice is picked by a hash of its name (the same player always starts at the same
    /// match, so a retry asks the match it joined first); a full match or one past its lobby
    /// sends it on to the next. Fails with `CallError::Rejected` when `open` is empty, when the
    /// player is in another match, or when no open match has room: open another and queue again.
    async fn queue(&self, player: String, open: Vec<i64>) -> Result<i64>;
}

//! [`MatchmakerGrain`]: a stateless worker that queues players into open matches.

use granary::{CallError, GrainContext, Result, grain};

use player_game_api::JoinOutcome;

use crate::game::GameGrain;

/// Puts players into matches: implements [`Matchmaker`](player_game_api::Matchmaker). A
/// stateless worker: it keeps nothing, so every silo serves its
/// calls locally, with several activations of the one key (`"lobby"` in the demo) running side
/// by side; the games it joins hold what must last.
///
/// [`MatchmakerRef::queue`](player_game_api::MatchmakerRef::queue) is as idempotent as
/// [`GameRef::join`](player_game_api::GameRef::join): a player queued again
/// (a retry whose outcome was unknown) lands in the match it already joined.
#[derive(Debug, Default)]
pub struct MatchmakerGrain;

#[grain(implements = player_game_api::Matchmaker, stateless_worker)]
impl MatchmakerGrain {
    /// Joins `player` to one of the `open` matches and returns the match's id. The player's
    /// first choice is picked by a hash of its name (the same player always starts at the same
    /// match, so a retry asks the match it joined first); a full match or one past its lobby
    /// sends it on to the next. Fails with `CallError::Rejected` when `open` is empty, when the
    /// player is in another match, or when no open match has room: open another and queue again.
    pub async fn queue(
        &self,
        ctx: &GrainContext<Self>,
        player: String,
        open: Vec<i64>,
    ) -> Result<i64> {
        if open.is_empty() {
            return Err(CallError::rejected(
                ctx.id(),
                "no open match given; create one and pass its id",
            ));
        }
        let first = first_choice(&player, open.len());
        for game in open.iter().cycle().skip(first).take(open.len()) {
            match ctx.grain::<GameGrain>(*game).join(player.clone()).await? {
                JoinOutcome::Joined | JoinOutcome::AlreadyJoined => return Ok(*game),
                JoinOutcome::Full | JoinOutcome::NotInLobby => {}
                JoinOutcome::InAnotherMatch => {
                    return Err(CallError::rejected(
                        ctx.id(),
                        format!("{player} is in another match; let it end first"),
                    ));
                }
            }
        }
        Err(CallError::rejected(
            ctx.id(),
            format!(
                "none of the {} open matches has room for {player}; open another",
                open.len()
            ),
        ))
    }
}

/// The index of `player`'s first choice among `open` matches: FNV-1a of the name, stable
/// across processes and Rust versions (unlike `std`'s hasher, which promises neither).
fn first_choice(player: &str, open: usize) -> usize {
    let hash = player.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    usize::try_from(hash % open as u64).unwrap_or(0)
}

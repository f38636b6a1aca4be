//! Events to grains: arenas publish `sub.match.ended`, a leaderboard subscribed to it counts
//! every match once ([`subscribe`] registers the subscription on a silo builder; the
//! `test-silo` process does too).

use granary::{
    AppliedEvents, CallError, Delivery, Event, GrainContext, GrainKey, Result, SiloBuilder,
    Subscription, grain,
};
use serde::{Deserialize, Serialize};

/// A match an arena ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchEnded {
    /// The leaderboard it counts on (the subscription's key).
    pub board: String,
    /// The arena's key.
    pub arena: i64,
    /// The arena's match number: 1, 2, … in commit order.
    pub number: u64,
    /// The winner. `"no-key"` makes the key function fail, `"key-panics"` panic;
    /// `"reject-me"` makes the board refuse the call, `"board-panics"` panic in it.
    pub winner: String,
}

impl Event for MatchEnded {
    const TYPE_NAME: &'static str = "sub.match.ended";
}

/// An arena's count of the matches it ended.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Arena {
    ended: u64,
}

/// A grain that ends matches: each commit publishes one [`MatchEnded`].
#[derive(Debug, Default)]
pub struct ArenaGrain;

#[grain(name = "sub.arena", state = Arena)]
impl ArenaGrain {
    /// Ends the arena's next match, won by `winner`, counted on `board`; returns its number.
    pub async fn end_match(
        &self,
        ctx: &GrainContext<Self>,
        board: String,
        winner: String,
    ) -> Result<u64> {
        let number = {
            let mut state = ctx.state();
            state.ended += 1;
            state.ended
        };
        let arena = match ctx.id().key() {
            GrainKey::Int(i) => *i,
            _ => 0,
        };
        ctx.publish(&MatchEnded {
            board,
            arena,
            number,
            winner,
        })?;
        ctx.write_state().await?;
        Ok(number)
    }

    /// The matches ended (committed).
    #[read_only]
    pub async fn ended(&self, ctx: &GrainContext<Self>) -> Result<u64> {
        Ok(ctx.state().ended)
    }
}

/// A leaderboard's state: what it applied (its dedupe, committed with the counts), the
/// matches it counted in the order it counted them, and the repeats it skipped.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Board {
    applied: AppliedEvents,
    /// `(arena, number)` of every counted match, in the order counted.
    counted: Vec<(i64, u64)>,
    /// Redeliveries recognised and skipped.
    skipped: u64,
}

/// A leaderboard fed by [`MatchEnded`] through the subscription of [`subscribe`].
#[derive(Debug, Default)]
pub struct LeaderboardGrain;

#[grain(name = "sub.board", state = Board)]
impl LeaderboardGrain {
    /// Counts a match once: a redelivery (at or before the last match applied from its arena)
    /// is skipped; the dedupe marker commits with the count.
    pub async fn record(
        &self,
        ctx: &GrainContext<Self>,
        ended: MatchEnded,
        delivery: Delivery,
    ) -> Result<()> {
        match ended.winner.as_str() {
            "reject-me" => return Err(CallError::rejected(ctx.id(), "this board refuses it")),
            "board-panics" => panic!("the board cannot take this match"),
            _ => {}
        }
        {
            let mut state = ctx.state();
            if state.applied.first_time(&delivery) {
                state.counted.push((ended.arena, ended.number));
            } else {
                state.skipped += 1;
            }
        }
        ctx.write_state().await
    }

    /// The matches counted, in order, and the repeats skipped.
    #[read_only]
    pub async fn counted(&self, ctx: &GrainContext<Self>) -> Result<(Vec<(i64, u64)>, u64)> {
        let state = ctx.state();
        Ok((state.counted.clone(), state.skipped))
    }
}

/// Registers the arena and the leaderboard, and subscribes the leaderboard named in each
/// [`MatchEnded`] to it.
#[must_use]
pub fn subscribe(builder: SiloBuilder) -> SiloBuilder {
    builder
        .register::<ArenaGrain>()
        .register::<LeaderboardGrain>()
        .subscribe(Subscription::<MatchEnded, LeaderboardGrain>::new(
            |ended| match ended.winner.as_str() {
                "no-key" => Err(format!("match {} has no board", ended.number)),
                "key-panics" => panic!("the key function cannot read match {}", ended.number),
                _ => Ok(GrainKey::from(ended.board.clone())),
            },
            |board, ended, delivery| async move { board.record(ended, delivery).await },
        ))
}

//! What the cluster tests share with the `test-silo` process they start: the grain types.

use granary::{Event, GrainContext, Result, grain};
use serde::{Deserialize, Serialize};

/// The persisted count of a [`CounterGrain`].
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Tally {
    count: u64,
}

/// A count announced by [`CounterGrain::bump_and_announce`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Bumped {
    /// The count after the bump.
    pub count: u64,
}

impl Event for Bumped {
    const TYPE_NAME: &'static str = "cluster.counter.bumped";
}

/// A grain that counts (persisted), says which activation it is, and calls others.
#[derive(Debug, Default)]
pub struct CounterGrain;

#[grain(name = "cluster.counter", state = Tally)]
impl CounterGrain {
    /// Adds one and commits; returns the count and this activation's id.
    pub async fn bump(&self, ctx: &GrainContext<Self>) -> Result<(u64, String)> {
        let count = {
            let mut state = ctx.state();
            state.count += 1;
            state.count
        };
        ctx.write_state().await?;
        Ok((count, ctx.activation_id().to_string()))
    }

    /// The count.
    #[read_only]
    pub async fn get(&self, ctx: &GrainContext<Self>) -> Result<u64> {
        Ok(ctx.state().count)
    }

    /// This activation's id.
    #[read_only]
    pub async fn whoami(&self, ctx: &GrainContext<Self>) -> Result<String> {
        Ok(ctx.activation_id().to_string())
    }

    /// The trace of this call and of a call this turn makes to grain `other`.
    pub async fn traces(&self, ctx: &GrainContext<Self>, other: i64) -> Result<(String, String)> {
        let theirs = ctx.grain::<CounterGrain>(other).trace().await?;
        Ok((ctx.trace_id().to_string(), theirs))
    }

    /// The trace of this call.
    #[read_only]
    pub async fn trace(&self, ctx: &GrainContext<Self>) -> Result<String> {
        Ok(ctx.trace_id().to_string())
    }

    /// Adds one and commits it with a [`Bumped`] event; returns the count.
    pub async fn bump_and_announce(&self, ctx: &GrainContext<Self>) -> Result<u64> {
        let count = {
            let mut state = ctx.state();
            state.count += 1;
            state.count
        };
        ctx.publish(&Bumped { count })?;
        ctx.write_state().await?;
        Ok(count)
    }

    /// Bumps grain `other` (wherever it lives) and returns its answer.
    pub async fn bump_other(&self, ctx: &GrainContext<Self>, other: i64) -> Result<(u64, String)> {
        ctx.grain::<CounterGrain>(other).bump().await
    }
}

/// How a [`GuildGrain`] refuses a member: its own error type, delivered typed to the caller
/// wherever the guild lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GuildError {
    /// The guild has its `limit` members.
    Full {
        /// The most members a guild has.
        limit: usize,
    },
    /// The player is a member already.
    AlreadyMember(String),
    /// The call itself failed (timeout, storage, …).
    Call(granary::CallError),
}

impl From<granary::CallError> for GuildError {
    fn from(err: granary::CallError) -> Self {
        Self::Call(err)
    }
}

/// The members of a [`GuildGrain`].
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Members {
    names: Vec<String>,
}

/// A guild of at most [`GUILD_LIMIT`] members whose methods fail with a [`GuildError`].
#[derive(Debug, Default)]
pub struct GuildGrain;

/// The most members a [`GuildGrain`] takes.
pub const GUILD_LIMIT: usize = 2;

#[grain(name = "cluster.guild", state = Members)]
impl GuildGrain {
    /// Adds `player`; returns the member count.
    pub async fn join(
        &self,
        ctx: &GrainContext<Self>,
        player: String,
    ) -> std::result::Result<usize, GuildError> {
        let count = {
            let mut members = ctx.state();
            if members.names.contains(&player) {
                return Err(GuildError::AlreadyMember(player));
            }
            if members.names.len() >= GUILD_LIMIT {
                return Err(GuildError::Full { limit: GUILD_LIMIT });
            }
            members.names.push(player);
            members.names.len()
        };
        ctx.write_state().await?; // a CallError becomes GuildError::Call
        Ok(count)
    }

    /// Has guild `other` (wherever it lives) take `player`, passing its error on as it is.
    pub async fn join_other(
        &self,
        ctx: &GrainContext<Self>,
        other: i64,
        player: String,
    ) -> std::result::Result<usize, GuildError> {
        let count = ctx.grain::<GuildGrain>(other).join(player).await?;
        Ok(count)
    }
}

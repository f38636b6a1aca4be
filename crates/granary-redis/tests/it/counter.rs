//! The grain the Redis tests drive: a counter that publishes an event per bump.

use granary::{Event, GrainContext, grain};
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(crate) struct Count {
    pub(crate) n: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Bumped {
    pub(crate) n: u64,
}

impl Event for Bumped {
    const TYPE_NAME: &'static str = "counter.bumped";
}

#[derive(Debug, Default)]
pub(crate) struct CounterGrain;

#[grain(name = "redis.counter", state = Count)]
impl CounterGrain {
    /// Adds one, publishes `Bumped`, commits both; returns the new count.
    pub async fn bump(&self, ctx: &GrainContext<Self>) -> granary::Result<u64> {
        let n = {
            let mut state = ctx.state();
            state.n += 1;
            state.n
        };
        ctx.publish(&Bumped { n })?;
        ctx.write_state().await?;
        Ok(n)
    }

    /// The count.
    #[read_only]
    pub async fn get(&self, ctx: &GrainContext<Self>) -> granary::Result<u64> {
        Ok(ctx.state().n)
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Totals {
    pub(crate) applied: u64,
    seen: granary_events::RecentEvents,
}

/// A grain that receives events (a subscription) and counts each one once.
#[derive(Debug, Default)]
pub(crate) struct TotalsGrain;

#[grain(name = "redis.totals", state = Totals)]
impl TotalsGrain {
    /// Applies `event` unless it was applied already; returns whether it was.
    pub async fn apply(
        &self,
        ctx: &GrainContext<Self>,
        event: granary_events::EventEnvelope,
    ) -> granary::Result<bool> {
        {
            let mut state = ctx.state();
            if !state.seen.first_time_of(&event) {
                return Ok(false);
            }
            state.applied += 1;
        }
        ctx.write_state().await?;
        Ok(true)
    }

    /// Events applied.
    #[read_only]
    pub async fn applied(&self, ctx: &GrainContext<Self>) -> granary::Result<u64> {
        Ok(ctx.state().applied)
    }
}

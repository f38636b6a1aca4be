//! [`ListGrain`]: the chaos workload's grain, a list that only grows.

use granary::{Event, GrainContext, Result, grain};
use serde::{Deserialize, Serialize};

/// The grain type name of [`ListGrain`] (in Redis keys and on the wire).
pub const LIST_TYPE: &str = "chaos.list";

/// The persisted list of a [`ListGrain`].
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Items {
    /// The values, in append order.
    pub values: Vec<u64>,
}

/// Published by [`ListGrain::append`], committed with the append.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Appended {
    /// The appended value.
    pub value: u64,
}

impl Event for Appended {
    const TYPE_NAME: &'static str = "chaos.list.appended";
}

/// A list-append grain: every append commits the list and an [`Appended`] event together.
#[derive(Debug, Default)]
pub struct ListGrain;

#[grain(name = "chaos.list", state = Items)]
impl ListGrain {
    /// Appends `value`, commits it with an [`Appended`] event, and returns the list after the
    /// append.
    pub async fn append(&self, ctx: &GrainContext<Self>, value: u64) -> Result<Vec<u64>> {
        let values = {
            let mut state = ctx.state();
            state.values.push(value);
            state.values.clone()
        };
        ctx.publish(&Appended { value })?;
        ctx.write_state().await?;
        Ok(values)
    }

    /// The list.
    #[read_only]
    pub async fn read(&self, ctx: &GrainContext<Self>) -> Result<Vec<u64>> {
        Ok(ctx.state().values.clone())
    }
}

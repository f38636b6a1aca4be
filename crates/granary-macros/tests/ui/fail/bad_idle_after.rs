//! `idle_after` must be a positive duration with a unit, or "never".
use granary::{GrainContext, Result, grain};

#[derive(Default)]
pub struct PlayerGrain;

#[grain(name = "player", state = (), idle_after = "90")]
impl PlayerGrain {
    pub async fn health(&self, ctx: &GrainContext<Self>) -> Result<i32> {
        let _ = ctx;
        Ok(100)
    }
}

#[derive(Default)]
pub struct GuildGrain;

#[grain(name = "guild", state = (), idle_after = "0s")]
impl GuildGrain {
    pub async fn size(&self, ctx: &GrainContext<Self>) -> Result<u32> {
        let _ = ctx;
        Ok(1)
    }
}

fn main() {}

//! Grain methods take `&self`; mutable data lives in the state.
use granary::{GrainContext, Result, grain};

#[derive(Default)]
pub struct PlayerGrain;

#[grain(name = "player", state = ())]
impl PlayerGrain {
    pub async fn heal(&mut self, ctx: &GrainContext<Self>, amount: i32) -> Result<()> {
        let _ = (ctx, amount);
        Ok(())
    }
}

fn main() {}

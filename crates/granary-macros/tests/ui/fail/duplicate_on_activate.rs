//! A grain has at most one `#[on_activate]` hook.
use granary::{GrainContext, Result, grain};

#[derive(Default)]
pub struct PlayerGrain;

#[grain(name = "player", state = ())]
impl PlayerGrain {
    #[on_activate]
    async fn load_inventory(&self, ctx: &GrainContext<Self>) -> Result<()> {
        let _ = ctx;
        Ok(())
    }

    #[on_activate]
    async fn greet(&self, ctx: &GrainContext<Self>) -> Result<()> {
        let _ = ctx;
        Ok(())
    }
}

fn main() {}

//! An `#[on_reminder]` hook receives the reminder's name and its tick.
use granary::{GrainContext, Result, grain};

#[derive(Default)]
pub struct PlayerGrain;

#[grain(name = "player", state = ())]
impl PlayerGrain {
    #[on_reminder]
    async fn remind(&self, ctx: &GrainContext<Self>, name: &str) -> Result<()> {
        let _ = (ctx, name);
        Ok(())
    }
}

fn main() {}

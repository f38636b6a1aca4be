//! Misspelt attribute arguments are errors, not silently ignored.
use granary::{GrainContext, Result, grain};

#[derive(Default)]
pub struct PlayerGrain;

#[grain(name = "player", state = (), reentrent)]
impl PlayerGrain {
    pub async fn health(&self, ctx: &GrainContext<Self>) -> Result<i32> {
        let _ = ctx;
        Ok(100)
    }
}

fn main() {}

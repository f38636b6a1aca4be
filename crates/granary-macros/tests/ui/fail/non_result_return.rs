//! Grain methods return `Result<T>`.
use granary::{GrainContext, grain};

#[derive(Default)]
pub struct PlayerGrain;

#[grain(name = "player", state = ())]
impl PlayerGrain {
    pub async fn health(&self, ctx: &GrainContext<Self>) -> i32 {
        let _ = ctx;
        100
    }
}

fn main() {}

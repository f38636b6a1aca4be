//! `#[one_way]` methods return `Result<()>`: nobody receives their value.
use granary::{GrainContext, Result, grain};

#[derive(Default)]
pub struct PlayerGrain;

#[grain(name = "player", state = ())]
impl PlayerGrain {
    #[one_way]
    pub async fn ping(&self, ctx: &GrainContext<Self>) -> Result<u32> {
        let _ = ctx;
        Ok(1)
    }
}

fn main() {}

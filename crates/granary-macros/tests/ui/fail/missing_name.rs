//! `name = "..."` is required: it is the stable type name.
use granary::{GrainContext, Result, grain};

#[derive(Default)]
pub struct PlayerGrain;

#[grain(state = ())]
impl PlayerGrain {
    pub async fn health(&self, ctx: &GrainContext<Self>) -> Result<i32> {
        let _ = ctx;
        Ok(100)
    }
}

fn main() {}

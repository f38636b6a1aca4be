//! Arguments travel between silos, so they are owned: `&str` is refused.
use granary::{GrainContext, Result, grain};

#[derive(Default)]
pub struct PlayerGrain;

#[grain(name = "player", state = ())]
impl PlayerGrain {
    pub async fn greet(&self, ctx: &GrainContext<Self>, name: &str) -> Result<String> {
        let _ = ctx;
        Ok(format!("hello {name}"))
    }
}

fn main() {}

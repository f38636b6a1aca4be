//! A grain method takes the grain context as its second parameter.
use granary::{Result, grain};

#[derive(Default)]
pub struct PlayerGrain;

#[grain(name = "player", state = ())]
impl PlayerGrain {
    pub async fn health(&self) -> Result<i32> {
        Ok(100)
    }
}

fn main() {}

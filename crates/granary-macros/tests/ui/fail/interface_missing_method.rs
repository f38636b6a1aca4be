//! A grain implementing an interface must define every method of it.
use granary::{GrainContext, Result, grain, grain_interface};

/// The interface.
#[grain_interface(name = "player")]
pub trait Player {
    /// Deals damage.
    async fn take_damage(&self, amount: u32) -> Result<u32>;
    /// The health.
    #[read_only]
    async fn hp(&self) -> Result<u32>;
}

#[derive(Default)]
pub struct PlayerGrain;

#[grain(implements = Player, state = u32)]
impl PlayerGrain {
    pub async fn take_damage(&self, ctx: &GrainContext<Self>, amount: u32) -> Result<u32> {
        let _ = ctx;
        Ok(amount)
    }
}

fn main() {}

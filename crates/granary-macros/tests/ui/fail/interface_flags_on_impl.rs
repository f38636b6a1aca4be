//! With `implements`, the name comes from the interface, and a flag the grain's method repeats
//! must be on the interface's method too.
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

#[grain(implements = Player, name = "player", state = u32)]
impl PlayerGrain {
    #[read_only]
    pub async fn take_damage(&self, ctx: &GrainContext<Self>, amount: u32) -> Result<u32> {
        let _ = ctx;
        Ok(amount)
    }

    // Repeats the interface's flag: fine.
    #[read_only]
    pub async fn hp(&self, ctx: &GrainContext<Self>) -> Result<u32> {
        Ok(*ctx.state())
    }
}

fn main() {}

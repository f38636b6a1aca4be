//! A grain's method must have the interface's argument and result types.
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
    pub async fn take_damage(&self, ctx: &GrainContext<Self>, amount: i32) -> Result<u32> {
        let _ = (ctx, amount);
        Ok(0)
    }

    pub async fn hp(&self, ctx: &GrainContext<Self>) -> Result<i64> {
        Ok(i64::from(*ctx.state()))
    }
}

fn main() {}

//! What a grain interface's trait may not contain.
use granary::{Result, grain_interface};

#[grain_interface]
pub trait Player {
    async fn hp_left(&self) -> Result<u32>;
    async fn take_damage(&self, amount: &str) -> Result<u32>;
    fn hp(&self) -> Result<u32>;
    async fn heal(&self) -> Result<u32> {
        Ok(1)
    }
    #[on_activate]
    async fn start(&self) -> Result<()>;
    const MAX: u32;
}

#[grain_interface(name = "lobby")]
pub struct Lobby;

fn main() {}

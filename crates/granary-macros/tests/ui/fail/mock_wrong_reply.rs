//! A mock's declared reply is checked against the grain method's signature at compile time: a
//! wrong reply type, a wrong argument type and a misspelt method name are compile errors (the
//! stringly-typed replies found them at run time, if at all).
use std::sync::Arc;

use granary::{GrainContext, Result, grain};
use granary_core::{GrainMock, MockKeys, MockResponder, MockScope, MockSink};

#[derive(Default)]
pub struct PlayerGrain;

#[grain(name = "player", state = ())]
impl PlayerGrain {
    pub async fn set_guild(&self, ctx: &GrainContext<Self>, guild: String) -> Result<()> {
        let _ = (ctx, guild);
        Ok(())
    }
}

/// Stands in for the test kit, whose `GrainTest::mock::<PlayerGrain>().key("alice")` is this.
struct Kit;

impl MockSink for Kit {
    fn declare(&self, _: &'static str, _: MockKeys, _: &'static str, _: MockResponder) {}
}

fn main() {
    let scope = MockScope::new::<PlayerGrain>(Arc::new(Kit), MockKeys::One("alice".into()));
    let alice = <PlayerGrain as GrainMock>::Mock::from(scope);
    alice.set_guild(|_, guild| Ok(guild.len()));
    alice.set_guild(|_, guild: u32| Ok(()));
    alice.set_gild(|_, _| Ok(()));
}

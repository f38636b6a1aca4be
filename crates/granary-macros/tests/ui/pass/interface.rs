//! A grain interface declared in one module and implemented in another compiles without
//! warnings under the workspace's lints, with a domain error, `#[read_only]` and `#[one_way]`;
//! the interface's reference is the implementation's, and the name and methods agree.
#![deny(
    warnings,
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]

use granary::{Grain, GrainInterface, GrainMock, TypedRef};

/// The interface "crate": depends on `granary` only.
pub mod api {
    use granary::{CallError, Result, grain_interface};
    use serde::{Deserialize, Serialize};

    /// Why a heal failed.
    #[derive(Debug, Serialize, Deserialize)]
    pub enum HealError {
        /// A negative amount.
        Negative(i32),
        /// The call failed.
        Call(CallError),
    }

    impl From<CallError> for HealError {
        fn from(err: CallError) -> Self {
            Self::Call(err)
        }
    }

    /// What a player grain answers.
    #[grain_interface(name = "player")]
    pub trait Player {
        /// Deals damage; returns the health left.
        async fn take_damage(&self, amount: u32, source: String) -> Result<u32>;
        /// The player's health.
        #[read_only]
        async fn hp(&self) -> Result<u32>;
        /// Heals; a negative amount is a domain error.
        async fn heal(&self, amount: i32) -> Result<u32, HealError>;
        /// Fire and forget.
        #[one_way]
        async fn ping(&self, n: u32) -> Result<()>;
    }
}

/// The game "crate": the implementation.
pub mod game {
    use granary::{GrainContext, Result, grain};

    use crate::api::HealError;

    /// A player.
    #[derive(Debug, Default)]
    pub struct PlayerGrain;

    #[grain(implements = crate::api::Player, state = u32, idle_after = "1h")]
    impl PlayerGrain {
        /// Deals damage.
        pub async fn take_damage(
            &self,
            ctx: &GrainContext<Self>,
            amount: u32,
            _source: String,
        ) -> Result<u32> {
            let hp = {
                let mut hp = ctx.state();
                *hp = hp.saturating_sub(amount);
                *hp
            };
            ctx.write_state().await?;
            Ok(hp)
        }

        /// The health; repeats the interface's flag, which is checked against it.
        #[read_only]
        pub async fn hp(&self, ctx: &GrainContext<Self>) -> Result<u32> {
            Ok(*ctx.state())
        }

        /// Heals.
        pub async fn heal(&self, ctx: &GrainContext<Self>, amount: i32) -> Result<u32, HealError> {
            let amount = u32::try_from(amount).map_err(|_| HealError::Negative(amount))?;
            *ctx.state() += amount;
            ctx.write_state().await?;
            Ok(*ctx.state())
        }

        /// Pings.
        pub async fn ping(&self, ctx: &GrainContext<Self>, n: u32) -> Result<()> {
            let _ = (ctx, n);
            Ok(())
        }

        #[on_activate]
        async fn start(&self, ctx: &GrainContext<Self>) -> Result<()> {
            if ctx.version() == 0 {
                *ctx.state() = 100;
            }
            Ok(())
        }
    }
}

/// A reference lookup that takes either kind of type.
fn lookup<G: GrainInterface>(grain: &G::Ref) -> &str {
    grain.grain_ref().id().type_name()
}

/// The mock type a test kit hands out, for either kind of type.
fn mock_of<G: GrainMock>(mock: G::Mock) -> G::Mock {
    mock
}

fn main() {
    assert_eq!(<api::PlayerRef as GrainInterface>::TYPE_NAME, "player");
    assert_eq!(<game::PlayerGrain as Grain>::TYPE_NAME, "player");
    assert_eq!(
        <game::PlayerGrain as Grain>::METHODS,
        <api::PlayerRef as GrainInterface>::METHODS
    );
    let flags: Vec<_> = <api::PlayerRef as GrainInterface>::METHODS
        .iter()
        .map(|m| (m.name, m.read_only, m.one_way))
        .collect();
    assert_eq!(
        flags,
        [
            ("take_damage", false, false),
            ("hp", true, false),
            ("heal", false, false),
            ("ping", false, true),
        ]
    );
    // Both lookups give the interface's reference and mock types.
    let _: fn(&<game::PlayerGrain as Grain>::Ref) -> &str = lookup::<api::PlayerRef>;
    let _: fn(&api::PlayerRef) -> &str = lookup::<game::PlayerGrain>;
    let _: fn(api::PlayerMock) -> api::PlayerMock = mock_of::<game::PlayerGrain>;
    let _: fn(api::PlayerMock) -> api::PlayerMock = mock_of::<api::PlayerRef>;
}

//! A grain using every feature of `#[grain]` compiles without warnings under the lints the
//! workspace enables, in a private module and in a public one.
#![deny(
    warnings,
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]

use granary::{CallError, Grain, GrainContext, Result, TypedRef, grain};
use serde::{Deserialize, Serialize};

/// A public grain, so `missing_docs` looks at everything generated for it.
pub mod player {
    use super::*;

    /// The persisted state.
    #[derive(Debug, Default, Serialize, Deserialize)]
    pub struct PlayerState {
        health: i32,
    }

    /// A player.
    #[derive(Debug, Default)]
    pub struct PlayerGrain {}

    #[grain(name = "player", state = PlayerState)]
    impl PlayerGrain {
        /// Deals `amount` damage; returns whether the player survived.
        pub async fn take_damage(
            &self,
            ctx: &GrainContext<Self>,
            amount: i32,
            source: String,
        ) -> Result<bool> {
            let _ = source;
            let alive = {
                let mut state = ctx.state();
                state.health -= amount;
                state.health > 0
            };
            ctx.write_state().await?;
            Ok(alive)
        }

        // Undocumented: `missing_docs` then checks the doc generated for `PlayerRef::health`.
        #[allow(missing_docs)]
        #[read_only]
        pub async fn health(&self, ctx: &GrainContext<Self>) -> granary::Result<i32, CallError> {
            Ok(ctx.state().health)
        }

        /// Sends a ping; the doc is copied to `PlayerRef::ping`.
        #[one_way]
        pub async fn ping(&self, _ctx: &GrainContext<Self>, n: u32) -> Result<()> {
            let _ = n;
            Ok(())
        }

        /// Takes a reference to another grain, an owned collection and no extra arguments.
        #[read_only]
        #[one_way]
        pub async fn follow(
            &self,
            _ctx: &GrainContext<Self>,
            leader: PlayerRef,
            _tags: Vec<String>,
        ) -> Result<()> {
            let _ = leader;
            Ok(())
        }

        #[on_activate]
        async fn activated(&self, _ctx: &GrainContext<Self>) -> Result<()> {
            Ok(())
        }

        #[on_deactivate]
        async fn deactivating(&self, ctx: &GrainContext<Self>) -> Result<()> {
            ctx.write_state().await
        }

        #[on_timer]
        async fn tick(&self, _ctx: &GrainContext<Self>, name: &str) -> Result<()> {
            let _ = (name, self.helper());
            Ok(())
        }

        #[on_reminder]
        async fn remind(
            &self,
            _ctx: &GrainContext<Self>,
            name: &str,
            tick: granary::ReminderTick,
        ) -> Result<()> {
            let _ = (name, tick.missed);
            Ok(())
        }

        fn helper(&self) -> u32 {
            1
        }

        /// Not async: an ordinary method, left alone.
        pub fn level(&self) -> u32 {
            self.helper()
        }
    }
}

mod lobby {
    use super::*;

    #[derive(Default)]
    pub(crate) struct Lobby;

    #[grain(name = "lobby", state = (), reentrant, reference = LobbyHandle)]
    impl Lobby {
        pub async fn join(
            &self,
            ctx: &GrainContext<Self>,
            player: crate::player::PlayerRef,
        ) -> Result<usize> {
            let _ = (ctx, player);
            Ok(1)
        }
    }
}

async fn play(player: &player::PlayerRef, lobby: &lobby::LobbyHandle) -> Result<bool> {
    player.ping(1).await?;
    player.follow(player.clone(), vec!["x".to_owned()]).await?;
    lobby.join(player.clone()).await?;
    let alive = player.take_damage(3, "trap".to_owned()).await?;
    Ok(alive && player.health().await? > 0)
}

fn main() {
    let _ = play;
    assert_eq!(player::PlayerGrain::TYPE_NAME, "player");
    assert_eq!(<lobby::Lobby as Grain>::METHODS[0].name, "join");
    assert!(<lobby::Lobby as Grain>::REENTRANT);
    fn typed<R: TypedRef>() {}
    typed::<player::PlayerRef>();
    typed::<lobby::LobbyHandle>();
    let _ = player::PlayerGrain::default().level();
}

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

    /// A player.
    #[derive(Debug, Default)]
    pub struct PlayerGrain {}

    #[grain(name = "player", state = PlayerState, idle_after = "1h30min")]
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

        /// Heals, or fails with the grain's own error type.
        pub async fn heal(
            &self,
            ctx: &GrainContext<Self>,
            amount: i32,
        ) -> std::result::Result<i32, HealError> {
            if amount < 0 {
                return Err(HealError::Negative(amount));
            }
            let health = {
                let mut state = ctx.state();
                state.health += amount;
                state.health
            };
            ctx.write_state().await?;
            Ok(health)
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

    #[grain(name = "lobby", state = (), reentrant, reference = LobbyHandle, idle_after = "never")]
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

mod workers {
    use super::*;

    /// A stateless worker with one activation per core (no `state`: implied `()`).
    #[derive(Default)]
    pub(crate) struct TokenCheck;

    #[grain(name = "token_check", stateless_worker)]
    impl TokenCheck {
        #[read_only]
        pub async fn check(&self, ctx: &GrainContext<Self>, token: String) -> Result<bool> {
            let _ = ctx;
            Ok(!token.is_empty())
        }
    }

    /// At most three activations per key and silo.
    #[derive(Default)]
    pub(crate) struct Matchmaker;

    #[grain(name = "matchmaker", state = (), stateless_worker = 3u32, idle_after = "30s")]
    impl Matchmaker {
        pub async fn find(&self, ctx: &GrainContext<Self>) -> Result<u32> {
            let _ = ctx;
            Ok(0)
        }
    }
}

async fn play(player: &player::PlayerRef, lobby: &lobby::LobbyHandle) -> Result<bool> {
    player.ping(1).await?;
    let healed: std::result::Result<i32, player::HealError> = player.heal(5).await;
    let _ = healed;
    player.follow(player.clone(), vec!["x".to_owned()]).await?;
    lobby.join(player.clone()).await?;
    let alive = player.take_damage(3, "trap".to_owned()).await?;
    Ok(alive && player.health().await? > 0)
}

/// Declares replies through the generated mocks, typed by each method's signature.
fn mock(player: &player::PlayerMock, lobby: &lobby::LobbyHandleMock) {
    player
        .take_damage(|_key, amount, source| Ok(amount < 100 && !source.is_empty()))
        .health(|_key| Ok(100))
        .heal(|_key, amount| Err(player::HealError::Negative(amount)))
        .ping(|_key, _n| Ok(()))
        .follow(|_key, _leader, _tags| Ok(()));
    lobby.join(|key, _player| Ok(key.len()));
}

fn main() {
    let _ = (play, mock);
    fn mockable<G: granary_core::GrainMock>() {}
    mockable::<player::PlayerGrain>();
    mockable::<lobby::Lobby>();
    assert_eq!(player::PlayerGrain::TYPE_NAME, "player");
    assert_eq!(<lobby::Lobby as Grain>::METHODS[0].name, "join");
    assert!(<lobby::Lobby as Grain>::REENTRANT);
    assert_eq!(
        <player::PlayerGrain as Grain>::IDLE_AFTER,
        granary::IdleAfter::After(std::time::Duration::from_secs(5400))
    );
    assert_eq!(<lobby::Lobby as Grain>::IDLE_AFTER, granary::IdleAfter::Never);
    assert_eq!(<lobby::Lobby as Grain>::STATELESS_WORKER, None);
    assert_eq!(
        <workers::TokenCheck as Grain>::STATELESS_WORKER,
        Some(granary::StatelessWorker::PerCore)
    );
    assert_eq!(
        <workers::Matchmaker as Grain>::STATELESS_WORKER,
        Some(granary::StatelessWorker::Max(3))
    );
    fn typed<R: TypedRef>() {}
    typed::<player::PlayerRef>();
    typed::<lobby::LobbyHandle>();
    let _ = player::PlayerGrain::default().level();
}

//! [`TestSilo`]: a whole silo in-process, with the fast test profile, inspectable storage, a
//! virtual wall clock, and deactivation of one grain on demand.

use std::sync::Arc;

use granary_core::GrainId;
use granary_silo::memory::MemoryStore;
use granary_silo::{
    Client, ShutdownError, Silo, SiloBuilder, SiloConfig, SiloEvent, SiloEvents, StartError,
    WaitTimeout,
};

use crate::clock::VirtualClock;

/// A silo for integration tests: the [`SiloConfig::test_profile`] timings, in-memory storage the
/// test can inspect, a [`VirtualClock`] behind `ctx.now()`, and events to await instead of
/// sleeping.
///
/// ```
/// # use granary_testkit::TestSilo;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let silo = TestSilo::start(|b| b).await?;
/// assert_eq!(silo.silo().activation_count(), 0);
/// silo.shutdown().await?;
/// # Ok(())
/// # }
/// ```
///
/// `examples/player-game/tests/grains.rs` has a test written with it
/// (`a_game_and_its_players_in_a_test_silo`).
#[derive(Debug)]
pub struct TestSilo {
    silo: Silo,
    store: Arc<MemoryStore>,
    clock: VirtualClock,
}

impl TestSilo {
    /// Starts a silo with the test profile; `setup` registers grain types and may change the
    /// configuration.
    ///
    /// # Errors
    /// As [`SiloBuilder::start`].
    pub async fn start(setup: impl FnOnce(SiloBuilder) -> SiloBuilder) -> Result<Self, StartError> {
        Self::start_with(SiloConfig::test_profile(), setup).await
    }

    /// Starts a silo with `config`; `setup` registers grain types. The silo's wall clock is a
    /// fresh [`VirtualClock`] unless `setup` gives it another (then [`clock`](Self::clock) no
    /// longer drives it).
    ///
    /// # Errors
    /// As [`SiloBuilder::start`].
    pub async fn start_with(
        config: SiloConfig,
        setup: impl FnOnce(SiloBuilder) -> SiloBuilder,
    ) -> Result<Self, StartError> {
        let store = Arc::new(MemoryStore::new());
        let clock = VirtualClock::default();
        let builder = Silo::builder()
            .config(config)
            .storage(store.clone())
            .clock(Arc::new(clock.clone()));
        let silo = setup(builder).start().await?;
        Ok(Self { silo, store, clock })
    }

    /// The silo.
    #[must_use]
    pub fn silo(&self) -> &Silo {
        &self.silo
    }

    /// A client of the silo.
    #[must_use]
    pub fn client(&self) -> Client {
        self.silo.client()
    }

    /// The silo's events.
    #[must_use]
    pub fn events(&self) -> SiloEvents {
        self.silo.events()
    }

    /// The silo's storage.
    #[must_use]
    pub fn store(&self) -> &Arc<MemoryStore> {
        &self.store
    }

    /// The wall clock the silo's grains read with `ctx.now()`: starts at
    /// [`virtual_epoch`](crate::virtual_epoch) and moves only when the test advances or sets
    /// it.
    #[must_use]
    pub fn clock(&self) -> &VirtualClock {
        &self.clock
    }

    /// Deactivates `grain` now, whatever its idle time (`Never` included), and waits until it
    /// is gone: `on_deactivate` ran once its running turns finished. The next call activates it
    /// again from what it committed. Returns false if the grain had no activation. For a
    /// stateless worker key, every one of its activations on the silo is deactivated.
    ///
    /// ```
    /// # use granary::{grain, GrainContext, GrainId, Result};
    /// # use granary_testkit::TestSilo;
    /// # #[derive(Default)]
    /// # pub struct LobbyGrain;
    /// # #[grain(name = "lobby", state = (), idle_after = "never")]
    /// # impl LobbyGrain {
    /// #     pub async fn ping(&self, ctx: &GrainContext<Self>) -> Result<()> { let _ = ctx; Ok(()) }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let silo = TestSilo::start(|b| b.register::<LobbyGrain>()).await?;
    /// let lobby = silo.client().grain::<LobbyGrain>("eu-1");
    /// lobby.ping().await?;
    /// assert!(silo.deactivate(lobby.id()).await?);
    /// assert!(!silo.silo().is_active(lobby.id()));
    /// assert!(!silo.deactivate(lobby.id()).await?, "nothing left to deactivate");
    /// # silo.shutdown().await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`WaitTimeout`] if the deactivation did not finish within 10 s (a turn that does not
    /// end, or an `on_deactivate` that hangs).
    pub async fn deactivate(&self, grain: &GrainId) -> Result<bool, WaitTimeout> {
        // Subscribed before asking, so the event cannot be missed.
        let mut events = self.silo.events();
        if !self.silo.deactivate(grain) {
            return Ok(false);
        }
        // A stateless worker key may have several activations: wait for the last one.
        events
            .wait_for(|e| {
                matches!(e, SiloEvent::Deactivated(g, _) | SiloEvent::ActivationFailed(g) if g == grain)
                    && !self.silo.is_active(grain)
            })
            .await?;
        Ok(true)
    }

    /// Shuts the silo down.
    ///
    /// # Errors
    /// As [`Silo::shutdown`].
    pub async fn shutdown(self) -> Result<(), ShutdownError> {
        self.silo.shutdown().await
    }
}

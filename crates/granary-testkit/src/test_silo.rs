//! [`TestSilo`]: a whole silo in-process, with the fast test profile and inspectable storage.

use std::sync::Arc;

use granary_silo::memory::MemoryStore;
use granary_silo::{Client, ShutdownError, Silo, SiloBuilder, SiloConfig, SiloEvents, StartError};

/// A silo for integration tests: the [`SiloConfig::test_profile`] timings, in-memory storage the
/// test can inspect, and events to await instead of sleeping.
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
#[derive(Debug)]
pub struct TestSilo {
    silo: Silo,
    store: Arc<MemoryStore>,
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

    /// Starts a silo with `config`; `setup` registers grain types.
    ///
    /// # Errors
    /// As [`SiloBuilder::start`].
    pub async fn start_with(
        config: SiloConfig,
        setup: impl FnOnce(SiloBuilder) -> SiloBuilder,
    ) -> Result<Self, StartError> {
        let store = Arc::new(MemoryStore::new());
        let builder = Silo::builder().config(config).storage(store.clone());
        let silo = setup(builder).start().await?;
        Ok(Self { silo, store })
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

    /// Shuts the silo down.
    ///
    /// # Errors
    /// As [`Silo::shutdown`].
    pub async fn shutdown(self) -> Result<(), ShutdownError> {
        self.silo.shutdown().await
    }
}

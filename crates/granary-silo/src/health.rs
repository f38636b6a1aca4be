//! [`SiloHealth`]: whether a silo is ready to serve, in its own view of itself, for the
//! readiness probe of an orchestrator.

use std::sync::Weak;
use std::time::Duration;

use granary_core::provider::SiloStatus;

/// Why a silo is not ready to serve calls now. Each variant says what the silo sees; none of
/// them is a fault of the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NotReady {
    /// The silo is gone ([`Silo::shutdown`](crate::Silo::shutdown) finished, or it was
    /// dropped). A process in this state is about to exit.
    #[error("the silo stopped")]
    Stopped,
    /// The silo is shutting down: it admits no new activations and is leaving the cluster.
    /// Send it no new traffic; it finishes the turns it has.
    #[error("the silo is shutting down")]
    ShuttingDown,
    /// The cluster declared this silo dead (dead is final): it serves nothing again; restart the
    /// process, which joins as a new generation.
    #[error("the cluster declared this silo dead; restart it to join again")]
    DeclaredDead,
    /// The silo's own row in the membership table, as it last read the table, is not
    /// `Active` (`None`: it found no row of its own). It serves once the table says `Active`.
    #[error("the silo's membership row says {}, not Active", status.map_or_else(|| "nothing (no row)".to_owned(), |s| format!("{s:?}")))]
    NotActive {
        /// Its status in the table, if it has a row.
        status: Option<SiloStatus>,
    },
    /// The silo could not renew its membership lease (write its heartbeat and read the
    /// membership table) within the lease window: it refuses calls until it renews. Usually the
    /// membership store is unreachable.
    #[error(
        "the silo's membership lease ran out (no heartbeat renewed within {window:?}): it refuses calls until it can reach the membership table"
    )]
    LeaseExpired {
        /// The lease window.
        window: Duration,
    },
}

/// What a [`SiloHealth`] reads: implemented by the router, which knows the catalog and the
/// cluster view.
pub(crate) trait Standing: Send + Sync {
    /// Whether the silo is ready to serve calls now.
    fn readiness(&self) -> Result<(), NotReady>;
}

/// A handle on a silo's readiness, for a health endpoint: cheap to clone, and it keeps no silo
/// alive (once the silo is gone it answers [`NotReady::Stopped`]). See
/// [`Silo::health`](crate::Silo::health).
#[derive(Clone)]
pub struct SiloHealth {
    pub(crate) source: Weak<dyn Standing>,
}

impl std::fmt::Debug for SiloHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SiloHealth")
            .field("live", &(self.source.strong_count() > 0))
            .finish()
    }
}

impl SiloHealth {
    /// Whether the silo is ready to serve calls, in its own view of itself, now: it is not
    /// shutting down, and in a cluster its own membership row (as it last read the table) is
    /// `Active` and its lease holds. Reads memory only: no I/O, no waiting.
    ///
    /// This says nothing of the state store's health beyond the lease: a readiness probe also
    /// checks that the store answers (`granary-node` pings it).
    ///
    /// # Errors
    /// [`NotReady`], saying which condition fails.
    pub fn readiness(&self) -> Result<(), NotReady> {
        match self.source.upgrade() {
            Some(source) => source.readiness(),
            None => Err(NotReady::Stopped),
        }
    }
}

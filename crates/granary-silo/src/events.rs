//! Silo life-cycle events, for tests and operators to await instead of sleeping.

use std::time::Duration;

use tokio::sync::broadcast;

use granary_core::GrainId;

/// Why an activation was deactivated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeactivationReason {
    /// No call for its type's idle time (`idle_after`, by default the silo's `idle_timeout`).
    Idle,
    /// The grain asked (`deactivate_on_idle`), or `Silo::deactivate` did.
    Requested,
    /// A commit was refused as stale, or failed with an unknown outcome; the next call reloads.
    StorageConflict,
    /// A turn panicked; `on_deactivate` did not run.
    Panicked,
    /// A turn failed after changing the state without saving it; `on_deactivate` did not run,
    /// and the next call reloads the committed state.
    FailedWithUnsavedState,
    /// The silo is shutting down.
    Shutdown,
}

impl DeactivationReason {
    /// Whether `on_deactivate` runs: not after a panic or a conflict, where the in-memory state
    /// cannot be trusted.
    pub(crate) fn runs_hook(self) -> bool {
        !matches!(
            self,
            Self::Panicked | Self::StorageConflict | Self::FailedWithUnsavedState
        )
    }

    /// The stronger of two reasons (a panic outranks a request).
    pub(crate) fn max(self, other: Self) -> Self {
        if other.rank() > self.rank() {
            other
        } else {
            self
        }
    }

    fn rank(self) -> u8 {
        match self {
            Self::Idle => 0,
            Self::Requested => 1,
            Self::Shutdown => 2,
            Self::FailedWithUnsavedState => 3,
            Self::StorageConflict => 4,
            Self::Panicked => 5,
        }
    }
}

/// Something that happened in a silo.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SiloEvent {
    /// A grain finished activating and serves calls.
    Activated(GrainId),
    /// A grain could not be activated; its waiting calls failed.
    ActivationFailed(GrainId),
    /// A grain was deactivated.
    Deactivated(GrainId, DeactivationReason),
    /// A turn of the grain panicked.
    TurnPanicked(GrainId),
    /// The silo's view of the cluster changed: these silos are now active (sorted).
    MembersChanged(Vec<granary_core::SiloId>),
    /// The cluster declared this silo dead: it admits no more calls and deactivates its grains.
    /// Dead is final; a restarted process joins under a new generation.
    DeclaredDead,
    /// This silo could not renew its lease (write its heartbeat and read the membership table)
    /// within the lease window: it refuses calls with a retryable error until it renews.
    LeaseExpired,
    /// This silo renewed its lease after it had run out: it serves again.
    LeaseRenewed,
}

/// A subscription to a silo's events, from [`Silo::events`](crate::Silo::events).
#[derive(Debug)]
pub struct SiloEvents {
    rx: broadcast::Receiver<SiloEvent>,
    deadline: Duration,
}

/// No matching event arrived before the deadline.
#[derive(Debug, thiserror::Error)]
#[error("no matching silo event within {0:?}")]
pub struct WaitTimeout(pub Duration);

impl SiloEvents {
    pub(crate) fn new(rx: broadcast::Receiver<SiloEvent>) -> Self {
        Self {
            rx,
            deadline: Duration::from_secs(10),
        }
    }

    /// Changes the deadline of [`wait_for`](Self::wait_for) (default 10 s).
    #[must_use]
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Waits for the next event (after the subscription was made) matching `pred`.
    ///
    /// # Errors
    /// [`WaitTimeout`] when none arrives before the deadline or the silo is gone.
    pub async fn wait_for(
        &mut self,
        pred: impl FnMut(&SiloEvent) -> bool,
    ) -> Result<SiloEvent, WaitTimeout> {
        let deadline = self.deadline;
        match tokio::time::timeout(deadline, self.next_where(pred)).await {
            Ok(Some(event)) => Ok(event),
            _ => Err(WaitTimeout(deadline)),
        }
    }

    /// The next event matching `pred`, however long it takes; `None` once the silo is gone.
    pub async fn next_where(
        &mut self,
        mut pred: impl FnMut(&SiloEvent) -> bool,
    ) -> Option<SiloEvent> {
        loop {
            match self.rx.recv().await {
                Ok(event) if pred(&event) => return Some(event),
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "silo event subscriber lagged");
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

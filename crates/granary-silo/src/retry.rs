//! Transparent retries of calls that certainly did not run: refused by a silo shutting down
//! (its grains are moving), by a grain whose activation kept moving, or not sent because the
//! silo could not be reached. Such a call is sent again, placed afresh, after a short pause
//! that doubles up to [`PAUSE_MAX`], until its deadline: a rolling restart fails no call,
//! whether its caller is a [`ClusterClient`](crate::ClusterClient) or a grain on another silo.

use std::time::Duration;

use granary_core::CallError;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The first pause before a refused call is tried again.
const PAUSE_MIN: Duration = Duration::from_millis(10);
/// The longest pause between two tries of a refused call.
const PAUSE_MAX: Duration = Duration::from_millis(200);

/// Whether `err` says the call did not run and another try (elsewhere, a moment later) may
/// succeed: a silo shutting down, a grain whose activation kept moving, a silo that could not
/// be reached before the call was sent. The limits (`TooManyActivations`, `QueueFull`) and
/// `StorageConflict` are retryable too, but are the application's to pace.
pub(crate) fn certainly_not_run(err: &CallError) -> bool {
    matches!(
        err,
        CallError::ShuttingDown
            | CallError::Unavailable { .. }
            | CallError::SiloUnavailable {
                outcome_unknown: false,
                ..
            }
    )
}

/// The pauses between the tries of one call, up to its deadline.
#[derive(Debug)]
pub(crate) struct Backoff {
    deadline: Instant,
    pause: Duration,
}

impl Backoff {
    /// The tries of a call whose caller waits `timeout`.
    pub(crate) fn new(timeout: Duration) -> Self {
        Self {
            deadline: granary_core::deadline_in(timeout),
            pause: PAUSE_MIN,
        }
    }

    /// The time left until the call's deadline.
    pub(crate) fn left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Waits the next pause: `false`, at once, when the deadline comes before the pause ends
    /// (the refusal is then the call's error) or when `stop` is cancelled meanwhile.
    pub(crate) async fn pause(&mut self, stop: &CancellationToken) -> bool {
        if self.left() <= self.pause {
            return false;
        }
        tokio::select! {
            () = tokio::time::sleep(self.pause) => {}
            () = stop.cancelled() => return false,
        }
        self.pause = (self.pause * 2).min(PAUSE_MAX);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_refusals_that_certainly_did_not_run_are_retried() {
        let grain = granary_core::GrainId::new("t", 1);
        let unavailable = |outcome_unknown| CallError::SiloUnavailable {
            silo: "s0@1".into(),
            reason: "r".into(),
            outcome_unknown,
        };
        assert!(certainly_not_run(&CallError::ShuttingDown));
        assert!(certainly_not_run(&unavailable(false)));
        assert!(certainly_not_run(&CallError::Unavailable {
            grain: grain.clone(),
            attempts: 3,
        }));
        // It may have run: never retried behind the caller's back.
        assert!(!certainly_not_run(&unavailable(true)));
        assert!(!certainly_not_run(&CallError::Timeout {
            grain: grain.clone(),
            method: "m".into(),
            timeout: Duration::from_secs(1),
        }));
        // The application's answer, or its limits to pace: the caller's to handle.
        assert!(!certainly_not_run(&CallError::rejected(&grain, "no")));
        assert!(!certainly_not_run(&CallError::QueueFull {
            grain,
            limit: 1
        }));
    }

    #[tokio::test(start_paused = true)]
    async fn pauses_double_up_to_the_maximum_and_stop_before_the_deadline() {
        let stop = CancellationToken::new();
        let mut backoff = Backoff::new(Duration::from_millis(500));
        let start = Instant::now();
        // 10 + 20 + 40 + 80 + 160 = 310 ms; the next pause (200 ms) would end past 500 ms.
        let mut tries = 0;
        while backoff.pause(&stop).await {
            tries += 1;
        }
        assert_eq!(tries, 5);
        assert_eq!(start.elapsed(), Duration::from_millis(310));
        assert!(backoff.left() <= Duration::from_millis(200));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_the_pause_at_once() {
        let stop = CancellationToken::new();
        stop.cancel();
        let mut backoff = Backoff::new(Duration::from_secs(30));
        assert!(!backoff.pause(&stop).await);
    }
}

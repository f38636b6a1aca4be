//! [`LogLimit`]: lets a warning that can repeat without end (a peer refused again and again, a
//! client that stops reading while a grain pushes to it) through at most once per interval,
//! with the count of those it held back, so that a misbehaving peer cannot flood the log.

use std::time::{Duration, Instant};

/// Lets one warning through per interval and counts the others.
///
/// ```
/// # use std::time::{Duration, Instant};
/// # use granary_core::LogLimit;
/// let dropped = LogLimit::new(Duration::from_secs(10));
/// if let Some(suppressed) = dropped.admit(Instant::now()) {
///     tracing::warn!(suppressed, "push dropped");
/// }
/// ```
#[derive(Debug)]
pub struct LogLimit {
    interval: Duration,
    state: parking_lot::Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimit {
    /// A limit of one warning per `interval`.
    #[must_use]
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            state: parking_lot::Mutex::default(),
        }
    }

    /// Whether to log the warning that happened at `now`: `Some(n)` if so, `n` being how many
    /// were held back since the last one logged; `None` if it is held back (and counted).
    pub fn admit(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock();
        if let Some(last) = state.last
            && now.saturating_duration_since(last) < self.interval
        {
            state.suppressed += 1;
            return None;
        }
        state.last = Some(now);
        Some(std::mem::take(&mut state.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_warning_is_let_through_per_interval_with_the_count_of_the_others() {
        let log = LogLimit::new(Duration::from_secs(10));
        let start = Instant::now();
        assert_eq!(log.admit(start), Some(0), "the first is logged");
        for i in 1..=5 {
            assert_eq!(log.admit(start + Duration::from_secs(i)), None);
        }
        assert_eq!(
            log.admit(start + Duration::from_secs(10)),
            Some(5),
            "the next line says how many were not logged"
        );
        assert_eq!(log.admit(start + Duration::from_secs(11)), None);
        assert_eq!(log.admit(start + Duration::from_secs(30)), Some(1));
    }
}

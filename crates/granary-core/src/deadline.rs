//! Call deadlines: the one place a timeout becomes an [`Instant`], so that no timeout, however
//! long, overflows `Instant` arithmetic.

use std::time::Duration;

use tokio::time::Instant;

/// About 30 years: tokio's own "far future", and what a timeout longer than that means.
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// The instant `timeout` from now. A timeout too long for `Instant` arithmetic
/// (`Duration::MAX` from `with_timeout`, or whatever an envelope from the wire says) is cut to
/// about 30 years, which means "no deadline" in practice; it never panics.
#[must_use]
pub fn deadline_in(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout.min(FAR_FUTURE))
        .or_else(|| now.checked_add(Duration::from_secs(86_400)))
        .unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_never_overflows() {
        let now = Instant::now();
        assert!(deadline_in(Duration::MAX) > now + Duration::from_secs(86_400 * 365));
        let soon = deadline_in(Duration::from_millis(5));
        assert!(soon >= now + Duration::from_millis(5));
    }
}

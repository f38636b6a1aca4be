//! The silo's lease: it serves only while it has lately renewed its heartbeat.
//!
//! Every `renew_every` the silo writes its heartbeat and reads the membership table, both at
//! once. When both succeed and its own row is not `Dead`, the lease runs for `window` from the
//! moment the attempt *started* (on the local monotonic clock, so no other machine's clock is
//! involved). When the lease has run out, the silo admits no call: each fails with
//! [`CallError::SiloUnavailable`] without `outcome_unknown` (retryable: the call did not
//! run), until a renewal succeeds; if the read shows the row `Dead`, the silo stops for good.
//!
//! # Why the window is shorter than the time it takes to declare a silo dead
//!
//! Let `m` = `missed_probes`, `I` = `probe_interval`, `T` = `probe_timeout`. A silo cut off
//! from everything at `t0` renewed last at some `r ≤ t0`, so it stops serving at
//! `r + window ≤ t0 + window`. Another silo declares it dead only after `m` failed probes in a
//! row; each failed probe takes `T`, and consecutive probes are `I` apart on top of that, so
//! the earliest declaration is about `t0 + m·T + (m−1)·I`. The window is
//!
//! `window = (m−1)·(I + T) + T/2  <  m·T + (m−1)·I`
//!
//! which leaves `T/2` for clock rates and scheduling: the cut-off silo has stopped serving
//! before anyone can declare it dead and activate its grains elsewhere. (Test profile: 500 ms
//! against 600 ms; production defaults: 4.5 s against 5 s.) Keeping its activations while the
//! lease is out is safe: a renewal succeeds only after reading its row not `Dead`, and nobody
//! takes over the grains of a silo that is not `Dead`.
//!
//! [`CallError::SiloUnavailable`]: granary_core::CallError::SiloUnavailable

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Until when the silo may serve, on its monotonic clock.
#[derive(Debug)]
pub(crate) struct Lease {
    base: Instant,
    window: Duration,
    /// Nanoseconds after `base` at which the lease runs out.
    until_ns: AtomicU64,
}

impl Lease {
    /// A lease of `window`, running from `now` (the silo just wrote its row).
    pub(crate) fn new(window: Duration, now: Instant) -> Self {
        let lease = Self {
            base: now,
            window,
            until_ns: AtomicU64::new(0),
        };
        lease.renew(now);
        lease
    }

    /// The length of the lease.
    pub(crate) fn window(&self) -> Duration {
        self.window
    }

    /// Extends the lease to `started + window`, `started` being when the successful renewal
    /// attempt began (never shortens it).
    pub(crate) fn renew(&self, started: Instant) {
        let until = started.saturating_duration_since(self.base) + self.window;
        let until = u64::try_from(until.as_nanos()).unwrap_or(u64::MAX);
        self.until_ns.fetch_max(until, Ordering::AcqRel);
    }

    /// Whether the lease holds at `now`.
    pub(crate) fn holds(&self, now: Instant) -> bool {
        let elapsed =
            u64::try_from(now.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX);
        elapsed < self.until_ns.load(Ordering::Acquire)
    }

    /// When the lease runs out unless renewed.
    pub(crate) fn expires_at(&self) -> Instant {
        self.base + Duration::from_nanos(self.until_ns.load(Ordering::Acquire))
    }
}

/// The lease window for these detector settings (see the module docs for the inequality).
pub(crate) fn window(
    missed_probes: u32,
    probe_interval: Duration,
    probe_timeout: Duration,
) -> Duration {
    (probe_interval + probe_timeout).saturating_mul(missed_probes.max(1) - 1) + probe_timeout / 2
}

/// How often the lease is renewed: four attempts per window, and at least every probe interval.
pub(crate) fn renew_every(window: Duration, probe_interval: Duration) -> Duration {
    (window / 4)
        .min(probe_interval)
        .max(Duration::from_millis(10))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_runs_from_the_start_of_the_last_successful_renewal() {
        let start = Instant::now();
        let ms = Duration::from_millis;
        let lease = Lease::new(ms(500), start);
        assert!(lease.holds(start + ms(499)));
        assert!(!lease.holds(start + ms(500)));
        // A renewal that started at 300 ms (whenever it finished) runs to 800 ms.
        lease.renew(start + ms(300));
        assert!(lease.holds(start + ms(799)));
        assert!(!lease.holds(start + ms(800)));
        assert_eq!(lease.expires_at(), start + ms(800));
        // An older attempt that finished late never shortens it.
        lease.renew(start + ms(100));
        assert_eq!(lease.expires_at(), start + ms(800));
    }

    #[test]
    fn the_window_ends_before_anyone_can_declare_the_silo_dead() {
        let ms = Duration::from_millis;
        for (m, i, t) in [
            (2, 200, 200),
            (3, 1_000, 1_000),
            (1, 100, 300),
            (5, 50, 400),
        ] {
            let (i, t) = (ms(i), ms(t));
            let w = window(m, i, t);
            let earliest_death = t * m + i * (m - 1);
            assert!(w < earliest_death, "m={m} I={i:?} T={t:?}: {w:?}");
            assert!(renew_every(w, i) * 3 < w, "several renewals per window");
        }
        assert_eq!(window(2, ms(200), ms(200)), ms(500));
        assert_eq!(window(3, ms(1_000), ms(1_000)), ms(4_500));
    }
}

//! [`VirtualClock`]: the wall time grains read (`ctx.now()`) in tests, moved by the test.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;

use granary_core::Clock;

/// Where every virtual clock of the test kit starts: 2030-01-01T00:00:00Z. Fixed, so that
/// tests can write stored times relative to it (`virtual_epoch() - Duration::from_secs(3600)`:
/// "an hour before the test starts").
#[must_use]
pub fn virtual_epoch() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_893_456_000)
}

/// A wall clock that moves only when the test moves it. [`TestSilo`](crate::TestSilo) gives
/// its silo one (see [`TestSilo::clock`](crate::TestSilo::clock)); clones share the time.
///
/// It drives what grains read with `ctx.now()`, nothing else: a silo's timers and idle
/// collection run on tokio's clock (pause it with `#[tokio::test(start_paused = true)]` to
/// drive them too).
///
/// ```
/// # use std::time::Duration;
/// # use granary_testkit::{VirtualClock, virtual_epoch};
/// # use granary::Clock;
/// let clock = VirtualClock::default();
/// assert_eq!(clock.now(), virtual_epoch());
/// clock.advance(Duration::from_secs(90));
/// assert_eq!(clock.now(), virtual_epoch() + Duration::from_secs(90));
/// ```
#[derive(Debug, Clone)]
pub struct VirtualClock {
    now: Arc<Mutex<SystemTime>>,
}

impl Default for VirtualClock {
    /// A clock at [`virtual_epoch`].
    fn default() -> Self {
        Self::at(virtual_epoch())
    }
}

impl VirtualClock {
    /// A clock showing `now`.
    #[must_use]
    pub fn at(now: SystemTime) -> Self {
        Self {
            now: Arc::new(Mutex::new(now)),
        }
    }

    /// Moves the clock forward by `by` (left as it is if `SystemTime` cannot represent the
    /// result).
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock();
        if let Some(later) = now.checked_add(by) {
            *now = later;
        }
    }

    /// Sets the clock to `now`, earlier or later (a wall clock may be set back).
    pub fn set(&self, now: SystemTime) {
        *self.now.lock() = now;
    }
}

impl Clock for VirtualClock {
    fn now(&self) -> SystemTime {
        *self.now.lock()
    }
}

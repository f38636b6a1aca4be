//! Granary test kit.
//!
//! - [`GrainTest`] unit-tests one grain: in-memory state, no silo, no sleeps. Call it, inspect
//!   its state, the events it committed and the calls it made to other grains (whose replies the
//!   test declares), and drive its timers on a virtual clock.
//! - [`TestSilo`] starts a whole in-process silo with the fast test profile, for integration
//!   tests.
//!
//! See the `example-player-game` package for a suite written with both.

mod grain_test;
mod host;
mod test_silo;

pub use grain_test::{GrainTest, RecordedCall};
pub use test_silo::TestSilo;

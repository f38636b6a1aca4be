//! [`Clock`]: where a grain's wall time ([`GrainContext::now`](crate::GrainContext::now)) comes
//! from. A silo reads the system clock; the test kit drives a virtual one.

use std::fmt;
use std::time::SystemTime;

/// A source of wall-clock time for grains.
///
/// A silo uses [`SystemClock`] unless its builder is given another one; the test kit's
/// `VirtualClock` lets a test move time forward to check what a grain does after hours
/// offline, without waiting.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current wall-clock time.
    fn now(&self) -> SystemTime;
}

/// The operating system's wall clock ([`SystemTime::now`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

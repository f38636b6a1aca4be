//! Integration tests of a whole silo: activation, turns, reentrancy, deactivation, deadlines,
//! panics, timers, shutdown and the wire path. One test binary; one module per concern.
#![allow(clippy::unwrap_used, reason = "test helpers fail loudly")]
#![allow(
    unreachable_pub,
    reason = "test-only items shared between modules of one binary"
)]

mod probe;

mod activation;
mod bad_input;
mod lifecycle;
mod tidy;
mod turns;
mod wire;

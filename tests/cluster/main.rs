//! Integration tests of whole silos: activation, turns, reentrancy, deactivation, deadlines,
//! panics, timers, shutdown, the wire path, and clusters of silos over loopback TCP and Redis.
//! One test binary; one module per concern.
#![allow(clippy::unwrap_used, reason = "test helpers fail loudly")]
#![allow(
    unreachable_pub,
    reason = "test-only items shared between modules of one binary"
)]

mod probe;
mod reminders;

mod activation;
mod bad_input;
mod collection;
mod dashboard;
mod failures;
mod filters;
mod health;
mod interfaces;
mod leaving;
mod lifecycle;
mod limits;
mod metrics;
mod multi_silo;
mod observers;
mod processes;
mod redis_cluster;
mod roles;
mod stateless;
mod subscriptions;
mod tidy;
mod tls;
mod turns;
mod webdriver;
mod wire;

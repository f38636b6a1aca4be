//! Granary test kit.
//!
//! - [`GrainTest`] unit-tests one grain: in-memory state, no silo, no sleeps. Call it, inspect
//!   its state, the events it committed and the calls it made to other grains (whose replies the
//!   test declares, typed, through the mocks `#[grain]` generates: [`GrainTest::mock`]), and
//!   drive its timers on a virtual clock.
//! - [`TestSilo`] starts a whole in-process silo with the fast test profile, for integration
//!   tests: calls through its client, deactivates a grain on demand
//!   ([`TestSilo::deactivate`]), moves the wall clock its grains read ([`VirtualClock`]).
//!
//! Both drive `ctx.now()` from a virtual clock that starts at [`virtual_epoch`], so "catch up
//! on what happened since the stored time" is testable without waiting.
//!
//! - [`process::SiloProcess`] starts, signals and waits for silo processes.
//! - [`redis_server`] gives tests the shared Redis, or a private one they may kill.
//! - [`redis_cluster`] gives tests a private 3-primary Redis Cluster (with replicas if asked).
//! - [`moto_server`] gives tests a private SQS-compatible server they may stop and restart.
//! - [`tansu_server`] gives tests a private Kafka-protocol broker they may kill and restart.
//! - [`nats_server`] gives tests a private NATS server with JetStream they may kill and restart.
//! - [`tls`] gives the TLS tests their certificates and a TLS-terminating proxy.
//! - [`events`] is the scaffolding of the event adapters' tests: a grain that publishes an event
//!   per call, handlers that record what a consumer delivered, and the check that every event
//!   arrived once, in commit order.
//! - [`conformance`] is the suite every state store passes, in-memory and Redis alike.
//!
//! `examples/player-game/tests/grains.rs` is a suite written with both.

pub mod certs;
mod clock;
pub mod conformance;
pub mod events;
mod grain_test;
mod host;
mod mock;
pub mod moto_server;
pub mod nats_server;
mod private_server;
pub mod process;
pub mod redis_cluster;
pub mod redis_server;
pub mod tansu_server;
mod test_silo;
pub mod tls;

pub use clock::{VirtualClock, virtual_epoch};
pub use grain_test::{GrainTest, RecordedCall};
pub use mock::Mocks;
pub use test_silo::TestSilo;

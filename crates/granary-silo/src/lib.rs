//! Granary silo runtime: hosts grain activations, routes calls to them, runs their timers,
//! collects idle ones and shuts down gracefully.
//!
//! ```
//! # use granary_silo::{Silo, SiloConfig};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let silo = Silo::builder().config(SiloConfig::test_profile()).start().await?;
//! assert_eq!(silo.activation_count(), 0);
//! silo.shutdown().await?;
//! # Ok(())
//! # }
//! ```
//!
//! Grain types are registered with [`SiloBuilder::register`]; references come from
//! [`Silo::client`]. See the `granary` facade for a whole example.

mod activation;
mod client;
mod cluster;
mod collector;
mod config;
mod events;
mod invoker;
pub mod memory;
mod metrics;
mod registry;
mod request;
mod runtime;
mod scheduler;
mod silo;

pub use client::Client;
pub use cluster::{ClientConfig, ClusterClient, ClusterConfig, ConnectError, Placement};
pub use config::SiloConfig;
pub use events::{DeactivationReason, SiloEvent, SiloEvents, WaitTimeout};
pub use metrics::SiloMetrics;
pub use runtime::CallObserver;
pub use silo::{ShutdownError, Silo, SiloBuilder, StartError};

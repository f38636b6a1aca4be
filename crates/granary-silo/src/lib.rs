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
//!
//! # Tracing
//!
//! Each call runs in a `grain.call` span (level debug) with the fields `grain`, `method`,
//! `silo` and `trace`, the call chain's trace id, which is the same on every silo the chain
//! crosses. With the feature `opentelemetry`, each such span also joins an OpenTelemetry trace
//! (through [`tracing-opentelemetry`](https://docs.rs/tracing-opentelemetry), when the process
//! installs its layer): the OTel trace id is the chain's trace id, so every call of one logical
//! operation, on any silo, lands in one OTel trace. Span ids do not travel with calls: the spans
//! of one trace are siblings, children of one remote parent span id derived from the trace id,
//! a span that no silo exports.

mod activation;
pub mod admission;
mod catalog;
mod client;
mod cluster;
mod collector;
mod config;
mod events;
mod filter;
mod health;
mod invoker;
#[cfg(test)]
mod layers;
pub mod memory;
mod metrics;
pub mod observers;
#[cfg(feature = "opentelemetry")]
mod otel;
mod registry;
mod reminders;
mod request;
mod retry;
mod router;
mod shared;
mod silo;
mod subscriptions;
mod workers;

pub use client::Client;
pub use cluster::{ClientConfig, ClusterClient, ClusterConfig, ConnectError, Placement};
pub use config::SiloConfig;
pub use events::{DeactivationReason, SiloEvent, SiloEvents, WaitTimeout};
pub use filter::{CallFilter, CallKind, CallObserver, FilterCall, Refusal};
/// TLS on the links of silos and clients (from the transport crate).
pub use granary_transport::{TlsBuilder, TlsConfig, TlsError};
pub use health::{NotReady, SiloHealth};
pub use metrics::SiloMetrics;
pub use observers::{ObserverHandle, ObserverTable};
pub use silo::{ShutdownError, Silo, SiloBuilder, StartError};
pub use subscriptions::Subscription;

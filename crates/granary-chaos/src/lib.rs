//! Granary's chaos suite: proves, against silo processes on a real Redis, that faults lose,
//! reorder or invent nothing.
//!
//! A run (the `granary-chaos` binary; see `docs/chaos.md`) starts `chaos-silo` processes
//! hosting [`ListGrain`], drives a list-append [`workload`] through a `ClusterClient` while the
//! [`faults`] SIGKILL, SIGSTOP, partition or gracefully restart silos or restart Redis, reads
//! back the final lists and the event stream, and hands the [`History`] to the [`check`]er. It
//! prints one JSON [`Summary`] line and exits non-zero on any violation.
//!
//! ```
//! use granary_chaos::{History, ListDigest, Attempt, Outcome, check};
//! use std::time::Duration;
//!
//! let mut history = History::default();
//! history.attempts.push(Attempt {
//!     key: 1,
//!     value: 7,
//!     start: Duration::ZERO,
//!     end: Duration::from_millis(3),
//!     outcome: Outcome::Acked(ListDigest::of(&[7])),
//! });
//! // Redis ended up without the acknowledged 7: lost.
//! history.final_lists.insert(1, vec![]);
//! assert_eq!(check(&history).lost, 1);
//! ```

mod checker;
mod cluster;
mod error;
pub mod faults;
mod grain;
mod history;
mod partition;
mod run;
mod unavailability;
pub mod workload;

pub use checker::{Verdict, check};
pub use cluster::{SiloProcess, SiloSpec};
pub use error::ChaosError;
pub use grain::{Appended, Items, LIST_TYPE, ListGrain};
pub use history::{
    Attempt, DIGEST_SEED, EventRecord, FaultKind, History, Injection, ListDigest, Outcome,
    digest_step, prefix_digests,
};
pub use partition::{CommandError, NoSwitch, PartitionCommand, PartitionSwitch, TransportSwitch};
pub use run::{Options, RestartAddress, Summary, run};
pub use unavailability::{Percentiles, Window, unavailability, windows};

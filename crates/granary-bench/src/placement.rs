//! Fixed CPU placement for the two-process benchmarks (P3, P4 and their tonic peers): the
//! client side (this process's benchmark runtime) on one core, the server process on another,
//! the same for every side of a comparison, so that a ratio never depends on where the
//! scheduler happened to put the processes.
//!
//! Pinning is `sched_setaffinity` on the thread that builds a runtime: the runtime's worker and
//! blocking threads inherit it. A server process pins itself (`--cpu N`) before its runtime
//! starts.

use std::fmt;
use std::io;

use rustix::thread::{CpuSet, sched_getaffinity, sched_setaffinity};

/// Where the client and the server of a two-process benchmark run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CpuPlacement {
    /// Each side pinned to its own core (or both to the same one on a one-core machine).
    Pinned {
        /// The core of the benchmark's client runtime.
        client: usize,
        /// The core of the server process.
        server: usize,
    },
    /// No pinning (the affinity could not be read or set): the line says so.
    Unpinned,
}

impl CpuPlacement {
    /// The placement for a machine whose allowed cores are `allowed` (ascending): the client on
    /// the first, the server on the second; both on the first if there is only one.
    pub(crate) fn choose(allowed: &[usize]) -> Self {
        match allowed {
            [] => Self::Unpinned,
            [only] => Self::Pinned {
                client: *only,
                server: *only,
            },
            [client, server, ..] => Self::Pinned {
                client: *client,
                server: *server,
            },
        }
    }

    /// The placement for this process: chosen from the cores it may run on.
    pub(crate) fn for_this_machine() -> Self {
        sched_getaffinity(None).map_or(Self::Unpinned, |set| Self::choose(&cores_of(&set)))
    }

    /// The server process's core, for its `--cpu` argument.
    pub(crate) fn server(self) -> Option<usize> {
        match self {
            Self::Pinned { server, .. } => Some(server),
            Self::Unpinned => None,
        }
    }

    /// Pins the calling thread (and so every thread it starts from now on) to the client's core
    /// until the guard is dropped. An `Unpinned` placement pins nothing.
    ///
    /// # Errors
    /// When the affinity cannot be read or set.
    pub(crate) fn pin_client(self) -> io::Result<Pinned> {
        match self {
            Self::Pinned { client, .. } => pin_current_thread(client),
            Self::Unpinned => Ok(Pinned { previous: None }),
        }
    }
}

impl fmt::Display for CpuPlacement {
    /// `placement=client:0,server:1`, or `placement=unpinned`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pinned { client, server } => {
                write!(f, "placement=client:{client},server:{server}")
            }
            Self::Unpinned => f.write_str("placement=unpinned"),
        }
    }
}

/// The cores set in `set`, ascending.
fn cores_of(set: &CpuSet) -> Vec<usize> {
    (0..CpuSet::MAX_CPU)
        .filter(|&cpu| set.is_set(cpu))
        .collect()
}

/// Restores the thread's previous affinity when dropped.
pub(crate) struct Pinned {
    previous: Option<CpuSet>,
}

impl fmt::Debug for Pinned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pinned")
            .field("previous", &self.previous.as_ref().map(cores_of))
            .finish()
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        if let Some(previous) = &self.previous {
            // Best effort: the mask was valid when read, so this only fails if the cores went
            // away meanwhile, and then the thread keeps the narrower mask it has.
            let _ = sched_setaffinity(None, previous);
        }
    }
}

/// Pins the calling thread to `cpu`; the guard restores the previous affinity.
///
/// # Errors
/// When the affinity cannot be read or set (for example `cpu` is not allowed here).
pub(crate) fn pin_current_thread(cpu: usize) -> io::Result<Pinned> {
    let previous = sched_getaffinity(None)?;
    let mut set = CpuSet::new();
    set.set(cpu);
    sched_setaffinity(None, &set).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("pinning the benchmark thread to core {cpu} failed: {e}"),
        )
    })?;
    Ok(Pinned {
        previous: Some(previous),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_cores_put_client_and_server_on_their_own() {
        let placement = CpuPlacement::choose(&[0, 1]);
        assert_eq!(
            placement,
            CpuPlacement::Pinned {
                client: 0,
                server: 1
            }
        );
        assert_eq!(placement.to_string(), "placement=client:0,server:1");
        assert_eq!(placement.server(), Some(1));
    }

    #[test]
    fn allowed_cores_are_used_as_given() {
        assert_eq!(
            CpuPlacement::choose(&[2, 5, 7]).to_string(),
            "placement=client:2,server:5"
        );
    }

    #[test]
    fn one_core_shares_it() {
        assert_eq!(
            CpuPlacement::choose(&[3]).to_string(),
            "placement=client:3,server:3"
        );
    }

    #[test]
    fn no_cores_is_unpinned_and_pins_nothing() {
        let placement = CpuPlacement::choose(&[]);
        assert_eq!(placement.to_string(), "placement=unpinned");
        assert_eq!(placement.server(), None);
        assert!(placement.pin_client().is_ok());
    }

    #[test]
    fn pinning_narrows_the_affinity_and_the_guard_restores_it() {
        let before = cores_of(&sched_getaffinity(None).expect("affinity"));
        let Some(&cpu) = before.last() else {
            return;
        };
        {
            let _pinned = pin_current_thread(cpu).expect("pin to an allowed core");
            assert_eq!(cores_of(&sched_getaffinity(None).expect("affinity")), [cpu]);
            // A thread started now inherits the pin.
            let inherited = std::thread::spawn(|| cores_of(&sched_getaffinity(None).expect("a")))
                .join()
                .expect("thread");
            assert_eq!(inherited, [cpu]);
        }
        assert_eq!(
            cores_of(&sched_getaffinity(None).expect("affinity")),
            before
        );
    }
}

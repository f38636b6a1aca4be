//! [`Faults`]: a test-only switch that simulates a network partition by dropping frames.
//!
//! Tests (the cluster tests, the chaos suite) cut a transport off from chosen peers while both
//! sides keep running and keep reaching everything else (Redis in particular). A cut is silent,
//! like a real partition: frames to and from the peer are dropped on this side, so requests
//! wait out their deadline; nothing is refused or closed. Cutting on one side is enough to cut
//! both directions of every link between the two silos, since the side that cuts drops what it
//! receives as well as what it sends.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use granary_core::SiloId;
use parking_lot::RwLock;

/// What this transport is cut off from (test fault injection; not for production use).
///
/// A cheap handle: clones share the same cuts. Get it with
/// [`Transport::faults`](crate::Transport::faults).
#[doc(hidden)]
#[derive(Debug, Clone, Default)]
pub struct Faults {
    inner: Arc<FaultState>,
}

#[derive(Debug, Default)]
struct FaultState {
    /// Whether any cut is set: the frame path checks only this when there is none.
    any: AtomicBool,
    cuts: RwLock<Cuts>,
}

#[derive(Debug, Default)]
struct Cuts {
    silos: HashSet<SiloId>,
    addresses: HashSet<String>,
}

impl Faults {
    /// Drops every frame to and from `silo` (exact name and generation) on every link this
    /// transport has with it, dialed or accepted, now and later.
    pub fn cut_silo(&self, silo: &SiloId) {
        self.inner.cuts.write().silos.insert(silo.clone());
        self.inner.any.store(true, Ordering::Release);
    }

    /// Drops every frame on the links this transport dials to `addr`, and fails new dials to
    /// it at once as unreachable. Links the peer dialed to this transport are matched by
    /// [`cut_silo`](Self::cut_silo) only (their address is the peer's ephemeral port).
    pub fn cut_address(&self, addr: SocketAddr) {
        self.inner.cuts.write().addresses.insert(addr.to_string());
        self.inner.any.store(true, Ordering::Release);
    }

    /// Removes every cut: frames flow again on the links that are still open.
    pub fn heal(&self) {
        let mut cuts = self.inner.cuts.write();
        cuts.silos.clear();
        cuts.addresses.clear();
        self.inner.any.store(false, Ordering::Release);
    }

    /// Whether frames between this transport and `peer` (at `addr`) are dropped.
    pub(crate) fn is_cut(&self, peer: &SiloId, addr: &str) -> bool {
        if !self.inner.any.load(Ordering::Acquire) {
            return false;
        }
        let cuts = self.inner.cuts.read();
        cuts.silos.contains(peer) || cuts.addresses.contains(addr)
    }

    /// Whether dials to `addr` fail.
    pub(crate) fn is_cut_address(&self, addr: &str) -> bool {
        self.inner.any.load(Ordering::Acquire) && self.inner.cuts.read().addresses.contains(addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_match_silos_and_dialed_addresses_until_healed() {
        let faults = Faults::default();
        let a = SiloId::new("a", 1);
        let b = SiloId::new("b", 1);
        assert!(!faults.is_cut(&a, "127.0.0.1:1"));
        faults.cut_silo(&a);
        faults.cut_address("127.0.0.1:2".parse().expect("an address"));
        assert!(faults.is_cut(&a, "127.0.0.1:1"));
        assert!(!faults.is_cut(&SiloId::new("a", 2), "127.0.0.1:1"));
        assert!(faults.is_cut(&b, "127.0.0.1:2"));
        assert!(faults.is_cut_address("127.0.0.1:2"));
        assert!(!faults.is_cut_address("127.0.0.1:1"));
        faults.heal();
        assert!(!faults.is_cut(&a, "127.0.0.1:2"));
        assert!(!faults.is_cut_address("127.0.0.1:2"));
    }
}

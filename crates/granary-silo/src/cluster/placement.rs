//! [`Placement`]: where a new activation of a grain goes.

use std::cell::Cell;

use granary_core::{GrainId, SiloId};

/// Where a grain that has no activation anywhere is activated. Placement decides only that:
/// once active, a grain stays where it is until it deactivates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Placement {
    /// A silo picked at random among the active ones.
    Random,
    /// The silo the call comes from (the default): no hop for the first call, and grains
    /// called from one front end gather on its silo.
    #[default]
    PreferLocal,
    /// The silo the grain id hashes to among the active ones: every silo picks the same one
    /// while membership does not change.
    Hash,
}

impl Placement {
    /// Picks a silo for `grain` among `silos` (the active silos, sorted, never empty), called
    /// from `local`.
    pub(crate) fn pick<'a>(
        self,
        grain: &GrainId,
        silos: &'a [SiloId],
        local: &'a SiloId,
    ) -> &'a SiloId {
        if silos.is_empty() {
            return local;
        }
        let index = match self {
            Self::PreferLocal => return local,
            Self::Hash => grain.stable_hash() % silos.len() as u64,
            Self::Random => random() % silos.len() as u64,
        };
        &silos[usize::try_from(index).unwrap_or(0)]
    }
}

/// A per-thread xorshift: placement needs spread, not statistics.
fn random() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(
            u64::from(std::process::id()) ^ 0x9e37_79b9_7f4a_7c15
                ^ std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| u64::from(d.subsec_nanos()) | 1),
        );
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn silos() -> Vec<SiloId> {
        (0..3).map(|i| SiloId::new(format!("s{i}"), 1)).collect()
    }

    #[test]
    fn prefer_local_picks_the_caller() {
        let silos = silos();
        let grain = GrainId::new("g", 1);
        assert_eq!(
            Placement::PreferLocal.pick(&grain, &silos, &silos[2]),
            &silos[2]
        );
    }

    #[test]
    fn hash_picks_the_same_silo_from_everywhere_and_spreads() {
        let silos = silos();
        let mut counts = [0; 3];
        for key in 0..300 {
            let grain = GrainId::new("g", key);
            let from_0 = Placement::Hash.pick(&grain, &silos, &silos[0]);
            let from_1 = Placement::Hash.pick(&grain, &silos, &silos[1]);
            assert_eq!(from_0, from_1);
            counts[silos.iter().position(|s| s == from_0).unwrap()] += 1;
        }
        assert!(counts.iter().all(|&c| c > 50), "{counts:?}");
    }

    #[test]
    fn random_uses_every_silo() {
        let silos = silos();
        let grain = GrainId::new("g", 1);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            seen.insert(Placement::Random.pick(&grain, &silos, &silos[0]).clone());
        }
        assert_eq!(seen.len(), 3);
    }
}

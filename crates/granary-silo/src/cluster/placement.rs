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
    /// The less loaded (by activation count, from heartbeats) of two silos picked at random:
    /// spreads load without every silo sending to the same least-loaded one between
    /// heartbeats.
    LeastLoaded,
}

impl Placement {
    /// Picks a silo for `grain` among `silos` (the active silos, sorted), called from
    /// `local`; `load` gives a silo's activation count.
    pub(crate) fn pick<'a>(
        self,
        grain: &GrainId,
        silos: &'a [SiloId],
        local: &'a SiloId,
        load: impl Fn(&SiloId) -> u64,
    ) -> &'a SiloId {
        if silos.is_empty() {
            return local;
        }
        let n = silos.len() as u64;
        let at = |i: u64| &silos[usize::try_from(i).unwrap_or(0)];
        match self {
            Self::PreferLocal => local,
            Self::Hash => at(grain.stable_hash() % n),
            Self::Random => at(random() % n),
            Self::LeastLoaded => {
                let (a, b) = (at(random() % n), at(random() % n));
                if load(b) < load(a) { b } else { a }
            }
        }
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
            Placement::PreferLocal.pick(&grain, &silos, &silos[2], |_| 0),
            &silos[2]
        );
    }

    #[test]
    fn hash_picks_the_same_silo_from_everywhere_and_spreads() {
        let silos = silos();
        let mut counts = [0; 3];
        for key in 0..300 {
            let grain = GrainId::new("g", key);
            let from_0 = Placement::Hash.pick(&grain, &silos, &silos[0], |_| 0);
            let from_1 = Placement::Hash.pick(&grain, &silos, &silos[1], |_| 0);
            assert_eq!(from_0, from_1);
            counts[silos.iter().position(|s| s == from_0).unwrap()] += 1;
        }
        assert!(counts.iter().all(|&c| c > 50), "{counts:?}");
    }

    #[test]
    fn least_loaded_avoids_the_busy_silo_and_uses_the_others() {
        let silos = silos();
        let grain = GrainId::new("g", 1);
        let load = |s: &SiloId| if s.name() == "s1" { 1_000 } else { 10 };
        let mut counts = [0; 3];
        for _ in 0..600 {
            let pick = Placement::LeastLoaded.pick(&grain, &silos, &silos[0], load);
            counts[silos.iter().position(|s| s == pick).unwrap()] += 1;
        }
        // s1 wins only when both random picks are s1 (1 in 9).
        assert!(counts[1] < 120, "{counts:?}");
        assert!(counts[0] > 150 && counts[2] > 150, "{counts:?}");
    }

    #[test]
    fn random_uses_every_silo() {
        let silos = silos();
        let grain = GrainId::new("g", 1);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            seen.insert(
                Placement::Random
                    .pick(&grain, &silos, &silos[0], |_| 0)
                    .clone(),
            );
        }
        assert_eq!(seen.len(), 3);
    }
}

//! The failure detector's decisions, kept apart from its I/O: which silos are alive enough to
//! vote, how many votes declare a silo dead, and whether a row's votes reach that.
//!
//! Everything here is a pure function of its inputs and takes the time as an argument
//! (`now: Instant` for the local monotonic clock), so it is tested without a runtime.
//!
//! - **Freshness without another machine's clock.** [`Liveness`] remembers, on this silo's
//!   monotonic clock, when it last saw each other silo's heartbeat *change* (its sequence
//!   number or its stamp). A heartbeat is fresh if it changed within the window. The first
//!   time a silo is seen it gets the benefit of the doubt: it counts as fresh for one window
//!   (otherwise a silo that just started would think it alone can vote). A silo that never
//!   wrote a heartbeat is never fresh.
//! - **Voters** are the `Active` silos other than the suspect whose heartbeats are fresh,
//!   plus the silo that votes (it votes only while its own lease holds). A silo under
//!   suspicion still counts as a voter: suspicions must not shrink the electorate, or one
//!   silo cut off from the others could vote them out one by one.
//! - **Votes** count only if they are recent (`vote_expiry`) and cast by a voter: votes of
//!   dead, stale or unknown silos are ignored. A vote's age is the one comparison of wall
//!   clocks left (its stamp against this silo's clock): the expiry is a minute, so skews of
//!   seconds do not matter, and a vote that wrongly counts still needs the others.
//! - **Votes needed**: `votes_for_death`, or the number of voters if fewer (one in a two-silo
//!   cluster), and at least one.

use std::collections::HashMap;
use std::time::Duration;

use granary_core::SiloId;
use granary_core::provider::{Heartbeat, MembershipEntry, SiloStatus, Suspicion};
use tokio::time::Instant;

/// When this silo last saw each other silo's heartbeat change, on its own monotonic clock.
#[derive(Debug)]
pub(crate) struct Liveness {
    window: Duration,
    seen: HashMap<SiloId, Seen>,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    /// The heartbeat's sequence number and stamp, as last read.
    mark: (u64, u64),
    /// When they were first read with these values.
    changed: Instant,
}

impl Liveness {
    /// A heartbeat is fresh if it changed within `window` of now.
    pub(crate) fn new(window: Duration) -> Self {
        Self {
            window,
            seen: HashMap::new(),
        }
    }

    /// Records the heartbeats read at `now`.
    pub(crate) fn observe<'a>(
        &mut self,
        beats: impl IntoIterator<Item = (&'a SiloId, &'a Heartbeat)>,
        now: Instant,
    ) {
        for (silo, beat) in beats {
            let mark = (beat.seq, beat.at_ms);
            match self.seen.get_mut(silo) {
                Some(seen) if seen.mark == mark => {}
                Some(seen) => {
                    *seen = Seen { mark, changed: now };
                }
                None => {
                    self.seen.insert(silo.clone(), Seen { mark, changed: now });
                }
            }
        }
    }

    /// Whether `silo`'s heartbeat changed within the window before `now`.
    pub(crate) fn is_fresh(&self, silo: &SiloId, now: Instant) -> bool {
        self.seen
            .get(silo)
            .is_some_and(|seen| now.saturating_duration_since(seen.changed) <= self.window)
    }

    /// Forgets the silos not in `rows` (their rows were removed from the table).
    pub(crate) fn retain(&mut self, rows: &[MembershipEntry]) {
        self.seen
            .retain(|silo, _| rows.iter().any(|e| e.silo == *silo));
    }
}

/// The rules of a vote, from the cluster's configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rules {
    /// Votes that declare a silo dead (fewer if fewer silos can vote).
    pub(crate) votes_for_death: u32,
    /// How long a vote counts, in milliseconds.
    pub(crate) vote_expiry_ms: u64,
}

/// The outcome of adding one vote to a suspect's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tally {
    /// The votes to store in the row: the recent ones, this silo's replaced by the new one.
    pub(crate) votes: Vec<Suspicion>,
    /// Of those, how many count (cast by a voter).
    pub(crate) counted: usize,
    /// How many silos may vote against the suspect.
    pub(crate) voters: usize,
    /// How many counted votes declare it dead.
    pub(crate) needed: usize,
    /// Whether they do.
    pub(crate) dead: bool,
}

/// Adds `me`'s vote (stamped `now_ms`, the vote's wall-clock stamp) against `suspect`'s row,
/// given every row of the table and which silos' heartbeats are fresh.
pub(crate) fn tally(
    entries: &[MembershipEntry],
    suspect: &MembershipEntry,
    me: &SiloId,
    fresh: impl Fn(&SiloId) -> bool,
    rules: Rules,
    now_ms: u64,
) -> Tally {
    let is_voter = |silo: &SiloId| {
        *silo != suspect.silo
            && (*silo == *me
                || entries
                    .iter()
                    .any(|e| e.silo == *silo && e.status == SiloStatus::Active && fresh(silo)))
    };
    let voters = entries
        .iter()
        .filter(|e| e.silo != *me && is_voter(&e.silo))
        .count()
        + 1;
    let mut votes: Vec<Suspicion> = suspect
        .suspicions
        .iter()
        .filter(|v| now_ms.saturating_sub(v.at_ms) <= rules.vote_expiry_ms)
        .filter(|v| v.observer != *me)
        .cloned()
        .collect();
    votes.push(Suspicion {
        observer: me.clone(),
        at_ms: now_ms,
    });
    let counted = votes.iter().filter(|v| is_voter(&v.observer)).count();
    let needed = usize::try_from(rules.votes_for_death)
        .unwrap_or(usize::MAX)
        .min(voters)
        .max(1);
    Tally {
        votes,
        counted,
        voters,
        needed,
        dead: counted >= needed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: Rules = Rules {
        votes_for_death: 2,
        vote_expiry_ms: 60_000,
    };

    fn silo(name: &str) -> SiloId {
        SiloId::new(name, 1)
    }

    fn row(name: &str, status: SiloStatus) -> MembershipEntry {
        MembershipEntry::new(silo(name), format!("{name}:1"), status)
    }

    fn beat(seq: u64) -> Heartbeat {
        Heartbeat {
            seq,
            at_ms: seq * 1000,
            ..Heartbeat::default()
        }
    }

    /// Votes `me` against `suspect` in `rows` (everyone fresh), storing the vote.
    fn vote(rows: &mut [MembershipEntry], me: &str, suspect: &str, now_ms: u64) -> Tally {
        let i = rows
            .iter()
            .position(|e| e.silo == silo(suspect))
            .expect("the suspect has a row");
        let tally = tally(rows, &rows[i], &silo(me), |_| true, RULES, now_ms);
        rows[i].suspicions = tally.votes.clone();
        if tally.dead {
            rows[i].status = SiloStatus::Dead;
        }
        tally
    }

    #[test]
    fn one_silo_cut_off_from_the_others_cannot_vote_them_out() {
        // A lost its links to B and C but reaches the table: it suspects both, in turn,
        // round after round. B and C see each other, so they never vote.
        let mut rows = vec![
            row("a", SiloStatus::Active),
            row("b", SiloStatus::Active),
            row("c", SiloStatus::Active),
        ];
        for round in 0..5 {
            let t = 1_000 * round;
            let b = vote(&mut rows, "a", "b", t);
            let c = vote(&mut rows, "a", "c", t + 1);
            assert_eq!((b.voters, b.needed, b.counted, b.dead), (2, 2, 1, false));
            assert_eq!((c.voters, c.needed, c.counted, c.dead), (2, 2, 1, false));
        }
        assert!(rows.iter().all(|e| e.status == SiloStatus::Active));
        // B and C, which cannot reach A, declare A dead between them.
        assert!(!vote(&mut rows, "b", "a", 10_000).dead);
        assert!(vote(&mut rows, "c", "a", 10_001).dead);
    }

    #[test]
    fn one_vote_suffices_in_a_two_silo_cluster_but_suspicions_never_shrink_the_electorate() {
        let mut two = vec![row("a", SiloStatus::Active), row("b", SiloStatus::Active)];
        let t = vote(&mut two, "a", "b", 0);
        assert_eq!((t.voters, t.needed, t.dead), (1, 1, true));
        // Three silos, A suspected by C: A still counts as a voter against B.
        let mut three = vec![
            row("a", SiloStatus::Active),
            row("b", SiloStatus::Active),
            row("c", SiloStatus::Active),
        ];
        assert!(!vote(&mut three, "c", "a", 0).dead);
        let t = vote(&mut three, "c", "b", 1);
        assert_eq!((t.voters, t.needed, t.dead), (2, 2, false));
    }

    #[test]
    fn votes_of_dead_stale_or_expired_voters_are_ignored() {
        let mut rows = vec![
            row("a", SiloStatus::Active),
            row("b", SiloStatus::Active),
            row("c", SiloStatus::Active),
            row("d", SiloStatus::Dead),
        ];
        let suspect = 1;
        rows[suspect].suspicions = vec![
            // A dead silo's vote.
            Suspicion {
                observer: silo("d"),
                at_ms: 69_000,
            },
            // An old vote of C's.
            Suspicion {
                observer: silo("c"),
                at_ms: 0,
            },
        ];
        let now = 70_000;
        let t = tally(&rows, &rows[suspect], &silo("a"), |_| true, RULES, now);
        assert_eq!((t.counted, t.needed, t.dead), (1, 2, false), "{t:?}");
        assert!(t.votes.iter().all(|v| v.observer != silo("c")), "expired");
        // A recent vote of C's counts, unless C's heartbeat is stale: then C is no voter,
        // A alone is, and A's vote suffices (the honest cap: one live voter).
        rows[suspect].suspicions.push(Suspicion {
            observer: silo("c"),
            at_ms: now - 1,
        });
        let t = tally(&rows, &rows[suspect], &silo("a"), |_| true, RULES, now);
        assert_eq!((t.counted, t.dead), (2, true), "{t:?}");
        let only_a = |s: &SiloId| *s == silo("a");
        let t = tally(&rows, &rows[suspect], &silo("a"), only_a, RULES, now);
        assert_eq!(
            (t.voters, t.counted, t.needed, t.dead),
            (1, 1, 1, true),
            "{t:?}"
        );
    }

    #[test]
    fn a_heartbeat_is_fresh_while_it_changes_on_the_local_clock() {
        let window = Duration::from_secs(2);
        let mut liveness = Liveness::new(window);
        let start = Instant::now();
        let (a, b) = (silo("a"), silo("b"));
        assert!(!liveness.is_fresh(&a, start), "never seen");
        liveness.observe([(&a, &beat(1)), (&b, &beat(7))], start);
        // Seen for the first time: fresh for one window.
        assert!(liveness.is_fresh(&a, start + window));
        // A keeps beating, B's heartbeat stands still (whatever its stamp says).
        let later = start + Duration::from_secs(1);
        liveness.observe([(&a, &beat(2)), (&b, &beat(7))], later);
        let much_later = start + Duration::from_secs(3);
        liveness.observe([(&a, &beat(3)), (&b, &beat(7))], much_later);
        assert!(liveness.is_fresh(&a, much_later));
        assert!(!liveness.is_fresh(&b, much_later));
        // B beats again.
        liveness.observe([(&b, &beat(8))], much_later);
        assert!(liveness.is_fresh(&b, much_later));
        liveness.retain(&[row("a", SiloStatus::Active)]);
        assert!(!liveness.is_fresh(&b, much_later), "forgotten with its row");
    }
}

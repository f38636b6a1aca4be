//! Turn admission for one activation: pure logic, no runtime.
//!
//! Public so that other hosts of a grain share the very same rules: `granary-testkit`'s
//! `GrainTest` admits its turns with this [`Scheduler`], so `#[read_only]` turns overlap and
//! reentrant calls behave there as they do in a silo. It is not part of the facade (`granary`
//! does not re-export it): grain code never needs it.
//!
//! Decides whether a request may start now, waits in the queue, is a deadlocking cycle, or must
//! be routed elsewhere because the activation is closing. The rules:
//! - one exclusive turn at a time; read-only turns may overlap each other but not an exclusive
//!   one;
//! - a request on the call chain of a running turn that it reenters runs at once if the grain is
//!   reentrant, and fails as a cycle otherwise (it would wait forever);
//! - otherwise first come, first served: nothing overtakes a queued request.

use std::collections::VecDeque;

use granary_core::{ChainId, GrainId};

/// Life-cycle phase of an activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Claiming, loading, running `on_activate`: requests queue.
    Activating,
    /// Serving.
    Active,
    /// Running `on_deactivate` and unregistering: requests queue, then move to the next
    /// activation.
    Deactivating,
    /// Gone: requests go back to the router.
    Closed,
}

/// What a request needs to be admitted.
#[derive(Debug, Clone, Copy)]
pub struct Class<'a> {
    /// Whether the method is `#[read_only]` (may overlap other read-only turns).
    pub read_only: bool,
    /// The id of the request's call chain.
    pub chain_id: ChainId,
    /// The grains the call chain went through before this request.
    pub chain: &'a [GrainId],
}

/// The admission verdict.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// Start the turn now; `exclusive` tells how it was counted (pass it back to `finish`).
    Run {
        /// Whether the turn holds the activation exclusively.
        exclusive: bool,
    },
    /// Keep the request in the queue.
    Queue,
    /// Fail with a cycle error.
    Cycle,
    /// The activation is closed: route the request again.
    Reroute,
}

/// The admission state of one activation. `Q` is the queued item (a request; tests use ids).
#[derive(Debug)]
pub struct Scheduler<Q> {
    phase: Phase,
    queue: VecDeque<(Q, bool)>,
    running: u32,
    exclusive: bool,
    /// Chains of the running turns: the first inline (the usual case: one turn), the others in
    /// a vector that is only allocated when turns overlap.
    chain: Option<Chain>,
    more_chains: Vec<Chain>,
    /// Deactivate as soon as no turn runs (requested, conflict or panic).
    deactivate_pending: bool,
}

/// A [`ChainId`] as bytes. `ChainId` wraps a `u128`, which is aligned to 16 bytes: held in
/// place, it would pad the scheduler, and every activation around it, to that alignment (an
/// idle activation's size is what a silo of a million grains pays a million times).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Chain([u8; 16]);

impl From<ChainId> for Chain {
    fn from(id: ChainId) -> Self {
        Self(id.0.to_ne_bytes())
    }
}

impl<Q> Default for Scheduler<Q> {
    fn default() -> Self {
        Self::new()
    }
}

impl<Q> Scheduler<Q> {
    /// A scheduler in the `Activating` phase: requests queue until [`activate`](Self::activate).
    #[must_use]
    pub fn new() -> Self {
        Self {
            phase: Phase::Activating,
            queue: VecDeque::new(),
            running: 0,
            exclusive: false,
            chain: None,
            more_chains: Vec::new(),
            deactivate_pending: false,
        }
    }

    /// Number of turns running now.
    #[must_use]
    pub fn running(&self) -> u32 {
        self.running
    }

    /// The life-cycle phase.
    #[must_use]
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Requests waiting in the queue.
    #[must_use]
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Whether a deactivation waits for the running turns to end.
    #[must_use]
    pub fn deactivation_pending(&self) -> bool {
        self.deactivate_pending
    }

    /// Queues `item` (a request answered [`Admission::Queue`]); it starts, in arrival order,
    /// from [`next_runnable`](Self::next_runnable).
    pub fn enqueue(&mut self, item: Q, read_only: bool) {
        self.queue.push_back((item, read_only));
    }

    /// `Activating` → `Active` (activation done), then the queued requests that may start now,
    /// counted as started. A no-op returning nothing in any other phase.
    pub fn activate(&mut self, chain_of: impl Fn(&Q) -> ChainId) -> Vec<(Q, bool)> {
        if self.phase != Phase::Activating {
            return Vec::new();
        }
        self.phase = Phase::Active;
        self.next_runnable(chain_of)
    }

    /// Marks a deactivation as pending (a panic, a failed turn with unsaved state, a storage
    /// conflict): admission stops, and [`begin_deactivation`](Self::begin_deactivation) starts
    /// it once no turn runs.
    pub fn mark_deactivation(&mut self) {
        self.deactivate_pending = true;
    }

    /// Asks for a deactivation, as [`mark_deactivation`](Self::mark_deactivation), unless one
    /// is under way or the activation is closed: then returns false and changes nothing.
    pub fn request_deactivation(&mut self) -> bool {
        if matches!(self.phase, Phase::Deactivating | Phase::Closed) {
            return false;
        }
        self.deactivate_pending = true;
        true
    }

    /// `Active` → `Deactivating` if a deactivation is pending and no turn runs; returns whether
    /// it moved (then the caller runs the deactivation). Queued requests stay queued.
    pub fn begin_deactivation(&mut self) -> bool {
        if self.phase == Phase::Active && self.deactivate_pending && self.running == 0 {
            self.phase = Phase::Deactivating;
            return true;
        }
        false
    }

    /// Any phase → `Closed`: every later request is answered [`Admission::Reroute`]. Returns
    /// what was queued, in order, for the caller to route again or fail.
    pub fn close(&mut self) -> VecDeque<(Q, bool)> {
        self.phase = Phase::Closed;
        std::mem::take(&mut self.queue)
    }

    /// Whether the activation is active, idle and not about to deactivate: what idle
    /// collection may take.
    #[must_use]
    pub fn collectable(&self) -> bool {
        self.phase == Phase::Active && self.idle() && !self.deactivate_pending
    }

    /// Decides what happens to a request of class `class` for grain `me`; on `Run` the turn
    /// is counted as started.
    pub fn admit(&mut self, me: &GrainId, reentrant: bool, class: Class<'_>) -> Admission {
        if self.phase == Phase::Closed {
            return Admission::Reroute;
        }
        if self.runs_chain(class.chain_id) && class.chain.contains(me) {
            // A call back into a turn that waits on this very chain: running is the only way
            // it can complete.
            return if reentrant && self.phase != Phase::Activating {
                self.start(false, class.chain_id);
                Admission::Run { exclusive: false }
            } else {
                Admission::Cycle
            };
        }
        if self.phase != Phase::Active || self.deactivate_pending || !self.queue.is_empty() {
            return Admission::Queue;
        }
        if self.can_start(class.read_only) {
            self.start(!class.read_only, class.chain_id);
            Admission::Run {
                exclusive: !class.read_only,
            }
        } else {
            Admission::Queue
        }
    }

    /// Counts the activation's own lifecycle turn (`on_activate`, `on_deactivate`) on `chain`.
    pub fn start_lifecycle(&mut self, chain: ChainId) {
        self.start(true, chain);
    }

    fn can_start(&self, read_only: bool) -> bool {
        if read_only {
            !self.exclusive
        } else {
            self.running == 0
        }
    }

    fn runs_chain(&self, chain: ChainId) -> bool {
        let chain = Chain::from(chain);
        self.chain == Some(chain) || self.more_chains.contains(&chain)
    }

    fn start(&mut self, exclusive: bool, chain: ChainId) {
        let chain = Chain::from(chain);
        self.running += 1;
        self.exclusive |= exclusive;
        if self.chain.is_none() {
            self.chain = Some(chain);
        } else {
            self.more_chains.push(chain);
        }
    }

    /// Records the end of a turn started as `exclusive` on `chain`.
    pub fn finish(&mut self, exclusive: bool, chain: ChainId) {
        self.running -= 1;
        if exclusive {
            self.exclusive = false;
        }
        let chain = Chain::from(chain);
        if self.chain == Some(chain) {
            self.chain = self.more_chains.pop();
        } else if let Some(i) = self.more_chains.iter().position(|c| *c == chain) {
            self.more_chains.swap_remove(i);
        }
    }

    /// Takes the queued requests that may start now (the front exclusive one, or the run of
    /// read-only ones at the front), counting them as started.
    pub fn next_runnable(&mut self, chain_of: impl Fn(&Q) -> ChainId) -> Vec<(Q, bool)> {
        let mut out = Vec::new();
        while let Some(next) = self.pop_runnable(&chain_of) {
            out.push(next);
        }
        out
    }

    /// Takes the first of [`next_runnable`](Self::next_runnable)'s requests, if any, counting
    /// it as started: called until it answers `None`, it takes the same ones, one at a time
    /// and without collecting them.
    pub fn pop_runnable(&mut self, chain_of: impl Fn(&Q) -> ChainId) -> Option<(Q, bool)> {
        if self.phase != Phase::Active || self.deactivate_pending {
            return None;
        }
        let read_only = self.queue.front()?.1;
        if !self.can_start(read_only) {
            return None;
        }
        let (item, ro) = self.queue.pop_front().expect("front exists");
        if self.queue.is_empty() {
            // Give the buffer back: an idle activation should cost no queue memory.
            self.queue = VecDeque::new();
        }
        self.start(!read_only, chain_of(&item));
        Some((item, ro))
    }

    /// Whether the activation is idle: nothing running, nothing queued.
    #[must_use]
    pub fn idle(&self) -> bool {
        self.running == 0 && self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests;

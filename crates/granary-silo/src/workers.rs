//! [`WorkerPool`]: the activations of one stateless worker key on this silo
//! (`#[grain(stateless_worker)]`, Orleans' `[StatelessWorker]`).
//!
//! The catalog holds a pool where it holds an ordinary grain's activation: one entry per key.
//! The pool holds up to `max` activations (workers) of the key, each an ordinary `Activation`
//! with its own scheduler, turns and timers, but no claim and no state. A request goes to an
//! idle worker; with none idle, to a new one while the pool is under `max`; at `max`, into the
//! queue of the worker with the least work (each worker's queue is bounded by
//! `max_queued_requests`, as an ordinary grain's, and refuses with `QueueFull` beyond it).
//! A worker that closes (idle collection, a panic, shutdown) leaves the pool; the last one to
//! leave removes the pool from the catalog, and a request that meets a closed pool is routed
//! again, which creates a new one.
//!
//! Calls from many threads meet here, so the common case takes no exclusive lock: under the
//! list's read lock, a request tries the workers in turn, starting from a worker of its
//! thread's own (so two threads do not start at the same one), and runs on the first that can
//! start it at once. Only when none can (all busy, or none yet) does it take the write lock to
//! add a worker or to queue behind the least busy one.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::RwLock;

use granary_core::{ActivationHost, ActivationId, Grain, GrainId};

use crate::activation::{Activation, ActivationEntry, Pool, Routed, TurnReply};
use crate::events::DeactivationReason;
use crate::request::Request;
use crate::shared::Shared;

/// Creates a stateless worker's grain value for each new worker.
pub(crate) type MakeGrain<G> = Arc<dyn Fn(&GrainId) -> G + Send + Sync>;

/// The workers of one stateless worker key on this silo.
pub(crate) struct WorkerPool<G: Grain> {
    id: GrainId,
    /// The pool's own id: the catalog entry's, which no worker has.
    pool_id: ActivationId,
    max: usize,
    shared: Arc<Shared>,
    host: Arc<dyn ActivationHost>,
    make: MakeGrain<G>,
    workers: RwLock<Workers<G>>,
    me: Weak<Self>,
}

struct Workers<G: Grain> {
    list: Vec<Arc<Activation<G>>>,
    /// The last worker left: the pool is out of the catalog and takes no request.
    closed: bool,
    /// The whole key is being deactivated (on request, or the silo stops): no new worker;
    /// requests wait in the closing workers' queues and are routed again when they close.
    draining: bool,
}

impl<G: Grain> WorkerPool<G> {
    /// An empty pool for `id`, with at most `max` workers (at least 1); its first request
    /// creates its first worker.
    pub(crate) fn new(
        id: GrainId,
        max: usize,
        shared: &Arc<Shared>,
        host: Arc<dyn ActivationHost>,
        make: MakeGrain<G>,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            id,
            pool_id: ActivationId::new(),
            max: max.max(1),
            shared: shared.clone(),
            host,
            make,
            workers: RwLock::new(Workers {
                list: Vec::new(),
                closed: false,
                draining: false,
            }),
            me: me.clone(),
        })
    }

    /// The worker `req` goes to, and whether it was created for it (the caller starts it once
    /// the request is delivered). `None` once the pool closed.
    fn choose(&self, workers: &mut Workers<G>) -> Option<(Arc<Activation<G>>, bool)> {
        if workers.closed {
            return None;
        }
        let mut least: Option<(&Arc<Activation<G>>, bool, usize)> = None;
        for worker in &workers.list {
            let Some((serving, load)) = worker.load() else {
                continue; // closed: it is leaving the pool
            };
            if serving && load == 0 {
                return Some((worker.clone(), false));
            }
            // Least work first, a serving worker before one that is (de)activating.
            let better = least.is_none_or(|(_, s, l)| (!serving, load) < (!s, l));
            if better {
                least = Some((worker, serving, load));
            }
        }
        if workers.list.len() < self.max && !workers.draining {
            let me: Weak<dyn Pool> = self.me.clone();
            let grain = (self.make)(&self.id);
            let worker =
                Activation::new_worker(grain, self.id.clone(), &self.shared, self.host.clone(), me);
            if !workers.list.is_empty() {
                self.shared.count_extra_workers(1);
            }
            workers.list.push(worker.clone());
            return Some((worker, true));
        }
        least.map(|(worker, _, _)| (worker.clone(), false))
    }
}

impl<G: Grain> WorkerPool<G> {
    /// Runs `req` on a worker that can start it at once, trying each once from this thread's
    /// own starting point, under the shared lock; hands it back when none can.
    #[allow(
        clippy::result_large_err,
        reason = "the request is handed back by value to be routed again"
    )]
    fn try_free_worker(&self, mut req: Request, inline: bool) -> Result<Routed, Request> {
        let workers = self.workers.read();
        let n = workers.list.len();
        if workers.closed || n == 0 {
            return Err(req);
        }
        let first = thread_slot() % n;
        for i in 0..n {
            let worker = workers.list[(first + i) % n].clone();
            match worker.admit_request(req, inline, false) {
                Ok(routed) => return Ok(routed),
                Err(back) => req = back,
            }
        }
        Err(req)
    }
}

/// The current thread's slot: threads take consecutive numbers as they first deliver to a
/// pool, so the runtime's worker threads start their search at different workers.
fn thread_slot() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SLOT: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    SLOT.with(|s| *s)
}

impl<G: Grain> Pool for WorkerPool<G> {
    fn leave(&self, activation: ActivationId) {
        let emptied = {
            let mut workers = self.workers.write();
            let Some(i) = workers
                .list
                .iter()
                .position(|w| w.activation_id() == activation)
            else {
                return;
            };
            workers.list.swap_remove(i);
            if workers.list.is_empty() {
                workers.closed = true;
                true
            } else {
                self.shared.count_extra_workers(-1);
                false
            }
        };
        if emptied && let Some(home) = self.shared.home() {
            home.remove(&self.id, self.pool_id);
        }
    }
}

impl<G: Grain> ActivationEntry for WorkerPool<G> {
    fn activation_id(&self) -> ActivationId {
        self.pool_id
    }

    fn queued(&self) -> usize {
        let workers = self.workers.read().list.clone();
        workers.iter().map(|w| w.queued()).sum()
    }

    fn start(self: Arc<Self>) {
        // Each worker starts when it is created (in `deliver`).
    }

    fn deliver(self: Arc<Self>, mut req: Request, inline: bool) -> Result<Routed, Request> {
        // The common case: a worker that can start the request now.
        req = match self.try_free_worker(req, inline) {
            Ok(routed) => return Ok(routed),
            Err(req) => req,
        };
        // A worker that closed between the choice and the delivery hands the request back;
        // the next choice skips it. Bounded: each try either delivers or finds one more closed
        // worker, and the list is at most `max` long.
        for _ in 0..=self.max {
            let (worker, created) = {
                let mut workers = self.workers.write();
                match self.choose(&mut workers) {
                    Some(chosen) => chosen,
                    None => return Err(req),
                }
            };
            match worker.clone().deliver(req, inline) {
                Ok(routed) => {
                    if created {
                        worker.start();
                    }
                    return Ok(routed);
                }
                Err(back) => req = back,
            }
        }
        Err(req)
    }

    fn idle_for(&self, now_epoch: u64) -> Option<u64> {
        let workers = self.workers.read().list.clone();
        workers.iter().filter_map(|w| w.idle_for(now_epoch)).max()
    }

    fn collect_idle(self: Arc<Self>, now_epoch: u64, passes: u64) {
        let workers = self.workers.read().list.clone();
        for worker in workers {
            worker.collect_idle(now_epoch, passes);
        }
    }

    fn request_deactivation(self: Arc<Self>, reason: DeactivationReason) {
        let (workers, emptied) = {
            let mut workers = self.workers.write();
            workers.draining = true;
            // A pool that never got its first worker has nobody to take it out of the catalog.
            let emptied = workers.list.is_empty() && !workers.closed;
            workers.closed |= emptied;
            (workers.list.clone(), emptied)
        };
        if emptied && let Some(home) = self.shared.home() {
            home.remove(&self.id, self.pool_id);
        }
        for worker in workers {
            worker.request_deactivation(reason);
        }
    }

    fn set_timer(self: Arc<Self>, name: &str, due: Duration, period: Option<Duration>) {
        // Timers belong to one worker, found through `worker`; the pool has none.
        let _ = (name, due, period);
    }

    fn cancel_timer(&self, name: &str) {
        let _ = name;
    }

    fn detach(&self, turn: BoxFuture<'static, TurnReply>) {
        // Inline turns are handed out by a worker, which detaches them itself.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            self.shared.tracker().spawn_on(turn, &handle);
        }
    }

    fn activations(&self) -> usize {
        self.workers.read().list.len()
    }

    fn worker(&self, activation: ActivationId) -> Option<Arc<dyn ActivationEntry>> {
        let workers = self.workers.read();
        let worker = workers
            .list
            .iter()
            .find(|w| w.activation_id() == activation)?;
        Some(worker.clone())
    }
}

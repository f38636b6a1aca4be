//! The reminder service: one task per silo that fires the durable reminders of the shards the
//! silo owns.
//!
//! It holds no task and no timer per reminder: every `reminder_scan_interval` it reads from
//! the store's [`ReminderTable`] the reminders due within two intervals in the shards it owns
//! (rendezvous hashing over membership, as the event relay's outbox shards), keeps them in one
//! heap by due time, and sleeps until the earliest is due, the next scan, a hint (a reminder
//! of an owned shard set by a commit on this silo) or a finished tick, whichever comes first.
//!
//! Lateness is kept to the timer's: a scan reads one page at a time while ticks go out (a
//! scan of tens of thousands of reminders, or a store's round trips, never holds a due tick
//! back), the sleep ends at the earliest due time to the nanosecond of the wall clock (not from
//! the millisecond it was cut to), and the hints and finished ticks that queued up while the
//! loop was busy are handled in one pass.
//!
//! A tick is a call to the grain through the ordinary call path
//! ([`REMINDER_METHOD`]), so the grain is activated wherever placement says. The grain's side
//! delivers each due time once: a tick older than the stored next due was delivered already
//! and is answered with the next due, and the advance commits with the grain's fenced commit.
//! So two silos that both believe they own a shard (during a hand-over) cost a redundant call,
//! never a double delivery. A tick whose call failed is tried again after `reminder_retry`;
//! the ticks missed meanwhile are reported to the grain as `missed`.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use futures::future::BoxFuture;
use tokio::sync::{Semaphore, mpsc};

use granary_core::provider::{DueReminder, ReminderTable, unix_ms};
use granary_core::{CallError, GrainId, GrainRef, REMINDER_METHOD, StorageError};

use crate::router::Router;
use crate::shared::ReminderHint;

/// Which shards this silo owns, as the silo computes it.
pub(crate) type ShardOwner = Arc<dyn Fn(u32) -> bool + Send + Sync>;

/// Reads per page of a shard's due reminders.
const PAGE: usize = 2_048;

/// A reminder the service will fire: which tick, and when to send it.
#[derive(Debug)]
struct Slot {
    grain: GrainId,
    name: String,
    /// The tick's due time (ms since the Unix epoch).
    due_ms: u64,
    /// Sent and not answered yet.
    in_flight: bool,
}

/// What a finished tick reports back to the loop.
struct Fired {
    seq: u64,
    result: Result<Option<u64>, CallError>,
}

/// The service's schedule: the heap by send time, and each reminder's one slot.
#[derive(Default)]
struct Schedule {
    heap: BinaryHeap<Reverse<(u64, u64)>>,
    slots: HashMap<u64, Slot>,
    by_key: HashMap<(GrainId, String), u64>,
    next_seq: u64,
}

impl Schedule {
    /// Schedules `grain`'s reminder `name` to send its tick due at `due_ms` at `at_ms`,
    /// replacing what was scheduled for it.
    fn put(&mut self, grain: GrainId, name: String, due_ms: u64, at_ms: u64) {
        let key = (grain, name);
        if let Some(old) = self.by_key.remove(&key) {
            self.slots.remove(&old);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Reverse((at_ms, seq)));
        self.by_key.insert(key.clone(), seq);
        self.slots.insert(
            seq,
            Slot {
                grain: key.0,
                name: key.1,
                due_ms,
                in_flight: false,
            },
        );
    }

    /// Schedules `grain`'s reminder `name` to send its tick due at `due_ms` then, unless it is
    /// scheduled already (a scan or a hint finding what a tick's reply scheduled).
    fn put_new(&mut self, grain: GrainId, name: String, due_ms: u64) {
        let key = (grain, name);
        if self.by_key.contains_key(&key) {
            return;
        }
        self.put(key.0, key.1, due_ms, due_ms);
    }

    #[cfg(test)]
    fn contains(&self, grain: &GrainId, name: &str) -> bool {
        self.by_key.contains_key(&(grain.clone(), name.to_owned()))
    }

    fn remove(&mut self, seq: u64) -> Option<Slot> {
        let slot = self.slots.remove(&seq)?;
        self.by_key.remove(&(slot.grain.clone(), slot.name.clone()));
        Some(slot)
    }

    /// The send time of the earliest live entry, dropping stale heap entries on the way.
    fn next_at(&mut self) -> Option<u64> {
        while let Some(Reverse((at, seq))) = self.heap.peek().copied() {
            if self.slots.get(&seq).is_some_and(|s| !s.in_flight) {
                return Some(at);
            }
            self.heap.pop();
        }
        None
    }
}

/// Runs the reminder service of the silo until its shutdown; returns at once if the store
/// keeps no reminders.
pub(crate) async fn run(router: Arc<Router>, owns: ShardOwner) {
    let shared = router.shared().clone();
    let store = shared.store().clone();
    let Some(table) = store.reminders() else {
        return;
    };
    let config = shared.config();
    let scan_every = config.reminder_scan_interval.max(Duration::from_millis(10));
    let lookahead = millis(scan_every) * 2;
    let retry = millis(config.reminder_retry);
    let permits = Arc::new(Semaphore::new(config.max_reminder_ticks_in_flight.max(1)));
    let (hint_tx, mut hints) = mpsc::channel::<ReminderHint>(4_096);
    shared.set_reminder_hints(hint_tx);
    let (fired_tx, mut fired) = mpsc::channel::<Fired>(config.max_reminder_ticks_in_flight.max(1));
    let stop = shared.shutdown().child_token();
    let mut schedule = Schedule::default();
    let mut scan: Option<Scan<'_>> = None;
    let mut next_scan = 0u64;
    loop {
        let clock = shared.clock().now();
        let now = unix_ms(clock);
        if scan.is_none() && now >= next_scan {
            scan = Scan::start(table, &*owns, now + lookahead);
            next_scan = now + millis(scan_every);
        }
        // Send what is due, as far as the in-flight bound allows.
        while let Some(at) = schedule.next_at() {
            if at > now {
                break;
            }
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                break;
            };
            let Some(Reverse((_, seq))) = schedule.heap.pop() else {
                break;
            };
            let Some(slot) = schedule.slots.get_mut(&seq) else {
                continue;
            };
            slot.in_flight = true;
            let reference = GrainRef::new(slot.grain.clone(), shared.invoker());
            let args = (slot.name.clone(), slot.due_ms);
            let done = fired_tx.clone();
            shared.spawn(async move {
                let result = reference.call::<Option<u64>>(&REMINDER_METHOD, args).await;
                drop(permit);
                let _ = done.send(Fired { seq, result }).await;
            });
        }
        let wake_at = schedule
            .next_at()
            .filter(|_| permits.available_permits() > 0)
            .map_or(next_scan, |at| at.min(next_scan));
        // To the nanosecond of the wall clock, not from the millisecond `now` was cut to: a
        // tick is sent as soon as its due millisecond has begun.
        let sleep = (UNIX_EPOCH + Duration::from_millis(wake_at))
            .duration_since(clock)
            .unwrap_or_default();
        // A scan reads its pages while ticks go out: reading never holds a tick back.
        let scanning = scan.is_some();
        let page = async {
            match scan.as_mut() {
                Some(scan) => scan.page.as_mut().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(sleep) => {}
            page = page, if scanning => {
                if let Some(current) = scan.take() {
                    scan = current.next(page, &*owns, &mut schedule);
                }
            }
            Some(hint) = hints.recv() => {
                // Only for shards this silo owns: the owner of another shard finds the
                // reminder at its next scan, and a second sender would only cost calls.
                let horizon = unix_ms(shared.clock().now()) + lookahead;
                let mut next = Some(hint);
                while let Some((grain, name, due_ms)) = next {
                    if due_ms <= horizon && owns(table.reminder_shard_of(&grain)) {
                        schedule.put_new(grain, name, due_ms);
                    }
                    next = hints.try_recv().ok();
                }
            }
            Some(done) = fired.recv() => {
                let now = unix_ms(shared.clock().now());
                let window = Window { now, lookahead, retry };
                let mut next = Some(done);
                while let Some(Fired { seq, result }) = next {
                    settle(&mut schedule, seq, result, table, &*owns, &window);
                    next = fired.try_recv().ok();
                }
            }
        }
    }
}

/// A scan of the owned shards' reminders due by `until`, one page at a time.
struct Scan<'t> {
    table: &'t dyn ReminderTable,
    until: u64,
    shard: u32,
    offset: usize,
    page: BoxFuture<'t, Result<Vec<DueReminder>, StorageError>>,
}

impl<'t> Scan<'t> {
    /// Starts reading the reminders due by `until` from the first shard this silo owns
    /// (`None`: it owns none).
    fn start(
        table: &'t dyn ReminderTable,
        owns: &(dyn Fn(u32) -> bool + Send + Sync),
        until: u64,
    ) -> Option<Self> {
        let shard = (0..table.reminder_shards()).find(|s| owns(*s))?;
        Some(Self {
            table,
            until,
            shard,
            offset: 0,
            page: table.due(shard, until, 0, PAGE),
        })
    }

    /// Puts a page read into the schedule (the reminders not scheduled already) and asks for
    /// the next one: more of the same shard, or the next owned shard (`None`: done).
    fn next(
        self,
        page: Result<Vec<DueReminder>, StorageError>,
        owns: &(dyn Fn(u32) -> bool + Send + Sync),
        schedule: &mut Schedule,
    ) -> Option<Self> {
        let Self {
            table,
            until,
            shard,
            offset,
            ..
        } = self;
        let more = match page {
            Ok(page) => {
                let more = page.len() >= PAGE;
                let offset = offset + page.len();
                for due in page {
                    schedule.put_new(due.grain, due.name, due.due_ms);
                }
                more.then_some(offset)
            }
            Err(err) => {
                tracing::warn!(shard, cause = %err, "could not read due reminders; next scan tries again");
                None
            }
        };
        let (shard, offset) = match more {
            Some(offset) => (shard, offset),
            None => ((shard + 1..table.reminder_shards()).find(|s| owns(*s))?, 0),
        };
        Some(Self {
            table,
            until,
            shard,
            offset,
            page: table.due(shard, until, offset, PAGE),
        })
    }
}

/// The times a finished tick is settled against, in milliseconds since the Unix epoch (`now`)
/// or in milliseconds (the spans).
struct Window {
    /// The silo clock's time now.
    now: u64,
    /// How far ahead of `now` the schedule holds reminders (two scan intervals).
    lookahead: u64,
    /// How long after a failed tick it is sent again.
    retry: u64,
}

/// Handles a finished tick: schedule the reminder's next tick if it is due soon and this silo
/// owns its shard (else the next scan finds it), or the same tick again after a failure.
fn settle(
    schedule: &mut Schedule,
    seq: u64,
    result: Result<Option<u64>, CallError>,
    table: &dyn ReminderTable,
    owns: &(dyn Fn(u32) -> bool + Send + Sync),
    window: &Window,
) {
    let Window {
        now,
        lookahead,
        retry,
    } = *window;
    let Some(slot) = schedule.remove(seq) else {
        return;
    };
    match result {
        Ok(Some(next)) => {
            if next <= now + lookahead && owns(table.reminder_shard_of(&slot.grain)) {
                schedule.put(slot.grain, slot.name, next, next);
            }
        }
        Ok(None) => {} // unregistered
        Err(err) => {
            tracing::debug!(grain = %slot.grain, reminder = %slot.name, cause = %err, "reminder tick failed; trying again");
            schedule.put(slot.grain, slot.name, slot.due_ms, now + retry);
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;

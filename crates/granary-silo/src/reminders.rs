//! The reminder service: one task per silo that fires the durable reminders of the shards the
//! silo owns.
//!
//! It holds no task and no timer per reminder: every `reminder_scan_interval` it reads from
//! the store's [`ReminderTable`] the reminders due within two intervals in the shards it owns
//! (rendezvous hashing over membership, as the event relay's outbox shards), keeps them in one
//! heap by due time, and sleeps until the earliest is due, the next scan, a hint (a reminder
//! of an owned shard set by a commit on this silo) or a finished tick, whichever comes first.
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
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};

use granary_core::provider::{ReminderTable, unix_ms};
use granary_core::{CallError, GrainId, GrainRef, REMINDER_METHOD};

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
    let mut next_scan = 0u64;
    loop {
        let now = unix_ms(shared.clock().now());
        if now >= next_scan {
            // Cancellable: with the store unreachable a scan takes its command deadlines.
            tokio::select! {
                () = stop.cancelled() => return,
                () = scan(table, &*owns, now + lookahead, &mut schedule) => {}
            }
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
        let sleep = Duration::from_millis(wake_at.saturating_sub(now));
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(sleep) => {}
            Some((grain, name, due_ms)) = hints.recv() => {
                // Only for shards this silo owns: the owner of another shard finds the
                // reminder at its next scan, and a second sender would only cost calls.
                let horizon = unix_ms(shared.clock().now()) + lookahead;
                if due_ms <= horizon
                    && owns(table.reminder_shard_of(&grain))
                    && !schedule.contains(&grain, &name)
                {
                    schedule.put(grain, name, due_ms, due_ms);
                }
            }
            Some(Fired { seq, result }) = fired.recv() => {
                let now = unix_ms(shared.clock().now());
                let window = Window { now, lookahead, retry };
                settle(&mut schedule, seq, result, table, &*owns, &window);
            }
        }
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

/// Reads the reminders due by `until` of every shard this silo owns into the schedule (those
/// not scheduled already).
async fn scan(
    table: &dyn ReminderTable,
    owns: &(dyn Fn(u32) -> bool + Send + Sync),
    until: u64,
    schedule: &mut Schedule,
) {
    for shard in 0..table.reminder_shards() {
        if !owns(shard) {
            continue;
        }
        let mut offset = 0;
        loop {
            let page = match table.due(shard, until, offset, PAGE).await {
                Ok(page) => page,
                Err(err) => {
                    tracing::warn!(shard, cause = %err, "could not read due reminders; next scan tries again");
                    break;
                }
            };
            offset += page.len();
            let last = page.len() < PAGE;
            for due in page {
                if !schedule.contains(&due.grain, &due.name) {
                    schedule.put(due.grain, due.name, due.due_ms, due.due_ms);
                }
            }
            if last {
                break;
            }
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;

//! [`MemoryStore`]: state, outbox and directory in process memory.

use std::collections::VecDeque;
use std::fmt;

use dashmap::DashMap;
use futures::future::{BoxFuture, FutureExt, ready};
use parking_lot::Mutex;

use granary_core::provider::{
    Claim, Commit, DeadLetter, DueReminder, EventId, GrainAddress, GrainDirectory, Loaded, Outbox,
    OutboxEntry, OutboxPosition, Reminder, ReminderChange, ReminderTable, StateChange, StateStore,
};
use granary_core::{ActivationId, BuildGrainIdHasher, GrainId, SiloId, StorageError};

/// One grain's record. Every grain the store has seen keeps one, in a map whose buckets are
/// as large as a record: the rare parts are boxed and the owner does not repeat the grain (the
/// map's key), which keeps a million idle grains' records small.
#[derive(Debug, Default)]
struct Record {
    /// The owning activation: its silo and its id.
    owner: Option<(SiloId, ActivationId)>,
    data: Option<Box<[u8]>>,
    version: u64,
    /// The grain's reminders by name, each with its key in the due index; `None` while it has
    /// none.
    reminders: Option<Box<GrainReminders>>,
}

/// A grain's reminders by name, each with its key (next due, sequence) in the due index.
type GrainReminders = std::collections::BTreeMap<String, (Reminder, (u64, u64))>;

impl Record {
    /// Whether `address` (of this record's grain) is the owner.
    fn owned_by(&self, address: &GrainAddress) -> bool {
        self.owner.as_ref().is_some_and(|(silo, activation)| {
            *silo == address.silo && *activation == address.activation
        })
    }

    /// The owner's address; `grain` is this record's grain.
    fn owner_address(&self, grain: &GrainId) -> Option<GrainAddress> {
        self.owner.as_ref().map(|(silo, activation)| GrainAddress {
            grain: grain.clone(),
            silo: silo.clone(),
            activation: *activation,
        })
    }
}

/// Grain state with versioned, fenced commits, a transactional outbox and the grain directory,
/// all in memory.
pub struct MemoryStore {
    /// `memory.<random>`: the origin of this store's event ids.
    origin: std::sync::Arc<str>,
    grains: DashMap<GrainId, Record, BuildGrainIdHasher>,
    outbox: Mutex<VecDeque<OutboxEntry>>,
    outbox_seq: std::sync::atomic::AtomicU64,
    /// The dead-letter stream (one shard): each entry as it left the outbox, its reason, and
    /// when it was set aside.
    dead: Mutex<VecDeque<(DeadLetter, OutboxEntry)>>,
    /// Wakes a relay waiting for new entries.
    appended: tokio::sync::Notify,
    /// Every reminder by (next due, sequence): the one reminder shard's index.
    due: Mutex<std::collections::BTreeMap<(u64, u64), (GrainId, String)>>,
    due_seq: std::sync::atomic::AtomicU64,
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("grains", &self.grains.len())
            .finish_non_exhaustive()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self {
            origin: format!("memory.{}", granary_core::ActivationId::new().0.simple()).into(),
            grains: DashMap::default(),
            outbox: Mutex::default(),
            outbox_seq: std::sync::atomic::AtomicU64::default(),
            dead: Mutex::default(),
            appended: tokio::sync::Notify::default(),
            due: Mutex::default(),
            due_seq: std::sync::atomic::AtomicU64::default(),
        }
    }
}

impl MemoryStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The origin of this store's event ids (`memory.<random>`): see
    /// [`EventId::origin`](granary_core::provider::EventId::origin).
    #[must_use]
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The stored state bytes and version of `grain` (for tests and tools).
    #[must_use]
    pub fn stored(&self, grain: &GrainId) -> Option<(Option<Vec<u8>>, u64)> {
        self.grains
            .get(grain)
            .map(|r| (r.data.as_deref().map(<[u8]>::to_vec), r.version))
    }

    /// Writes raw state bytes for `grain` outside any activation (tests: seed or corrupt data).
    pub fn put_raw(&self, grain: &GrainId, data: Vec<u8>) {
        let mut record = self.grains.entry(grain.clone()).or_default();
        record.data = Some(data.into_boxed_slice());
        record.version += 1;
    }

    /// All committed events still in the outbox, oldest first.
    #[must_use]
    pub fn outbox_entries(&self) -> Vec<OutboxEntry> {
        self.outbox.lock().iter().cloned().collect()
    }

    /// The next entry id of the outbox or the dead-letter stream (one sequence for both).
    fn next_entry(&self) -> String {
        self.outbox_seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .to_string()
    }

    fn owned_by(record: &Record, activation: ActivationId) -> bool {
        record
            .owner
            .as_ref()
            .is_some_and(|(_, owner)| *owner == activation)
    }

    fn apply(&self, commit: Commit) -> Result<u64, StorageError> {
        let mut record = self.grains.entry(commit.grain.clone()).or_default();
        if !Self::owned_by(&record, commit.activation) {
            return Err(StorageError::NotOwner);
        }
        if record.version != commit.expected_version {
            return Err(StorageError::Conflict {
                expected: commit.expected_version,
                actual: record.version,
            });
        }
        let version = record.version + 1;
        match commit.change {
            StateChange::Write(data) => record.data = Some(data.into_boxed_slice()),
            StateChange::Clear => record.data = None,
            StateChange::Unchanged => {}
        }
        record.version = version;
        if !commit.reminders.is_empty() {
            let mut due = self.due.lock();
            for change in commit.reminders {
                let name = match &change {
                    ReminderChange::Set(r) => r.name.clone(),
                    ReminderChange::Remove(name) => name.clone(),
                };
                if let Some((_, key)) = record.reminders.as_mut().and_then(|r| r.remove(&name)) {
                    due.remove(&key);
                }
                if let ReminderChange::Set(reminder) = change {
                    let seq = self
                        .due_seq
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let key = (reminder.next_due_ms, seq);
                    due.insert(key, (commit.grain.clone(), name.clone()));
                    record
                        .reminders
                        .get_or_insert_default()
                        .insert(name, (reminder, key));
                }
            }
            if record.reminders.as_ref().is_some_and(|r| r.is_empty()) {
                record.reminders = None;
            }
        }
        // The outbox append happens under the record's lock: no reader sees the state without
        // its events or the other way round.
        let mut outbox = self.outbox.lock();
        for (index, event) in commit.events.into_iter().enumerate() {
            let index = u32::try_from(index)
                .map_err(|_| StorageError::Serialize("too many events in one commit".into()))?;
            let seq = self.next_entry();
            outbox.push_back(OutboxEntry {
                id: EventId {
                    origin: self.origin.clone(),
                    grain: commit.grain.clone(),
                    version,
                    index,
                },
                event,
                position: OutboxPosition {
                    shard: 0,
                    entry: seq,
                },
                committed_ms: now_ms(),
            });
        }
        drop(outbox);
        // `notify_one` keeps a permit when no relay waits yet: a commit that lands between a
        // relay's last read and its wait wakes it at once.
        self.appended.notify_one();
        Ok(version)
    }
}

impl StateStore for MemoryStore {
    fn claim(
        &self,
        address: &GrainAddress,
        replace: Option<&GrainAddress>,
    ) -> BoxFuture<'_, Result<Claim, StorageError>> {
        let mut record = self.grains.entry(address.grain.clone()).or_default();
        let replaceable = match replace {
            None => record.owner.is_none(),
            Some(replace) => {
                record.owner.is_none()
                    || (replace.grain == address.grain && record.owned_by(replace))
            }
        };
        if replaceable {
            record.owner = Some((address.silo.clone(), address.activation));
        }
        let claim = if record.owned_by(address) {
            Claim::Won(Loaded {
                data: record.data.as_deref().map(<[u8]>::to_vec),
                version: record.version,
            })
        } else {
            Claim::Owned(
                record
                    .owner_address(&address.grain)
                    .expect("an owner was just set or kept"),
            )
        };
        ready(Ok(claim)).boxed()
    }

    fn commit(&self, commit: Commit) -> BoxFuture<'_, Result<u64, StorageError>> {
        ready(self.apply(commit)).boxed()
    }

    fn reminders(&self) -> Option<&dyn ReminderTable> {
        Some(self)
    }
}

/// One reminder shard: the store is one process's memory.
impl ReminderTable for MemoryStore {
    fn reminder_shards(&self) -> u32 {
        1
    }

    fn reminder_shard_of(&self, _grain: &GrainId) -> u32 {
        0
    }

    fn reminders_of<'a>(
        &'a self,
        grain: &'a GrainId,
    ) -> BoxFuture<'a, Result<Vec<Reminder>, StorageError>> {
        let found = self
            .grains
            .get(grain)
            .map(|r| {
                r.reminders
                    .iter()
                    .flat_map(|m| m.values())
                    .map(|(r, _)| r.clone())
                    .collect()
            })
            .unwrap_or_default();
        ready(Ok(found)).boxed()
    }

    fn due(
        &self,
        shard: u32,
        until_ms: u64,
        offset: usize,
        max: usize,
    ) -> BoxFuture<'_, Result<Vec<DueReminder>, StorageError>> {
        if shard != 0 {
            return ready(Ok(Vec::new())).boxed();
        }
        let found = self
            .due
            .lock()
            .range(..=(until_ms, u64::MAX))
            .skip(offset)
            .take(max)
            .map(|(&(due_ms, _), (grain, name))| DueReminder {
                grain: grain.clone(),
                name: name.clone(),
                due_ms,
            })
            .collect();
        ready(Ok(found)).boxed()
    }
}

impl Outbox for MemoryStore {
    fn pending(&self, max: usize) -> BoxFuture<'_, Result<Vec<OutboxEntry>, StorageError>> {
        ready(Ok(self.outbox.lock().iter().take(max).cloned().collect())).boxed()
    }

    fn shards(&self) -> u32 {
        1
    }

    fn wait_for_entries<'a>(
        &'a self,
        _shards: &'a [u32],
        timeout: std::time::Duration,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let _ = tokio::time::timeout(timeout, self.appended.notified()).await;
        })
    }

    fn pending_in(
        &self,
        shard: u32,
        max: usize,
    ) -> BoxFuture<'_, Result<Vec<OutboxEntry>, StorageError>> {
        let entries = if shard == 0 {
            self.outbox.lock().iter().take(max).cloned().collect()
        } else {
            Vec::new()
        };
        ready(Ok(entries)).boxed()
    }

    fn pending_in_after<'a>(
        &'a self,
        shard: u32,
        held: &'a [OutboxPosition],
        max: usize,
    ) -> BoxFuture<'a, Result<Vec<OutboxEntry>, StorageError>> {
        let entries = if shard == 0 {
            let outbox = self.outbox.lock();
            // Entry ids count up along the outbox (they are taken under its lock, and a
            // re-driven entry gets a new one at the end): what comes after the last held entry
            // is what is not held. Only that is copied.
            let from = held.last().map_or(0, |last| {
                let last = entry_seq(last);
                outbox.partition_point(|e| entry_seq(&e.position) <= last)
            });
            outbox.range(from..).take(max).cloned().collect()
        } else {
            Vec::new()
        };
        ready(Ok(entries)).boxed()
    }

    fn ack(&self, entries: &[OutboxPosition]) -> BoxFuture<'_, Result<(), StorageError>> {
        let mut outbox = self.outbox.lock();
        // A relay acknowledges the oldest entries in commit order: take them off the front,
        // comparing in order (no hashing), and look through the rest of the outbox only for
        // what is not there.
        let mut done = 0;
        while done < entries.len() && outbox.front().is_some_and(|e| e.position == entries[done]) {
            outbox.pop_front();
            done += 1;
        }
        if done < entries.len() {
            let acked: std::collections::HashSet<&OutboxPosition> =
                entries[done..].iter().collect();
            outbox.retain(|e| !acked.contains(&e.position));
        }
        ready(Ok(())).boxed()
    }

    fn dead_letter<'a>(
        &'a self,
        entries: &'a [(OutboxPosition, String)],
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        // Both locks held: an entry is in one of the two, whatever a reader sees.
        let mut outbox = self.outbox.lock();
        let mut dead = self.dead.lock();
        for (position, reason) in entries {
            let Some(at) = outbox.iter().position(|e| &e.position == position) else {
                continue;
            };
            let Some(entry) = outbox.remove(at) else {
                continue;
            };
            let letter = DeadLetter {
                position: OutboxPosition {
                    shard: 0,
                    entry: self.next_entry(),
                },
                reason: reason.clone(),
                dead_ms: now_ms(),
                id: Some(entry.id.clone()),
                type_name: Some(entry.event.type_name.clone()),
            };
            dead.push_back((letter, entry));
        }
        ready(Ok(())).boxed()
    }

    fn dead_letters(
        &self,
        shard: u32,
        max: usize,
    ) -> BoxFuture<'_, Result<Vec<DeadLetter>, StorageError>> {
        let letters = if shard == 0 {
            self.dead
                .lock()
                .iter()
                .take(max)
                .map(|(letter, _)| letter.clone())
                .collect()
        } else {
            Vec::new()
        };
        ready(Ok(letters)).boxed()
    }

    fn redrive<'a>(
        &'a self,
        positions: &'a [OutboxPosition],
    ) -> BoxFuture<'a, Result<usize, StorageError>> {
        let mut outbox = self.outbox.lock();
        let mut dead = self.dead.lock();
        let mut moved = 0;
        for position in positions {
            let Some(at) = dead.iter().position(|(l, _)| &l.position == position) else {
                continue;
            };
            let Some((_, mut entry)) = dead.remove(at) else {
                continue;
            };
            entry.position = OutboxPosition {
                shard: 0,
                entry: self.next_entry(),
            };
            // The commit time stays: the envelope's timestamp does not change.
            outbox.push_back(entry);
            moved += 1;
        }
        drop((outbox, dead));
        if moved > 0 {
            self.appended.notify_one();
        }
        ready(Ok(moved)).boxed()
    }
}

impl GrainDirectory for MemoryStore {
    fn lookup(&self, grain: &GrainId) -> BoxFuture<'_, Result<Option<GrainAddress>, StorageError>> {
        let owner = self.grains.get(grain).and_then(|r| r.owner_address(grain));
        ready(Ok(owner)).boxed()
    }

    fn unregister(&self, address: &GrainAddress) -> BoxFuture<'_, Result<(), StorageError>> {
        if let Some(mut record) = self.grains.get_mut(&address.grain)
            && record.owned_by(address)
        {
            record.owner = None;
        }
        ready(Ok(())).boxed()
    }
}

/// The number of an entry id this store made ([`MemoryStore::next_entry`]); 0 for any other
/// (none is older than all).
fn entry_seq(position: &OutboxPosition) -> u64 {
    position.entry.parse().unwrap_or(0)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

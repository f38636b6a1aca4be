//! [`MemoryMembership`]: a versioned membership table in memory.

use futures::future::{BoxFuture, FutureExt, ready};
use parking_lot::Mutex;

use granary_core::provider::{Heartbeat, MembershipEntry, MembershipSnapshot, MembershipTable};
use granary_core::{SiloId, StorageError};

/// A membership table in process memory, changed by compare-and-set like the Redis one.
#[derive(Debug, Default)]
pub struct MemoryMembership {
    table: Mutex<MembershipSnapshot>,
    beats: Mutex<Vec<(SiloId, Heartbeat)>>,
}

impl MemoryMembership {
    /// An empty table at version 0.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
}

impl MembershipTable for MemoryMembership {
    fn read(&self) -> BoxFuture<'_, Result<MembershipSnapshot, StorageError>> {
        ready(Ok(self.table.lock().clone())).boxed()
    }

    fn upsert(
        &self,
        entry: MembershipEntry,
        expected_version: u64,
    ) -> BoxFuture<'_, Result<u64, StorageError>> {
        let mut table = self.table.lock();
        let result = if table.version == expected_version {
            table.version += 1;
            match table.entries.iter_mut().find(|e| e.silo == entry.silo) {
                Some(row) => *row = entry,
                None => table.entries.push(entry),
            }
            Ok(table.version)
        } else {
            Err(StorageError::Conflict {
                expected: expected_version,
                actual: table.version,
            })
        };
        ready(result).boxed()
    }

    fn heartbeat(&self, silo: &SiloId, beat: Heartbeat) -> BoxFuture<'_, Result<(), StorageError>> {
        let mut beats = self.beats.lock();
        match beats.iter_mut().find(|(s, _)| s == silo) {
            Some((_, last)) => *last = beat,
            None => beats.push((silo.clone(), beat)),
        }
        ready(Ok(())).boxed()
    }

    fn heartbeats(&self) -> BoxFuture<'_, Result<Vec<(SiloId, Heartbeat)>, StorageError>> {
        ready(Ok(self.beats.lock().clone())).boxed()
    }
}

//! [`MemoryMembership`]: a versioned membership table in memory.

use futures::future::{BoxFuture, FutureExt, ready};
use parking_lot::Mutex;

use granary_core::StorageError;
use granary_core::provider::{MembershipEntry, MembershipSnapshot, MembershipTable};

/// A membership table in process memory, changed by compare-and-set like the Redis one.
#[derive(Debug, Default)]
pub struct MemoryMembership {
    table: Mutex<MembershipSnapshot>,
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
}

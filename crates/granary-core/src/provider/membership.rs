//! The membership table: which silos form the cluster and in which state.

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::error::StorageError;
use crate::id::SiloId;

/// The life cycle of a silo in the membership table. Transitions only go forward, and
/// `Dead` is final: a restarted process joins under a new generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum SiloStatus {
    /// Registered, not yet serving.
    Joining,
    /// Serving calls.
    Active,
    /// Draining: accepts no new activations.
    ShuttingDown,
    /// Gone; never comes back.
    Dead,
}

/// One silo's row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipEntry {
    /// The silo.
    pub silo: SiloId,
    /// Where its transport listens (empty for a single in-process silo).
    pub address: String,
    /// Its status.
    pub status: SiloStatus,
    /// Votes of other silos that could not reach it; enough recent ones declare it dead.
    #[serde(default)]
    pub suspicions: Vec<Suspicion>,
    /// The grain types the silo hosts, sorted; placement puts a new activation only on a
    /// silo that hosts its type. `None` in the rows of silos that predate this field: such
    /// a silo is taken to host every type, as placement did before (during a rolling restart
    /// an old silo stays eligible; if it lacks the type it answers `UnknownGrainType`, as
    /// before). Silos of this version always write the list.
    #[serde(default)]
    pub hosts: Option<Vec<String>>,
    /// The silo's roles (e.g. `"sim"`): a grain type that asks for a role is placed only on
    /// silos that have it. Empty when the silo declared none (or predates roles).
    #[serde(default)]
    pub roles: Vec<String>,
}

impl MembershipEntry {
    /// A row without suspicions.
    #[must_use]
    pub fn new(silo: SiloId, address: impl Into<String>, status: SiloStatus) -> Self {
        Self {
            silo,
            address: address.into(),
            status,
            suspicions: Vec::new(),
            hosts: None,
            roles: Vec::new(),
        }
    }

    /// Whether the silo hosts grain type `type_name`: it is in [`hosts`](Self::hosts), or the
    /// row predates the list (`None`: every type).
    #[must_use]
    pub fn hosts_type(&self, type_name: &str) -> bool {
        self.hosts
            .as_ref()
            .is_none_or(|types| types.iter().any(|t| t == type_name))
    }

    /// Whether the silo has role `role`.
    #[must_use]
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// One silo's vote that another did not answer its probes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suspicion {
    /// The silo that voted.
    pub observer: SiloId,
    /// When, in milliseconds since the Unix epoch (votes expire).
    pub at_ms: u64,
}

/// The whole table at one version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipSnapshot {
    /// Bumped by every change of a row.
    pub version: u64,
    /// One row per silo ever seen (dead rows included, until cleaned up).
    pub entries: Vec<MembershipEntry>,
}

/// A silo's periodic sign of life, written beside the table (it does not bump its version).
///
/// Besides the time it carries what the silo is doing, so that a tool reading the table (the
/// `granary status` command, the dashboard) sees the whole cluster without asking each silo.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// When, in milliseconds since the Unix epoch (for display: failure detection compares
    /// no clocks of other machines, see `seq`).
    pub at_ms: u64,
    /// Counts the silo's heartbeats, from 1: each new heartbeat has a higher one. Other silos
    /// judge a heartbeat fresh by seeing this change within a window of their own monotonic
    /// clock. Zero in heartbeats of silos that predate it.
    #[serde(default)]
    pub seq: u64,
    /// How many activations the silo hosts (least-loaded placement reads it).
    pub activations: u64,
    /// Activations per grain type, sorted by type name.
    #[serde(default)]
    pub by_type: Vec<(String, u64)>,
    /// Calls the silo has handled since it started: a counter, so a rate is the difference
    /// between two heartbeats over the time between them.
    #[serde(default)]
    pub calls: u64,
}

/// A versioned membership table changed by compare-and-set.
pub trait MembershipTable: Send + Sync + 'static {
    /// The table as it is now.
    ///
    /// # Errors
    /// [`StorageError::Unavailable`] if the table cannot be reached.
    fn read(&self) -> BoxFuture<'_, Result<MembershipSnapshot, StorageError>>;

    /// Inserts or replaces the row of `entry.silo` if the table is still at
    /// `expected_version`; returns the new version.
    ///
    /// # Errors
    /// [`StorageError::Conflict`] if the table moved on (read it again and retry),
    /// [`StorageError::Unavailable`] if it cannot be reached.
    fn upsert(
        &self,
        entry: MembershipEntry,
        expected_version: u64,
    ) -> BoxFuture<'_, Result<u64, StorageError>>;

    /// Records `silo`'s heartbeat, without changing the table's version.
    ///
    /// # Errors
    /// [`StorageError::Unavailable`] if the table cannot be reached.
    fn heartbeat(&self, silo: &SiloId, beat: Heartbeat) -> BoxFuture<'_, Result<(), StorageError>>;

    /// The last heartbeat of every silo that sent one.
    ///
    /// # Errors
    /// [`StorageError::Unavailable`] if the table cannot be reached.
    fn heartbeats(&self) -> BoxFuture<'_, Result<Vec<(SiloId, Heartbeat)>, StorageError>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_written_before_hosted_types_decodes_as_hosting_every_type() {
        // A row as a silo of the previous version wrote it (JSON, as the Redis table keeps it).
        let old = r#"{"silo":{"name":"s0","generation":7},"address":"127.0.0.1:1","status":"Active","suspicions":[]}"#;
        let silo = SiloId::new("s0", 7);
        let encoded = serde_json::to_string(&MembershipEntry::new(
            silo.clone(),
            "127.0.0.1:1",
            SiloStatus::Active,
        ))
        .unwrap_or_default();
        // The fixture above has the shape this version writes, less the new fields.
        assert!(encoded.starts_with(&old[..old.len() - 1]), "{encoded}");
        let row: MembershipEntry = serde_json::from_str(old).expect("an old row decodes");
        assert_eq!(row.silo, silo);
        assert_eq!(row.hosts, None);
        assert!(row.roles.is_empty());
        assert!(row.hosts_type("any.type"));
        assert!(!row.has_role("sim"));
    }

    #[test]
    fn hosted_types_and_roles_round_trip_and_decide_eligibility() {
        let row = MembershipEntry {
            hosts: Some(vec!["game".into()]),
            roles: vec!["sim".into()],
            ..MembershipEntry::new(SiloId::new("s1", 1), "127.0.0.1:2", SiloStatus::Joining)
        };
        let json = serde_json::to_string(&row).unwrap_or_default();
        let back: MembershipEntry = serde_json::from_str(&json).expect("decodes");
        assert_eq!(back, row);
        assert!(back.hosts_type("game"));
        assert!(!back.hosts_type("player"));
        assert!(back.has_role("sim"));
        assert!(!back.has_role("social"));
        // A silo that hosts nothing is eligible for nothing (not "everything").
        let none = MembershipEntry {
            hosts: Some(Vec::new()),
            ..row
        };
        assert!(!none.hosts_type("game"));
    }
}

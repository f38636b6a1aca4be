//! The key layout: which Redis keys hold a grain's state, owner and events.
//!
//! Every key of one grain shares one hash tag, the grain's *shard*, so that the claim and
//! commit scripts touch one Redis Cluster slot. See the crate docs for the full layout.

use std::fmt::Write as _;
use std::sync::Arc;

use granary_core::{GrainId, GrainKey};
use uuid::Uuid;

/// The keys of one cluster (`granary:<cluster>:…`).
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    cluster: Arc<str>,
    shards: u32,
}

/// The keys one claim or commit touches, all in one shard.
#[derive(Debug)]
pub(crate) struct GrainKeys {
    pub(crate) shard: u32,
    pub(crate) epoch: String,
    /// The grain's hash: state, version and owner.
    pub(crate) grain: String,
    pub(crate) outbox: String,
}

impl Keys {
    pub(crate) fn new(cluster: &str, shards: u32) -> Self {
        Self {
            cluster: cluster.into(),
            shards,
        }
    }

    pub(crate) fn shards(&self) -> u32 {
        self.shards
    }

    /// The cluster's metadata hash: epoch, shard count, format.
    pub(crate) fn meta(&self) -> String {
        format!("granary:{}:meta", self.cluster)
    }

    /// The membership table (a hash: `#version` and one row per silo).
    pub(crate) fn membership(&self) -> String {
        format!("granary:{}:membership", self.cluster)
    }

    /// The shard a grain belongs to: its stable hash modulo the shard count.
    pub(crate) fn shard_of(&self, grain: &GrainId) -> u32 {
        u32::try_from(grain.stable_hash() % u64::from(self.shards)).unwrap_or(0)
    }

    fn prefix(&self, shard: u32) -> String {
        format!("granary:{{{}:{shard}}}", self.cluster)
    }

    /// The copy of the cluster epoch kept in `shard`, checked by every script.
    pub(crate) fn epoch(&self, shard: u32) -> String {
        format!("{}:epoch", self.prefix(shard))
    }

    /// The outbox stream of `shard`.
    pub(crate) fn outbox(&self, shard: u32) -> String {
        format!("{}:outbox", self.prefix(shard))
    }

    /// The dead-letter stream of `shard`: outbox entries set aside, with their reason.
    pub(crate) fn dead(&self, shard: u32) -> String {
        format!("{}:outbox:dead", self.prefix(shard))
    }

    /// The reminder index of `shard`: a sorted set of `<name length>:<name><grain field>` by
    /// next due time (milliseconds since the Unix epoch).
    pub(crate) fn reminder_index(&self, shard: u32) -> String {
        format!("{}:reminders", self.prefix(shard))
    }

    /// The reminders of `grain`: a hash of name to `<period ms>:<next due ms>`, in its shard.
    pub(crate) fn reminders_of(&self, grain: &GrainId) -> String {
        let shard = self.shard_of(grain);
        format!("{}:rem:{}", self.prefix(shard), grain_field(grain))
    }

    pub(crate) fn grain(&self, grain: &GrainId) -> GrainKeys {
        let shard = self.shard_of(grain);
        let prefix = self.prefix(shard);
        let field = grain_field(grain);
        GrainKeys {
            shard,
            epoch: format!("{prefix}:epoch"),
            grain: format!("{prefix}:grain:{field}"),
            outbox: format!("{prefix}:outbox"),
        }
    }
}

/// Checks that `cluster` can be part of a key and a hash tag.
pub(crate) fn validate_cluster(cluster: &str) -> Result<(), String> {
    if cluster.is_empty() || cluster.len() > 64 {
        return Err(format!(
            "cluster id {cluster:?} must have 1 to 64 characters"
        ));
    }
    if let Some(bad) = cluster
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "cluster id {cluster:?} contains {bad:?}; use letters, digits, '-', '_' and '.'"
        ));
    }
    Ok(())
}

/// A grain id as one unambiguous string: `<type length>:<type>:<kind>:<key>`, kind `s`
/// (string), `i` (integer) or `u` (UUID). E.g. `6:player:s:alice`.
pub(crate) fn grain_field(grain: &GrainId) -> String {
    let type_name = grain.type_name();
    let mut out = String::with_capacity(type_name.len() + 24);
    let _ = write!(out, "{}:{type_name}:", type_name.len());
    match grain.key() {
        GrainKey::Str(s) => {
            out.push_str("s:");
            out.push_str(s);
        }
        GrainKey::Int(i) => {
            let _ = write!(out, "i:{i}");
        }
        GrainKey::Uuid(u) => {
            let _ = write!(out, "u:{u}");
        }
    }
    out
}

/// A member of a shard's reminder index: `<name length>:<name><grain field>`. The commit
/// script builds it (in Lua); this is its reference for the tests.
#[cfg(test)]
pub(crate) fn reminder_member(name: &str, field: &str) -> String {
    format!("{}:{name}{field}", name.len())
}

/// Parses what [`reminder_member`] wrote: the grain and the reminder's name.
pub(crate) fn parse_reminder_member(member: &str) -> Option<(GrainId, String)> {
    let (len, rest) = member.split_once(':')?;
    let len: usize = len.parse().ok()?;
    let name = rest.get(..len)?;
    let grain = parse_grain_field(rest.get(len..)?)?;
    Some((grain, name.to_owned()))
}

/// Parses what [`grain_field`] wrote.
pub(crate) fn parse_grain_field(field: &str) -> Option<GrainId> {
    let (len, rest) = field.split_once(':')?;
    let len: usize = len.parse().ok()?;
    let type_name = rest.get(..len)?;
    let rest = rest.get(len..)?.strip_prefix(':')?;
    let (kind, key) = rest.split_once(':')?;
    let key = match kind {
        "s" => GrainKey::from(key),
        "i" => GrainKey::Int(key.parse().ok()?),
        "u" => GrainKey::Uuid(Uuid::parse_str(key).ok()?),
        _ => return None,
    };
    Some(GrainId::new(type_name.to_owned(), key))
}

#[cfg(test)]
mod tests;

//! [`RedisMembership`]: the cluster's membership table in one Redis hash.

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use redis::{Script, Value};

use granary_core::provider::{Heartbeat, MembershipEntry, MembershipSnapshot, MembershipTable};
use granary_core::{SiloId, StorageError};

use crate::store::RedisStore;

/// Replaces one row if the table is still at the expected version.
///
/// `KEYS`: the table. `ARGV`: expected version, row field, row. Replies `{"ok", version}` or
/// `{"conflict", version}`.
const UPSERT: &str = r"#!lua
local version = redis.call('HGET', KEYS[1], '#version') or '0'
if version ~= ARGV[1] then return {'conflict', version} end
local next = string.format('%.0f', tonumber(version) + 1)
redis.call('HSET', KEYS[1], '#version', next, ARGV[2], ARGV[3])
return {'ok', next}
";

/// The membership table in Redis: the hash `granary:<cluster>:membership`, with the table's
/// version in the field `#version` and each silo's row, as JSON, in the field
/// `<silo name>#<generation>`. Rows change only by compare-and-set on the version. Heartbeats
/// (a [`Heartbeat`] as JSON) go to the hash `granary:<cluster>:membership:alive`, under the
/// same fields, and leave the version alone. Silo processes that serve HTTP (`/metrics`)
/// publish its address in the hash `granary:<cluster>:membership:http`, under the same fields,
/// for the dashboard to read every silo's metrics.
#[derive(Debug, Clone)]
pub struct RedisMembership {
    store: Arc<RedisStore>,
    key: String,
    alive_key: String,
    upsert: Arc<Script>,
}

impl RedisMembership {
    /// The membership table of `store`'s cluster, over its connection.
    #[must_use]
    pub fn new(store: Arc<RedisStore>) -> Self {
        let key = store.keys.membership();
        let alive_key = format!("{key}:alive");
        Self {
            store,
            key,
            alive_key,
            upsert: Arc::new(Script::new(UPSERT)),
        }
    }

    async fn read_table(&self) -> Result<MembershipSnapshot, StorageError> {
        let fields = self.hgetall(self.key.clone()).await?;
        let mut snapshot = MembershipSnapshot::default();
        for (field, value) in fields {
            if field == "#version" {
                snapshot.version = value.parse().map_err(|_| {
                    StorageError::Malformed(format!("membership version {value:?}"))
                })?;
                continue;
            }
            let entry: MembershipEntry = serde_json::from_str(&value)
                .map_err(|e| StorageError::Malformed(format!("membership row {field}: {e}")))?;
            snapshot.entries.push(entry);
        }
        snapshot.entries.sort_by(|a, b| {
            (a.silo.name(), a.silo.generation()).cmp(&(b.silo.name(), b.silo.generation()))
        });
        Ok(snapshot)
    }

    async fn upsert_row(&self, entry: MembershipEntry, expected: u64) -> Result<u64, StorageError> {
        let field = format!("{}#{}", entry.silo.name(), entry.silo.generation());
        let row =
            serde_json::to_string(&entry).map_err(|e| StorageError::Serialize(e.to_string()))?;
        let mut invocation = self.upsert.prepare_invoke();
        invocation.key(&self.key).arg(expected).arg(field).arg(row);
        let mut conn = self.store.conn.clone();
        let reply: Vec<Value> = self
            .store
            .bounded(async move { invocation.invoke_async(&mut conn).await })
            .await?;
        let number = |v: Option<&Value>| match v {
            Some(Value::BulkString(b)) => std::str::from_utf8(b).ok().and_then(|s| s.parse().ok()),
            _ => None,
        };
        match reply.first() {
            Some(Value::BulkString(tag)) if tag == b"ok" => number(reply.get(1))
                .ok_or_else(|| StorageError::Malformed(format!("upsert replied {reply:?}"))),
            Some(Value::BulkString(tag)) if tag == b"conflict" => Err(StorageError::Conflict {
                expected,
                actual: number(reply.get(1)).unwrap_or(expected),
            }),
            _ => Err(StorageError::Malformed(format!("upsert replied {reply:?}"))),
        }
    }
}

fn silo_field(silo: &SiloId) -> String {
    format!("{}#{}", silo.name(), silo.generation())
}

impl RedisMembership {
    async fn write_beat(&self, silo: &SiloId, beat: Heartbeat) -> Result<(), StorageError> {
        let (key, field) = (self.alive_key.clone(), silo_field(silo));
        let value = serde_json::to_string(&beat)
            .map_err(|e| StorageError::Malformed(format!("heartbeat not encoded: {e}")))?;
        self.hset(key, field, value).await
    }

    async fn read_beats(&self) -> Result<Vec<(SiloId, Heartbeat)>, StorageError> {
        let fields = self.hgetall(self.alive_key.clone()).await?;
        let mut beats = Vec::with_capacity(fields.len());
        for (field, value) in fields {
            let parsed = (|| {
                let (name, generation) = field.rsplit_once('#')?;
                let beat: Heartbeat = serde_json::from_str(&value).ok()?;
                Some((SiloId::new(name, generation.parse().ok()?), beat))
            })();
            beats.push(parsed.ok_or_else(|| {
                StorageError::Malformed(format!("heartbeat {field} = {value:?}"))
            })?);
        }
        Ok(beats)
    }
}

impl MembershipTable for RedisMembership {
    fn read(&self) -> BoxFuture<'_, Result<MembershipSnapshot, StorageError>> {
        Box::pin(self.read_table())
    }

    fn upsert(
        &self,
        entry: MembershipEntry,
        expected_version: u64,
    ) -> BoxFuture<'_, Result<u64, StorageError>> {
        Box::pin(self.upsert_row(entry, expected_version))
    }

    fn heartbeat(&self, silo: &SiloId, beat: Heartbeat) -> BoxFuture<'_, Result<(), StorageError>> {
        let silo = silo.clone();
        Box::pin(async move { self.write_beat(&silo, beat).await })
    }

    fn heartbeats(&self) -> BoxFuture<'_, Result<Vec<(SiloId, Heartbeat)>, StorageError>> {
        Box::pin(self.read_beats())
    }
}

impl RedisMembership {
    /// Publishes `address` (`host:port`) as where `silo`'s HTTP server answers (its `/metrics`):
    /// the dashboard of any silo reads every silo's metrics there. The field stays after the
    /// silo is gone (readers skip the silos that are not in the table, or dead).
    ///
    /// # Errors
    /// [`StorageError::Unavailable`] if Redis cannot be reached.
    pub async fn publish_http_address(
        &self,
        silo: &SiloId,
        address: &str,
    ) -> Result<(), StorageError> {
        self.hset(self.http_key(), silo_field(silo), address.to_owned())
            .await
    }

    /// The HTTP addresses the silos published with
    /// [`publish_http_address`](Self::publish_http_address).
    ///
    /// # Errors
    /// [`StorageError::Unavailable`] if Redis cannot be reached, [`StorageError::Malformed`]
    /// if a field does not name a silo.
    pub async fn http_addresses(&self) -> Result<Vec<(SiloId, String)>, StorageError> {
        let fields = self.hgetall(self.http_key()).await?;
        fields
            .into_iter()
            .map(|(field, address)| {
                let silo = field
                    .rsplit_once('#')
                    .and_then(|(name, generation)| {
                        Some(SiloId::new(name, generation.parse().ok()?))
                    })
                    .ok_or_else(|| StorageError::Malformed(format!("HTTP address of {field:?}")))?;
                Ok((silo, address))
            })
            .collect()
    }

    fn http_key(&self) -> String {
        format!("{}:http", self.key)
    }

    /// Every field of the hash `key`.
    async fn hgetall(&self, key: String) -> Result<HashMap<String, String>, StorageError> {
        let mut conn = self.store.conn.clone();
        self.store
            .bounded(async move { redis::cmd("HGETALL").arg(&key).query_async(&mut conn).await })
            .await
    }

    /// Sets `field` of the hash `key` to `value`.
    async fn hset(&self, key: String, field: String, value: String) -> Result<(), StorageError> {
        let mut conn = self.store.conn.clone();
        self.store
            .bounded(async move {
                redis::cmd("HSET")
                    .arg(&key)
                    .arg(field)
                    .arg(value)
                    .query_async::<()>(&mut conn)
                    .await
            })
            .await
    }
}

//! The inspection commands: `status`, `grain`, `events tail`, `events dead`, read from (and for
//! `events dead redrive`, written to) the cluster's Redis.
#![allow(clippy::print_stdout, reason = "the commands print their answers")]

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use granary::GrainId;
use granary::codec::state_codec;
use granary::provider::{GrainDirectory, MembershipTable, Outbox, OutboxPosition};
use granary_events::EventEnvelope;
use granary_redis::{Bootstrap, RedisConfig, RedisConnection, RedisMembership, RedisStore};

pub(crate) fn required<'a>(
    value: Option<&'a String>,
    what: &str,
    flag: &str,
    env: &str,
) -> anyhow::Result<&'a str> {
    value
        .map(String::as_str)
        .with_context(|| format!("no {what}: pass {flag} or set {env}"))
}

pub(crate) async fn store(
    redis: Option<&String>,
    cluster: Option<&String>,
) -> anyhow::Result<Arc<RedisStore>> {
    let url = required(redis, "Redis URL", "--redis", "GRANARY_REDIS")?;
    let cluster = required(cluster, "cluster id", "--cluster", "GRANARY_CLUSTER")?;
    let config = RedisConfig::new(url, cluster).bootstrap(Bootstrap::RequireExisting);
    Ok(Arc::new(RedisStore::connect(config).await?))
}

pub(crate) async fn status(store: Arc<RedisStore>) -> anyhow::Result<()> {
    let table = RedisMembership::new(store);
    let snapshot = table.read().await?;
    let beats = table.heartbeats().await?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    println!("membership version {}", snapshot.version);
    println!(
        "{:<32} {:<22} {:<13} {:>10} {:>12}",
        "silo", "address", "status", "heartbeat", "activations"
    );
    for entry in &snapshot.entries {
        let beat = beats.iter().find(|(s, _)| *s == entry.silo).map(|(_, b)| b);
        let age = beat.map_or_else(
            || "-".to_owned(),
            |b| format!("{} ms ago", now.saturating_sub(b.at_ms)),
        );
        let activations = beat.map_or_else(|| "-".to_owned(), |b| b.activations.to_string());
        println!(
            "{:<32} {:<22} {:<13} {:>10} {:>12}",
            entry.silo.to_string(),
            if entry.address.is_empty() {
                "-"
            } else {
                &entry.address
            },
            format!("{:?}", entry.status),
            age,
            activations
        );
        match &entry.hosts {
            Some(types) if types.is_empty() => println!("    hosts: no grain types"),
            Some(types) => println!("    hosts: {}", types.join(", ")),
            None => println!("    hosts: every type (a silo older than hosted types)"),
        }
        if !entry.roles.is_empty() {
            println!("    roles: {}", entry.roles.join(", "));
        }
        for (grain_type, n) in beat.map(|b| b.by_type.as_slice()).unwrap_or_default() {
            println!("    {grain_type:<40} {n:>12}");
        }
    }
    Ok(())
}

pub(crate) async fn grain(store: Arc<RedisStore>, id: &GrainId) -> anyhow::Result<()> {
    let owner = store.lookup(id).await?;
    let (data, version) = store.read_raw(id).await?;
    if owner.is_none() && data.is_none() && version == 0 {
        bail!(
            "grain {id} has no stored state and is not active: check the type name and key (and --int / --uuid)"
        );
    }
    println!("grain {id}");
    match owner {
        Some(owner) => println!(
            "  active on {} (activation {})",
            owner.silo, owner.activation
        ),
        None => println!("  not active"),
    }
    println!("  version {version}");
    match data {
        None => println!("  state: none stored"),
        Some(blob) => match state_codec::open(&blob) {
            Ok((schema, payload)) => {
                let value: serde_json::Value = rmp_serde::from_slice(payload)
                    .context("the state payload is not MessagePack")?;
                println!("  schema version {schema}");
                println!("  state {}", serde_json::to_string_pretty(&value)?);
            }
            Err(err) => println!("  state unreadable: {err}"),
        },
    }
    Ok(())
}

pub(crate) async fn tail(
    url: &str,
    stream: &str,
    from_start: bool,
    count: Option<usize>,
) -> anyhow::Result<()> {
    // No response timeout: the blocking read waits on purpose.
    let mut conn = RedisConnection::open(url, None).await?;
    let mut last = if from_start {
        "0".to_owned()
    } else {
        "$".to_owned()
    };
    let mut seen = 0;
    loop {
        let reply: Option<redis::streams::StreamReadReply> = redis::cmd("XREAD")
            .arg("BLOCK")
            .arg(u64::try_from(Duration::from_secs(5).as_millis()).unwrap_or(5_000))
            .arg("STREAMS")
            .arg(stream)
            .arg(&last)
            .query_async(&mut conn)
            .await?;
        for entry in reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
            match entry.map.get("event") {
                Some(redis::Value::BulkString(bytes)) => match EventEnvelope::from_bytes(bytes) {
                    Ok(envelope) => println!("{}", String::from_utf8_lossy(&envelope.to_json())),
                    Err(err) => println!("{{\"entry\":\"{}\",\"error\":\"{err}\"}}", entry.id),
                },
                _ => println!(
                    "{{\"entry\":\"{}\",\"error\":\"no event field\"}}",
                    entry.id
                ),
            }
            last = entry.id;
            seen += 1;
            if count.is_some_and(|c| seen >= c) {
                return Ok(());
            }
        }
    }
}

/// The dead letters of `shard` (or every shard), at most `limit` per shard, one per line.
pub(crate) async fn dead_list(
    store: &RedisStore,
    shard: Option<u32>,
    limit: usize,
) -> anyhow::Result<()> {
    let shards = match shard {
        Some(shard) if shard >= store.shards() => {
            bail!(
                "no shard {shard}: the cluster has {} shards",
                store.shards()
            )
        }
        Some(shard) => shard..shard + 1,
        None => 0..store.shards(),
    };
    println!(
        "{:<28} {:<24} {:<24} {:<40} reason",
        "dead letter", "set aside (UTC ms)", "type", "event"
    );
    let mut total = 0;
    for shard in shards {
        for letter in store.dead_letters(shard, limit).await? {
            total += 1;
            let event = letter.id.as_ref().map_or_else(
                || "(undecodable)".to_owned(),
                |id| format!("{}@{}.{}", id.grain, id.version, id.index),
            );
            println!(
                "{:<28} {:<24} {:<24} {:<40} {}",
                format!("{}/{}", letter.position.shard, letter.position.entry),
                letter.dead_ms,
                letter.type_name.as_deref().unwrap_or("-"),
                event,
                letter.reason
            );
        }
    }
    println!("{total} dead letters");
    Ok(())
}

/// Moves the dead letters `letters` (`<shard>/<entry>`), or all of them, back to the outbox.
pub(crate) async fn dead_redrive(
    store: &RedisStore,
    letters: &[String],
    all: bool,
) -> anyhow::Result<()> {
    let positions: Vec<OutboxPosition> = if all {
        let mut positions = Vec::new();
        for shard in 0..store.shards() {
            positions.extend(
                store
                    .dead_letters(shard, 1_000_000)
                    .await?
                    .into_iter()
                    .map(|l| l.position),
            );
        }
        positions
    } else {
        letters
            .iter()
            .map(|letter| {
                let (shard, entry) = letter.split_once('/').with_context(|| {
                    format!("{letter:?} is not <shard>/<entry> as `events dead list` prints")
                })?;
                let shard: u32 = shard
                    .parse()
                    .with_context(|| format!("{letter:?}: the shard is not a number"))?;
                if shard >= store.shards() {
                    bail!(
                        "{letter:?}: no shard {shard}; the cluster has {} shards",
                        store.shards()
                    );
                }
                Ok(OutboxPosition {
                    shard,
                    entry: entry.to_owned(),
                })
            })
            .collect::<anyhow::Result<_>>()?
    };
    let moved = store.redrive(&positions).await?;
    println!("re-drove {moved} of {} dead letters", positions.len());
    Ok(())
}

//! `granary`: inspect a running cluster through its Redis, and follow its events.
//!
//! ```sh
//! granary --redis redis://127.0.0.1:6379 --cluster demo status
//! granary --redis redis://127.0.0.1:6379 --cluster demo grain player alice
//! granary --redis redis://127.0.0.1:6379 events tail events:match.ended
//! ```
#![allow(clippy::print_stdout, reason = "a command-line tool")]

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use granary::GrainId;
use granary::codec::state_codec;
use granary::provider::{GrainDirectory, MembershipTable};
use granary_events::EventEnvelope;
use granary_redis::{Bootstrap, RedisConfig, RedisMembership, RedisStore};

/// Inspect a Granary cluster and follow its events.
#[derive(Debug, Parser)]
#[command(name = "granary", version)]
struct Cli {
    /// The cluster's Redis.
    #[arg(long, env = "GRANARY_REDIS", global = true)]
    redis: Option<String>,
    /// The cluster id.
    #[arg(long, env = "GRANARY_CLUSTER", global = true)]
    cluster: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The membership table: each silo, its address, status, last heartbeat and activations
    /// (in all, then per grain type).
    Status,
    /// Where a grain is active, its state version and its state (decoded, as JSON).
    Grain {
        /// The grain type name (`player`).
        grain_type: String,
        /// The key.
        key: String,
        /// The key is an integer.
        #[arg(long, conflicts_with = "uuid")]
        int: bool,
        /// The key is a UUID.
        #[arg(long)]
        uuid: bool,
    },
    /// Events on the queues.
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
}

#[derive(Debug, Subcommand)]
enum EventsCommand {
    /// Follows a Redis stream of events (`events:match.ended`), one JSON envelope per line.
    Tail {
        /// The stream.
        stream: String,
        /// Start from the stream's first entry instead of new ones.
        #[arg(long)]
        from_start: bool,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<usize>,
    },
}

#[tokio::main]
async fn main() {
    if let Err(err) = run(Cli::parse()).await {
        eprintln!("granary: {err:#}");
        std::process::exit(1);
    }
}

fn required<'a>(
    value: Option<&'a String>,
    what: &str,
    flag: &str,
    env: &str,
) -> anyhow::Result<&'a str> {
    value
        .map(String::as_str)
        .with_context(|| format!("no {what}: pass {flag} or set {env}"))
}

async fn store(cli: &Cli) -> anyhow::Result<Arc<RedisStore>> {
    let url = required(cli.redis.as_ref(), "Redis URL", "--redis", "GRANARY_REDIS")?;
    let cluster = required(
        cli.cluster.as_ref(),
        "cluster id",
        "--cluster",
        "GRANARY_CLUSTER",
    )?;
    let config = RedisConfig::new(url, cluster).bootstrap(Bootstrap::RequireExisting);
    Ok(Arc::new(RedisStore::connect(config).await?))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Status => status(store(&cli).await?).await,
        Command::Grain {
            grain_type,
            key,
            int,
            uuid,
        } => {
            let id = if *int {
                GrainId::new(
                    grain_type.clone(),
                    key.parse::<i64>()
                        .context("--int: the key is not an integer")?,
                )
            } else if *uuid {
                GrainId::new(
                    grain_type.clone(),
                    uuid::Uuid::parse_str(key).context("--uuid: the key is not a UUID")?,
                )
            } else {
                GrainId::new(grain_type.clone(), key.as_str())
            };
            grain(store(&cli).await?, &id).await
        }
        Command::Events {
            command:
                EventsCommand::Tail {
                    stream,
                    from_start,
                    count,
                },
        } => {
            let url = required(cli.redis.as_ref(), "Redis URL", "--redis", "GRANARY_REDIS")?;
            tail(url, stream, *from_start, *count).await
        }
    }
}

async fn status(store: Arc<RedisStore>) -> anyhow::Result<()> {
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
        for (grain_type, n) in beat.map(|b| b.by_type.as_slice()).unwrap_or_default() {
            println!("    {grain_type:<40} {n:>12}");
        }
    }
    Ok(())
}

async fn grain(store: Arc<RedisStore>, id: &GrainId) -> anyhow::Result<()> {
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

async fn tail(
    url: &str,
    stream: &str,
    from_start: bool,
    count: Option<usize>,
) -> anyhow::Result<()> {
    let client = redis::Client::open(url).with_context(|| format!("invalid Redis URL {url}"))?;
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .with_context(|| format!("cannot reach Redis at {url}"))?;
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

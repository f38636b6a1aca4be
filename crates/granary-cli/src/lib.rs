//! The `granary` command: run a silo, inspect a running cluster through its Redis, follow its
//! events.
//!
//! A generic binary cannot know a game's grain types, and a silo that does not know them would
//! be placed grains it cannot run. So the command is a library: a game's own binary (a *host*)
//! gets the whole command set with its grain types compiled in by calling [`main_with`]:
//!
//! ```no_run
//! # use granary::{grain, GrainContext};
//! # #[derive(Default)] struct PlayerGrain;
//! # #[grain(name = "player", state = ())] impl PlayerGrain {}
//! fn main() {
//!     granary_cli::main_with(|silo| silo.register::<PlayerGrain>())
//! }
//! ```
//!
//! ```sh
//! my-game silo --config silo.toml           # run a silo (the GRANARY_* variables win over the file)
//! my-game                                   # the same: a host runs a silo when given no command
//! my-game --cluster demo status             # the membership table, activations per type
//! my-game --cluster demo grain player alice # a grain's owner, version and state
//! my-game events tail events:match.ended    # follow a Redis stream of events
//! my-game --cluster demo events dead list    # events the relay set aside (dead letters)
//! my-game --cluster demo events dead redrive 3/1733450000000-0   # back to the outbox
//! my-game --cluster demo events dead redrive --all
//! ```
//!
//! The stock `granary` binary is `main_with(|silo| silo)`: it inspects any cluster, and its
//! `silo` command refuses to run, saying how to build a host. The settings of `silo` are
//! `granary-node`'s (`GRANARY_*` variables and the keys of the `--config` file); `--redis` and
//! `--cluster` on the command line win over both. Everything is checked before the silo joins:
//! a missing or invalid setting names its variable and exits with status 2, Redis out of reach
//! exits with status 1, a silo declared dead by the cluster with status 3.

mod inspect;

use std::ffi::OsString;

use clap::{Args, CommandFactory, Parser, Subcommand};
use granary::{GrainId, Silo, SiloBuilder};

/// Why a `granary` command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// The command line is malformed, or help or the version was asked for; the error prints
    /// what clap says.
    #[error(transparent)]
    Usage(#[from] clap::Error),
    /// `silo` was asked of a binary with no grain types: build a host binary with
    /// [`main_with`] and the game's grain types.
    #[error(
        "this binary has no grain types compiled in, so it cannot run a silo (the silo would be placed grains it cannot run): build a host binary for your game with `fn main() {{ granary_cli::main_with(|silo| silo.register::<PlayerGrain>()) }}` and run `<host> silo` (see granary-cli's `host` example)"
    )]
    NoGrainTypes,
    /// The grain type is not one of the host's.
    #[error("unknown grain type {name}; known: {}", known.join(", "))]
    UnknownGrainType {
        /// The type asked for.
        name: String,
        /// The host's grain types.
        known: Vec<&'static str>,
    },
    /// The silo could not run, or stopped on an error; the source says which setting or
    /// service, and what to do.
    #[error("{0}{hint}", hint = flag_hint(.0))]
    Silo(#[from] granary_node::NodeError),
    /// An inspection command failed (settings, Redis, the grain or the stream); the message
    /// holds the whole chain of causes.
    #[error("{0:#}")]
    Inspect(anyhow::Error),
}

impl CliError {
    /// The process exit status: 2 for usage and settings errors (an invalid Redis URL
    /// included), 3 for a silo declared dead, 0 for help and version, 1 else.
    #[must_use]
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Usage(err) => err.exit_code(),
            Self::NoGrainTypes | Self::UnknownGrainType { .. } => 2,
            Self::Silo(err) => err.exit_code(),
            Self::Inspect(_) => 1,
        }
    }
}

/// The flag that also sets what a silo error is about.
fn flag_hint(err: &granary_node::NodeError) -> &'static str {
    match err {
        granary_node::NodeError::Setting {
            name: "GRANARY_REDIS",
            ..
        }
        | granary_node::NodeError::Redis(
            granary_redis::ConnectError::Config(_)
            | granary_redis::ConnectError::Unreachable { .. }
            | granary_redis::ConnectError::Cluster { .. },
        ) => " (--redis on the command line wins over GRANARY_REDIS)",
        granary_node::NodeError::Setting {
            name: "GRANARY_CLUSTER",
            ..
        } => " (or pass --cluster)",
        _ => "",
    }
}

/// Runs the `granary` command with the grain types `register` adds to a silo, and exits the
/// process with the command's status. This is the whole `main` of a host binary; the stock
/// `granary` binary is `main_with(|silo| silo)`.
///
/// `register` is called once to learn the grain types (so that `grain <type> <key>` can refuse
/// a type the host does not know), then once more to build the silo: keep it to registrations
/// and builder settings, and clone what its grains share inside it.
///
/// Errors print as `<binary>: <message>` on stderr; see [`CliError::exit_code`] for the status.
///
/// # Panics
/// If the tokio runtime cannot be created.
pub fn main_with<F>(register: F) -> !
where
    F: Fn(SiloBuilder) -> SiloBuilder + 'static,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts");
    let result = runtime.block_on(run(std::env::args_os(), register));
    match result {
        Ok(()) => std::process::exit(0),
        Err(CliError::Usage(err)) => err.exit(),
        Err(err) => {
            let binary = std::env::args_os()
                .next()
                .map(std::path::PathBuf::from)
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_else(|| "granary".to_owned());
            eprintln!("{binary}: {err}");
            std::process::exit(err.exit_code())
        }
    }
}

/// Runs the command line `args` (the first is the binary's name) with the grain types
/// `register` adds; what [`main_with`] does, without printing errors or exiting.
///
/// # Errors
/// A [`CliError`] saying what failed and what to do.
pub async fn run<I, T, F>(args: I, register: F) -> Result<(), CliError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
    F: Fn(SiloBuilder) -> SiloBuilder + 'static,
{
    let cli = Cli::try_parse_from(args)?;
    let known = register(Silo::builder()).grain_types();
    let command = match cli.command {
        Some(Command::Silo(args)) => Command::Silo(SiloArgs {
            config: args.config.or(cli.silo.config),
        }),
        Some(_) if cli.silo.config.is_some() => {
            return Err(CliError::Usage(Cli::command().error(
                clap::error::ErrorKind::ArgumentConflict,
                "--config is a setting of the silo: use it with `silo` or with no command",
            )));
        }
        Some(command) => command,
        // A host runs a silo when given no command; the stock binary shows its help.
        None if !known.is_empty() => Command::Silo(cli.silo.clone()),
        None => {
            return Err(CliError::Usage(Cli::command().error(
                clap::error::ErrorKind::MissingSubcommand,
                "a command is required: silo, status, grain or events",
            )));
        }
    };
    let inspect = CliError::Inspect;
    match command {
        Command::Silo(args) => {
            if known.is_empty() {
                return Err(CliError::NoGrainTypes);
            }
            let mut settings = granary_node::Settings::load(args.config.as_deref())?;
            if let Some(redis) = cli.redis {
                settings.redis = Some(redis);
            }
            if let Some(cluster) = cli.cluster {
                settings.cluster = Some(cluster);
            }
            granary_node::run(settings, register).await?;
            Ok(())
        }
        Command::Status => {
            let store = inspect::store(cli.redis.as_ref(), cli.cluster.as_ref())
                .await
                .map_err(inspect)?;
            inspect::status(store).await.map_err(inspect)
        }
        Command::Grain {
            grain_type,
            key,
            int,
            uuid,
        } => {
            if !known.is_empty() && !known.contains(&grain_type.as_str()) {
                return Err(CliError::UnknownGrainType {
                    name: grain_type,
                    known,
                });
            }
            let id = grain_id(grain_type, &key, int, uuid).map_err(inspect)?;
            let store = inspect::store(cli.redis.as_ref(), cli.cluster.as_ref())
                .await
                .map_err(inspect)?;
            inspect::grain(store, &id).await.map_err(inspect)
        }
        Command::Events {
            command:
                EventsCommand::Tail {
                    stream,
                    from_start,
                    count,
                },
        } => {
            let url =
                inspect::required(cli.redis.as_ref(), "Redis URL", "--redis", "GRANARY_REDIS")
                    .map_err(inspect)?;
            inspect::tail(url, &stream, from_start, count)
                .await
                .map_err(inspect)
        }
        Command::Events {
            command: EventsCommand::Dead { command },
        } => {
            let store = inspect::store(cli.redis.as_ref(), cli.cluster.as_ref())
                .await
                .map_err(inspect)?;
            match command {
                DeadCommand::List { shard, limit } => inspect::dead_list(&store, shard, limit)
                    .await
                    .map_err(inspect),
                DeadCommand::Redrive { letters, all } => {
                    inspect::dead_redrive(&store, &letters, all)
                        .await
                        .map_err(inspect)
                }
            }
        }
    }
}

fn grain_id(grain_type: String, key: &str, int: bool, uuid: bool) -> anyhow::Result<GrainId> {
    use anyhow::Context;
    Ok(if int {
        GrainId::new(
            grain_type,
            key.parse::<i64>()
                .context("--int: the key is not an integer")?,
        )
    } else if uuid {
        GrainId::new(
            grain_type,
            uuid::Uuid::parse_str(key).context("--uuid: the key is not a UUID")?,
        )
    } else {
        GrainId::new(grain_type, key)
    })
}

/// Run a Granary silo, inspect its cluster and follow its events.
#[derive(Debug, Parser)]
#[command(name = "granary", version)]
struct Cli {
    /// The cluster's Redis.
    #[arg(long, env = "GRANARY_REDIS", global = true)]
    redis: Option<String>,
    /// The cluster id.
    #[arg(long, env = "GRANARY_CLUSTER", global = true)]
    cluster: Option<String>,
    /// With no command, a host binary runs a silo with these.
    #[command(flatten)]
    silo: SiloArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Clone, Args)]
struct SiloArgs {
    /// A TOML settings file: its keys are the GRANARY_* variables without the prefix, in lower
    /// case (`secret = "…"`); the variables win over it.
    #[arg(long, value_name = "FILE")]
    config: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs a silo with this binary's grain types until SIGINT or SIGTERM. Settings: the
    /// GRANARY_* variables (GRANARY_CLUSTER, GRANARY_SECRET and GRANARY_REDIS are required;
    /// see granary-node) and the --config file.
    Silo(SiloArgs),
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
    /// The dead-letter streams: outbox entries the relay set aside (refused too often by a
    /// sink, or undecodable), per outbox shard.
    Dead {
        #[command(subcommand)]
        command: DeadCommand,
    },
}

#[derive(Debug, Subcommand)]
enum DeadCommand {
    /// Lists dead letters, oldest first per shard: `<shard>/<entry>` (what `redrive` takes),
    /// when, the event's type, grain and id, and why.
    List {
        /// Only this outbox shard.
        #[arg(long)]
        shard: Option<u32>,
        /// At most this many per shard.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Moves dead letters back to the end of their shard's outbox: the relay delivers them
    /// again, with their event ids, after the events committed since (a consumer sees them
    /// after later events of the same grain).
    Redrive {
        /// Dead letters as `list` prints them: `<shard>/<entry>`.
        #[arg(value_name = "SHARD/ENTRY", required_unless_present = "all")]
        letters: Vec<String>,
        /// Every dead letter of every shard.
        #[arg(long, conflicts_with = "letters")]
        all: bool,
    },
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;

    #[test]
    fn the_command_line_parses() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["h", "--config", "s.toml"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.silo.config.as_deref(), Some("s.toml"));
        let cli =
            Cli::try_parse_from(["h", "--redis", "redis://x", "silo", "--config", "f"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Silo(SiloArgs { config: Some(_) }))
        ));
        assert_eq!(cli.redis.as_deref(), Some("redis://x"));
        let cli =
            Cli::try_parse_from(["h", "grain", "player", "7", "--int", "--cluster", "c"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Grain { int: true, .. })
        ));
    }

    #[tokio::test]
    async fn the_config_file_belongs_to_the_silo() {
        let err = run(["h", "--config", "f", "status"], |silo| silo)
            .await
            .unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(
            err.to_string()
                .contains("--config is a setting of the silo"),
            "{err}"
        );
    }
}

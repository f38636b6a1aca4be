//! Run a Granary silo as its own process.
//!
//! A silo binary registers its grain types and hands the rest to [`run`]:
//!
//! ```no_run
//! # use granary::{grain, GrainContext, Result};
//! # #[derive(Default)] pub struct PlayerGrain;
//! # #[grain(name = "player", state = ())] impl PlayerGrain {}
//! #[tokio::main]
//! async fn main() -> Result<(), granary_node::NodeError> {
//!     let settings = granary_node::Settings::load(std::env::args().nth(1).as_deref())?;
//!     granary_node::run(settings, |silo| silo.register::<PlayerGrain>()).await
//! }
//! ```
//!
//! # Settings
//!
//! From a TOML file (optional) whose keys are the names below without the `GRANARY_` prefix,
//! in lower case, then from environment variables, which win:
//!
//! | variable | meaning | default |
//! |----------|---------|---------|
//! | `GRANARY_NAME` | the silo's name | `silo` |
//! | `GRANARY_CLUSTER` | the cluster id | required |
//! | `GRANARY_SECRET` | the cluster secret, at least 16 characters (use 32 random bytes, hex) | required |
//! | `GRANARY_REDIS` | the Redis URL of state, directory and membership | required |
//! | `GRANARY_LISTEN` | the transport's listen address | `0.0.0.0:11111` |
//! | `GRANARY_ADVERTISE` | the address other silos dial, if not the one bound | the bound address |
//! | `GRANARY_PLACEMENT` | `prefer-local`, `hash`, `random` or `least-loaded` | `prefer-local` |
//! | `GRANARY_PROFILE` | `production` or `test` (fast timings: failure detection in about a second) | `production` |
//! | `GRANARY_BOOTSTRAP` | `join`: start only if the cluster exists in Redis (a Redis that lost its data is not taken for a new, empty cluster); `create`: create the cluster if it does not exist, else join it (the first silo of a new cluster) | `join` |
//! | `GRANARY_IDLE_AFTER` | deactivate a grain after this long without calls: a number with `ms`, `s`, `m` or `h` (`90s`, `15m`) | the profile's: `15m` in production, `200ms` in test |
//! | `GRANARY_MAX_EVENT_SIZE` | the largest event `ctx.publish` takes, in bytes of JSON (raise it only if every queue the event goes to takes it) | `1048576` (1 MiB) |
//! | `GRANARY_RELAY_MAX_REFUSALS` | how many times a sink may refuse an event before the relay moves it to its shard's dead-letter stream (`granary events dead`) | `5` |
//! | `GRANARY_METRICS` | the HTTP address: Prometheus metrics at `http://<address>/metrics`, and the dashboard when a token is set | off |
//! | `GRANARY_DASHBOARD_TOKEN` | serve the dashboard at `http://<GRANARY_METRICS>/dashboard?token=<token>`; at least 16 characters; needs `GRANARY_METRICS` | off |
//! | `GRANARY_EVENTS_PREFIX` | events go to the Redis streams `<prefix><event type>` | `events:` |
//! | `GRANARY_NATS` | also to NATS JetStream at this URL (stream `GRANARY_NATS_STREAM`, subjects `<GRANARY_NATS_SUBJECTS><type>`) | off |
//! | `GRANARY_NATS_STREAM`, `GRANARY_NATS_SUBJECTS` | the JetStream stream and subject prefix: clusters sharing a NATS server set their own (subjects of two streams must not overlap) | `GRANARY_EVENTS`, `events.` |
//! | `GRANARY_AMQP` | also to RabbitMQ at this URI (topic exchange `GRANARY_AMQP_EXCHANGE`, routing key = type) | off |
//! | `GRANARY_AMQP_EXCHANGE` | the RabbitMQ exchange | `granary.events` |
//! | `GRANARY_KAFKA` | also to Kafka at these bootstrap servers (`host:port[,…]`; topic `<queue prefix><type>`, key = source grain); needs the cargo feature `kafka` | off |
//! | `GRANARY_SQS` | also to SQS: `aws` (the environment's credentials and region) or the URL of an SQS-compatible server (FIFO queue `<queue prefix><type>.fifo`, `.` → `-`); needs the cargo feature `sqs` | off |
//! | `GRANARY_QUEUE_PREFIX` | prefix of the Kafka topics and SQS queues | empty |
//! | `GRANARY_ROUTES` | the event types a sink gets, when not all: `<type>=<sink>[,<sink>…]` separated by `;`, sinks `nats`, `amqp`, `kafka`, `sqs` (see below) | none |
//! | `GRANARY_OTLP` | export the `grain.call` spans over OTLP/HTTP (JSON) to this collector, e.g. `http://127.0.0.1:4318` (`/v1/traces` is added unless given); plain HTTP; needs the cargo feature `opentelemetry` | off |
//!
//! Redis Streams gets every event, and so does every other configured sink that no route
//! names; a sink that routes name gets only the event types routed to it. With
//! `GRANARY_ROUTES="match.ended=kafka; player.died=sqs"`, match results go to Kafka, deaths to
//! SQS, nothing else to either, and every event to Redis Streams (which `granary events tail`
//! and the dashboard read).
//!
//! Every silo runs the event relay for the outbox shards it owns; `/metrics` serves the relay's
//! per-sink metrics (`granary_relay_*{sink}`) after the silo's.
//!
//! # Tracing
//!
//! Log lines go to stderr, filtered by `RUST_LOG` (`warn` by default). Built with the cargo
//! feature `opentelemetry` and run with `GRANARY_OTLP` set, the silo also exports its spans to
//! that OpenTelemetry collector, as service `GRANARY_NAME`: each call's `grain.call` span (with
//! the grain, method and silo) and the info spans of the grains' code. A span's OTel trace id
//! is its call chain's trace id (`ctx.trace_id()`), so the calls of one logical operation, on
//! any silo, are one OTel trace. The spans are sent in batches; the last ones when the silo
//! stops on SIGINT or SIGTERM. Set without the feature, `GRANARY_OTLP` is a settings error.
//!
//! # Dashboard
//!
//! With `GRANARY_METRICS` and `GRANARY_DASHBOARD_TOKEN` set, the silo serves a web page of the
//! live cluster at `/dashboard`: every silo of the membership table with its status, heartbeat
//! age, activations (per grain type) and calls per second, and the newest events of the event
//! streams (`GRANARY_EVENTS_PREFIX`). It reads everything from Redis, so any silo shows the
//! whole cluster, and it refreshes every second. Open it as `/dashboard?token=<token>`; the
//! page sends the token to its JSON API, `/dashboard/api/cluster`, as
//! `Authorization: Bearer <token>` (either form works on both routes). A request without the
//! right token gets 401 and a message saying how to pass it. Without a token the routes are not
//! served, and the silo says so when it starts. The token is never logged.
//!
//! The silo prints `granary silo <id> ready at <address>` once it is active, stops cleanly on
//! SIGINT or SIGTERM, and exits with status 3 if the cluster declares it dead.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

mod dashboard;
mod sinks;
mod telemetry;

use granary::{ClusterConfig, Placement, Silo, SiloBuilder, SiloConfig, SiloEvent};
use granary_events::{Relay, RelayConfig, RelayMetrics};
use granary_redis::{RedisConfig, RedisMembership, RedisStore, RedisStreamsSink};
use serde::Deserialize;

/// How a silo process runs: see the crate docs for each setting.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The silo's name.
    pub name: Option<String>,
    /// The cluster id.
    pub cluster: Option<String>,
    /// The cluster secret.
    pub secret: Option<String>,
    /// The Redis URL.
    pub redis: Option<String>,
    /// The listen address.
    pub listen: Option<String>,
    /// The advertised address.
    pub advertise: Option<String>,
    /// The placement of new activations.
    pub placement: Option<String>,
    /// `production` or `test`.
    pub profile: Option<String>,
    /// `join` (the default: the cluster must exist) or `create` (create it if missing).
    pub bootstrap: Option<String>,
    /// How long a grain stays active without calls, e.g. `90s`.
    pub idle_after: Option<String>,
    /// The largest event `ctx.publish` takes, in bytes.
    pub max_event_size: Option<String>,
    /// Refusals of an event by a sink before it is dead-lettered.
    pub relay_max_refusals: Option<String>,
    /// The HTTP address: `/metrics`, and `/dashboard` when `dashboard_token` is set.
    pub metrics: Option<String>,
    /// The token the dashboard requires; without one the dashboard is not served.
    pub dashboard_token: Option<String>,
    /// Prefix of the Redis streams events go to.
    pub events_prefix: Option<String>,
    /// NATS URL events also go to.
    pub nats: Option<String>,
    /// NATS JetStream stream of the events.
    pub nats_stream: Option<String>,
    /// Prefix of the NATS subjects of the events.
    pub nats_subjects: Option<String>,
    /// RabbitMQ URI events also go to.
    pub amqp: Option<String>,
    /// RabbitMQ exchange of the events.
    pub amqp_exchange: Option<String>,
    /// Kafka bootstrap servers events also go to (cargo feature `kafka`).
    pub kafka: Option<String>,
    /// SQS events also go to: `aws`, or the URL of an SQS-compatible server (cargo feature
    /// `sqs`).
    pub sqs: Option<String>,
    /// Prefix of the Kafka topics and SQS queues events go to.
    pub queue_prefix: Option<String>,
    /// The event types some sinks get: `match.ended=kafka; player.died=sqs,nats`.
    pub routes: Option<String>,
    /// The OpenTelemetry collector (OTLP/HTTP) the spans are exported to.
    pub otlp: Option<String>,
}

/// Why a silo process could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// A setting is missing or invalid; the message names it and says what it takes.
    #[error("setting {name}: {problem}")]
    Setting {
        /// The setting (its environment variable).
        name: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// The settings file cannot be read or parsed.
    #[error("settings file {path}: {problem}")]
    File {
        /// The file.
        path: String,
        /// What is wrong.
        problem: String,
    },
    /// Redis refused or could not be reached (a wrong URL in `GRANARY_REDIS` is one cause: the
    /// message then names the setting).
    #[error("{prefix}{0}", prefix = redis_setting(.0))]
    Redis(#[from] granary_redis::ConnectError),
    /// The silo could not start.
    #[error(transparent)]
    Start(#[from] granary::StartError),
    /// The silo did not stop cleanly.
    #[error(transparent)]
    Shutdown(#[from] granary::ShutdownError),
    /// An event queue refused or could not be reached.
    #[error("event queue: {0}")]
    Events(String),
    /// The cluster declared this silo dead; it stopped serving. Restart it: it joins anew.
    #[error("the cluster declared this silo dead; it stopped serving")]
    DeclaredDead,
}

impl NodeError {
    /// The process exit status for this error: 3 when declared dead, 2 for settings (an
    /// invalid Redis URL included), 1 else.
    #[must_use]
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::DeclaredDead => 3,
            Self::Setting { .. }
            | Self::File { .. }
            | Self::Redis(granary_redis::ConnectError::Config(_)) => 2,
            _ => 1,
        }
    }
}

/// Names the setting when Redis could not be reached or the URL is invalid.
fn redis_setting(err: &granary_redis::ConnectError) -> &'static str {
    match err {
        granary_redis::ConnectError::Config(_)
        | granary_redis::ConnectError::Unreachable { .. } => "setting GRANARY_REDIS: ",
        _ => "",
    }
}

impl Settings {
    /// Reads `path` (if given), then applies the `GRANARY_*` environment variables.
    ///
    /// # Errors
    /// [`NodeError::File`] if the file cannot be read or parsed.
    pub fn load(path: Option<&str>) -> Result<Self, NodeError> {
        let mut settings = match path {
            Some(path) => Self::from_file(Path::new(path))?,
            None => Self::default(),
        };
        settings.apply_env(|name| std::env::var(name).ok());
        Ok(settings)
    }

    fn from_file(path: &Path) -> Result<Self, NodeError> {
        let file = |problem: String| NodeError::File {
            path: path.display().to_string(),
            problem,
        };
        let text = std::fs::read_to_string(path).map_err(|e| file(e.to_string()))?;
        toml::from_str(&text).map_err(|e| file(e.to_string()))
    }

    fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) {
        for (name, slot) in [
            ("GRANARY_NAME", &mut self.name),
            ("GRANARY_CLUSTER", &mut self.cluster),
            ("GRANARY_SECRET", &mut self.secret),
            ("GRANARY_REDIS", &mut self.redis),
            ("GRANARY_LISTEN", &mut self.listen),
            ("GRANARY_ADVERTISE", &mut self.advertise),
            ("GRANARY_PLACEMENT", &mut self.placement),
            ("GRANARY_PROFILE", &mut self.profile),
            ("GRANARY_BOOTSTRAP", &mut self.bootstrap),
            ("GRANARY_IDLE_AFTER", &mut self.idle_after),
            ("GRANARY_MAX_EVENT_SIZE", &mut self.max_event_size),
            ("GRANARY_RELAY_MAX_REFUSALS", &mut self.relay_max_refusals),
            ("GRANARY_METRICS", &mut self.metrics),
            ("GRANARY_DASHBOARD_TOKEN", &mut self.dashboard_token),
            ("GRANARY_EVENTS_PREFIX", &mut self.events_prefix),
            ("GRANARY_NATS", &mut self.nats),
            ("GRANARY_NATS_STREAM", &mut self.nats_stream),
            ("GRANARY_NATS_SUBJECTS", &mut self.nats_subjects),
            ("GRANARY_AMQP", &mut self.amqp),
            ("GRANARY_AMQP_EXCHANGE", &mut self.amqp_exchange),
            ("GRANARY_KAFKA", &mut self.kafka),
            ("GRANARY_SQS", &mut self.sqs),
            ("GRANARY_QUEUE_PREFIX", &mut self.queue_prefix),
            ("GRANARY_ROUTES", &mut self.routes),
            ("GRANARY_OTLP", &mut self.otlp),
        ] {
            if let Some(value) = var(name) {
                *slot = Some(value);
            }
        }
    }
}

fn required(value: Option<&String>, name: &'static str, what: &str) -> Result<String, NodeError> {
    value.cloned().ok_or_else(|| NodeError::Setting {
        name,
        problem: format!(
            "missing {what}: set {name}, or `{}` in the settings file",
            file_key(name)
        ),
    })
}

/// The settings file's key of the variable `name`.
fn file_key(name: &str) -> String {
    name.trim_start_matches("GRANARY_").to_lowercase()
}

fn address(value: Option<&String>, name: &'static str) -> Result<Option<SocketAddr>, NodeError> {
    value
        .map(|v| {
            v.parse().map_err(|e| NodeError::Setting {
                name,
                problem: format!("{v:?} is not an address like 127.0.0.1:11111 ({e})"),
            })
        })
        .transpose()
}

/// The validated form of [`Settings`].
struct Resolved {
    name: String,
    cluster: String,
    secret: String,
    redis: String,
    listen: SocketAddr,
    advertise: Option<SocketAddr>,
    placement: Placement,
    test_profile: bool,
    /// Create the cluster in Redis if it does not exist.
    create: bool,
    /// `GRANARY_IDLE_AFTER`, if set.
    idle_after: Option<std::time::Duration>,
    /// `GRANARY_MAX_EVENT_SIZE`, if set.
    max_event_size: Option<usize>,
    /// `GRANARY_RELAY_MAX_REFUSALS`, if set.
    relay_max_refusals: Option<u32>,
    http: Option<SocketAddr>,
    dashboard_token: Option<String>,
    /// The URL the spans are posted to.
    otlp: Option<String>,
    /// The event sinks and routes.
    routing: sinks::Routing,
}

/// The URL OTLP/HTTP traces are posted to, from `GRANARY_OTLP`; an error in a build without the
/// `opentelemetry` feature.
fn otlp_traces_url(value: &str) -> Result<String, NodeError> {
    let problem = |problem: String| NodeError::Setting {
        name: "GRANARY_OTLP",
        problem,
    };
    if !cfg!(feature = "opentelemetry") {
        return Err(problem(format!(
            "built without the opentelemetry feature: build granary-node with \
             `--features opentelemetry` to export spans to {value:?}, or unset it"
        )));
    }
    let base = value.trim_end_matches('/');
    match base.strip_prefix("http://") {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') => {
            Ok(if base.ends_with("/v1/traces") {
                base.to_owned()
            } else {
                format!("{base}/v1/traces")
            })
        }
        _ => Err(problem(format!(
            "{value:?} is not an OTLP/HTTP endpoint like http://127.0.0.1:4318 (plain HTTP \
             only: for TLS, export through a local collector)"
        ))),
    }
}

/// A duration such as `200ms`, `90s`, `15m` or `1h`; `None` if it is not one (or is zero).
fn duration(value: &str) -> Option<std::time::Duration> {
    let value = value.trim();
    let digits = value.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = value.split_at(digits);
    let n: u64 = number.parse().ok().filter(|n| *n > 0)?;
    let secs = |factor: u64| n.checked_mul(factor).map(std::time::Duration::from_secs);
    match unit.trim() {
        "ms" => Some(std::time::Duration::from_millis(n)),
        "s" => secs(1),
        "m" => secs(60),
        "h" => secs(3600),
        _ => None,
    }
}

/// A setting that is a whole number of at least 1, if set.
fn positive<T: std::str::FromStr + PartialOrd + From<u8>>(
    value: Option<&str>,
    name: &'static str,
    what: &str,
) -> Result<Option<T>, NodeError> {
    value
        .map(|value| {
            value
                .trim()
                .parse::<T>()
                .ok()
                .filter(|n| *n >= T::from(1))
                .ok_or_else(|| NodeError::Setting {
                    name,
                    problem: format!("{value:?} is not {what}"),
                })
        })
        .transpose()
}

fn resolve(settings: &Settings) -> Result<Resolved, NodeError> {
    let secret = required(
        settings.secret.as_ref(),
        "GRANARY_SECRET",
        "the cluster secret",
    )?;
    if secret.len() < 16 {
        return Err(NodeError::Setting {
            name: "GRANARY_SECRET",
            problem: "too short: use at least 16 characters (32 random bytes, hex, is good)".into(),
        });
    }
    let placement = match settings.placement.as_deref().unwrap_or("prefer-local") {
        "prefer-local" => Placement::PreferLocal,
        "hash" => Placement::Hash,
        "random" => Placement::Random,
        "least-loaded" => Placement::LeastLoaded,
        other => {
            return Err(NodeError::Setting {
                name: "GRANARY_PLACEMENT",
                problem: format!("{other:?}: use prefer-local, hash, random or least-loaded"),
            });
        }
    };
    let test_profile = match settings.profile.as_deref().unwrap_or("production") {
        "production" => false,
        "test" => true,
        other => {
            return Err(NodeError::Setting {
                name: "GRANARY_PROFILE",
                problem: format!("{other:?}: use production or test"),
            });
        }
    };
    let create = match settings.bootstrap.as_deref().unwrap_or("join") {
        "join" => false,
        "create" => true,
        other => {
            return Err(NodeError::Setting {
                name: "GRANARY_BOOTSTRAP",
                problem: format!(
                    "{other:?}: use join (the cluster must exist) or create (create it if missing)"
                ),
            });
        }
    };
    let idle_after = settings
        .idle_after
        .as_deref()
        .map(|value| {
            duration(value).ok_or_else(|| NodeError::Setting {
                name: "GRANARY_IDLE_AFTER",
                problem: format!(
                    "{value:?} is not a duration like 200ms, 90s, 15m or 1h (a positive whole number and a unit)"
                ),
            })
        })
        .transpose()?;
    let max_event_size = positive::<usize>(
        settings.max_event_size.as_deref(),
        "GRANARY_MAX_EVENT_SIZE",
        "a number of bytes, at least 1 (1048576 is 1 MiB)",
    )?;
    let relay_max_refusals = positive::<u32>(
        settings.relay_max_refusals.as_deref(),
        "GRANARY_RELAY_MAX_REFUSALS",
        "a whole number of refusals, at least 1",
    )?;
    let http = address(settings.metrics.as_ref(), "GRANARY_METRICS")?;
    let dashboard_token = settings.dashboard_token.clone();
    if let Some(token) = &dashboard_token {
        // The problems name the setting, never the token's value.
        if token.len() < 16 {
            return Err(NodeError::Setting {
                name: "GRANARY_DASHBOARD_TOKEN",
                problem: "too short: use at least 16 characters (32 random bytes, hex, is good)"
                    .into(),
            });
        }
        if http.is_none() {
            return Err(NodeError::Setting {
                name: "GRANARY_DASHBOARD_TOKEN",
                problem: "set, but GRANARY_METRICS (the HTTP address that serves the dashboard) \
                          is not"
                    .into(),
            });
        }
    }
    let otlp = settings.otlp.as_deref().map(otlp_traces_url).transpose()?;
    let routing = sinks::Routing::resolve(settings)?;
    Ok(Resolved {
        name: settings.name.clone().unwrap_or_else(|| "silo".into()),
        cluster: required(
            settings.cluster.as_ref(),
            "GRANARY_CLUSTER",
            "the cluster id",
        )?,
        secret,
        redis: required(settings.redis.as_ref(), "GRANARY_REDIS", "the Redis URL")?,
        listen: address(settings.listen.as_ref(), "GRANARY_LISTEN")?
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 11111))),
        advertise: address(settings.advertise.as_ref(), "GRANARY_ADVERTISE")?,
        placement,
        test_profile,
        create,
        idle_after,
        max_event_size,
        relay_max_refusals,
        http,
        dashboard_token,
        otlp,
        routing,
    })
}

/// Runs a silo until SIGINT or SIGTERM (then stops it cleanly) or until the cluster declares it
/// dead. `register` registers the grain types.
///
/// Everything that can be checked before the silo joins is checked first, in this order: the
/// settings, the metrics address (bound), Redis, the event queues. A silo that fails one of
/// them never joins the cluster.
///
/// It installs the process's tracing subscriber (unless one is installed already): log lines
/// by `RUST_LOG`, and the OpenTelemetry export when `GRANARY_OTLP` is set, flushed when the
/// silo stops.
///
/// # Errors
/// A [`NodeError`] saying what stopped the silo.
pub async fn run(
    settings: Settings,
    register: impl FnOnce(SiloBuilder) -> SiloBuilder,
) -> Result<(), NodeError> {
    run_with(settings, register, |_| {}).await
}

/// As [`run`], and hands the silo to `started` once it is active, before the ready line: a
/// test harness reaches the running silo through it (the chaos suite's `chaos-silo` injects
/// partitions into its transport).
///
/// # Errors
/// As [`run`].
pub async fn run_with(
    settings: Settings,
    register: impl FnOnce(SiloBuilder) -> SiloBuilder,
    started: impl FnOnce(&Silo),
) -> Result<(), NodeError> {
    let resolved = resolve(&settings);
    let silo_name = resolved.as_ref().map_or("silo", |r| r.name.as_str());
    let otlp = resolved.as_ref().ok().and_then(|r| r.otlp.as_deref());
    let telemetry = telemetry::install(silo_name, otlp)?;
    // Boxed: the running silo's future is large (16 KiB), and callers' futures hold it.
    let result = Box::pin(serve(&settings, resolved?, register, started)).await;
    telemetry.shutdown().await;
    result
}

/// [`run`] once the settings are resolved and the subscriber installed.
async fn serve(
    settings: &Settings,
    r: Resolved,
    register: impl FnOnce(SiloBuilder) -> SiloBuilder,
    started: impl FnOnce(&Silo),
) -> Result<(), NodeError> {
    let http_listener = r
        .http
        .map(|addr| {
            std::net::TcpListener::bind(addr).map_err(|e| NodeError::Setting {
                name: "GRANARY_METRICS",
                problem: format!("cannot listen on {addr}: {e}"),
            })
        })
        .transpose()?;
    let bootstrap = if r.create {
        granary_redis::Bootstrap::CreateIfMissing
    } else {
        granary_redis::Bootstrap::RequireExisting
    };
    let store = match RedisStore::connect(
        RedisConfig::new(&r.redis, &r.cluster).bootstrap(bootstrap),
    )
    .await
    {
        Ok(store) => Arc::new(store),
        Err(granary_redis::ConnectError::NoCluster { cluster, url }) => {
            return Err(NodeError::Setting {
                name: "GRANARY_BOOTSTRAP",
                problem: format!(
                    "Redis at {url} holds no cluster {cluster:?}, and a silo only joins an \
                     existing cluster by default. To start a new cluster, start its first silo \
                     with GRANARY_BOOTSTRAP=create (or `bootstrap = \"create\"` in the settings \
                     file). If the cluster existed, Redis lost its data: restore it rather than \
                     starting an empty cluster"
                ),
            });
        }
        Err(err) => return Err(err.into()),
    };
    let prefix = settings.events_prefix.as_deref().unwrap_or("events:");
    let relay = r
        .routing
        .apply(
            settings,
            store.clone(),
            prefix,
            Relay::builder(store.clone()).config(RelayConfig {
                max_refusals: r
                    .relay_max_refusals
                    .unwrap_or(RelayConfig::default().max_refusals),
                ..RelayConfig::default()
            }),
        )
        .await?;
    let mut cluster = ClusterConfig::new(&r.cluster, r.secret.as_bytes(), r.listen);
    cluster.advertise = r.advertise;
    cluster.placement = r.placement;
    let mut config = SiloConfig {
        name: r.name,
        ..SiloConfig::default()
    };
    if r.test_profile {
        cluster = cluster.test_profile();
        config = SiloConfig {
            name: config.name,
            ..SiloConfig::test_profile()
        };
    }
    if let Some(size) = r.max_event_size {
        config.max_event_size = size;
    }
    if let Some(idle) = r.idle_after {
        config.idle_timeout = idle;
        config.collection_quantum = config.collection_quantum.min(idle);
    }
    let builder = Silo::builder()
        .config(config)
        .storage(store.clone())
        .membership(Arc::new(RedisMembership::new(store.clone())))
        .cluster(cluster);
    let silo = register(builder).start().await?;
    started(&silo);
    let relay = relay.owner(silo.shard_owner()).start();
    let dashboard = r.dashboard_token.clone().map(|token| {
        Arc::new(dashboard::Dashboard::new(
            &r.cluster,
            token,
            RedisMembership::new(store.clone()),
            RedisStreamsSink::new(store.clone(), prefix),
        ))
    });
    let mut events = silo.events();
    #[allow(
        clippy::print_stdout,
        reason = "the ready line is the process's interface"
    )]
    {
        println!(
            "granary silo {} ready at {}",
            silo.id(),
            silo.address().map_or_else(String::new, |a| a.to_string())
        );
        if let Some(addr) = r.http {
            println!("metrics at http://{addr}/metrics");
        }
    }
    let http = match http_listener {
        Some(listener) => Some(serve_http(
            silo.metrics(),
            relay.metrics(),
            dashboard,
            listener,
        )?),
        None => None,
    };
    let dead = events.next_where(|e| matches!(e, SiloEvent::DeclaredDead));
    let result = tokio::select! {
        () = stop_signal() => {
            silo.shutdown().await?;
            Ok(())
        }
        Some(_) = dead => Err(NodeError::DeclaredDead),
    };
    relay.stop().await;
    if let Some(server) = http {
        server.stop(true).await;
    }
    result
}

async fn stop_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handlers can be installed");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The text `/metrics` serves: the silo's metrics, then its relay's; `None` once the silo is
/// gone.
fn render_metrics(silo: &granary::SiloMetrics, relay: &RelayMetrics) -> Option<String> {
    let mut text = String::new();
    if !silo.encode(&mut text) {
        return None;
    }
    relay.encode(&mut text);
    text.push_str("# EOF\n");
    Some(text)
}

/// Serves `/metrics` (Prometheus text: the silo's and its relay's), and the dashboard if there
/// is one, on `listener`; returns the handle that stops the server.
fn serve_http(
    silo: granary::SiloMetrics,
    relay: RelayMetrics,
    dashboard: Option<Arc<dashboard::Dashboard>>,
    listener: std::net::TcpListener,
) -> Result<actix_web::dev::ServerHandle, NodeError> {
    use actix_web::{App, HttpResponse, HttpServer, web};
    let addr = listener
        .local_addr()
        .map_or_else(|_| "?".to_owned(), |a| a.to_string());
    let with_dashboard = dashboard.is_some();
    let server = HttpServer::new(move || {
        let (silo, relay) = (silo.clone(), relay.clone());
        let dashboard = dashboard.clone();
        App::new()
            .route(
                "/metrics",
                web::get().to(move || {
                    let text = render_metrics(&silo, &relay);
                    async move {
                        match text {
                            Some(text) => HttpResponse::Ok()
                                // prometheus-client writes OpenMetrics text (`# EOF`
                                // ends it): Prometheus parses it by this content type.
                                .content_type(
                                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                                )
                                .body(text),
                            None => HttpResponse::ServiceUnavailable().body("the silo stopped"),
                        }
                    }
                }),
            )
            .configure(|config| {
                if let Some(dashboard) = &dashboard {
                    dashboard.routes(config);
                }
            })
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .map_err(|e| NodeError::Setting {
        name: "GRANARY_METRICS",
        problem: format!("cannot serve on {addr:?}: {e}"),
    })?
    .run();
    let handle = server.handle();
    tokio::spawn(server);
    #[allow(clippy::print_stdout, reason = "the process's interface")]
    {
        if with_dashboard {
            println!("dashboard at http://{addr}/dashboard?token=<GRANARY_DASHBOARD_TOKEN>");
        } else {
            println!("dashboard off: set GRANARY_DASHBOARD_TOKEN to serve it");
        }
    }
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Settings {
        let mut settings = Settings::default();
        settings.apply_env(|name| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        });
        settings
    }

    #[test]
    fn environment_variables_configure_a_silo() {
        let settings = env(&[
            ("GRANARY_CLUSTER", "prod"),
            ("GRANARY_SECRET", "0123456789abcdef0123"),
            ("GRANARY_REDIS", "redis://r:6379"),
            ("GRANARY_LISTEN", "10.0.0.5:7000"),
            ("GRANARY_PLACEMENT", "hash"),
            ("GRANARY_PROFILE", "test"),
        ]);
        let r = resolve(&settings).unwrap();
        assert_eq!(r.cluster, "prod");
        assert_eq!(r.listen, "10.0.0.5:7000".parse().unwrap());
        assert_eq!(r.placement, Placement::Hash);
        assert!(r.test_profile);
    }

    /// The settings of a minimal silo plus `extra`, resolved.
    fn with(extra: &[(&'static str, &'static str)]) -> Result<Resolved, NodeError> {
        let mut pairs = vec![
            ("GRANARY_CLUSTER", "c"),
            ("GRANARY_SECRET", "0123456789abcdef"),
            ("GRANARY_REDIS", "redis://x"),
        ];
        pairs.extend_from_slice(extra);
        resolve(&env(&pairs))
    }

    #[test]
    fn a_silo_joins_by_default_and_idle_collection_can_be_set() {
        let r = with(&[]).unwrap();
        assert!(!r.create, "join is the default");
        assert_eq!(r.idle_after, None);
        assert!(with(&[("GRANARY_BOOTSTRAP", "create")]).unwrap().create);
        assert!(!with(&[("GRANARY_BOOTSTRAP", "join")]).unwrap().create);
        let err = with(&[("GRANARY_BOOTSTRAP", "new")]).err().unwrap();
        assert!(err.to_string().contains("GRANARY_BOOTSTRAP"), "{err}");
        assert_eq!(err.exit_code(), 2);

        assert_eq!(r.max_event_size, None);
        assert_eq!(r.relay_max_refusals, None);
        let limits = with(&[
            ("GRANARY_MAX_EVENT_SIZE", "65536"),
            ("GRANARY_RELAY_MAX_REFUSALS", "3"),
        ])
        .unwrap();
        assert_eq!(limits.max_event_size, Some(65_536));
        assert_eq!(limits.relay_max_refusals, Some(3));
        for (name, bad) in [
            ("GRANARY_MAX_EVENT_SIZE", "0"),
            ("GRANARY_MAX_EVENT_SIZE", "1MiB"),
            ("GRANARY_RELAY_MAX_REFUSALS", "-1"),
            ("GRANARY_RELAY_MAX_REFUSALS", "99999999999"),
        ] {
            let err = with(&[(name, bad)]).err().unwrap();
            assert!(err.to_string().contains(name), "{name}={bad}: {err}");
            assert_eq!(err.exit_code(), 2);
        }

        let idle = |value: &'static str| with(&[("GRANARY_IDLE_AFTER", value)]);
        let secs = std::time::Duration::from_secs;
        assert_eq!(idle("90s").unwrap().idle_after, Some(secs(90)));
        assert_eq!(idle("15m").unwrap().idle_after, Some(secs(900)));
        assert_eq!(idle("1h").unwrap().idle_after, Some(secs(3600)));
        assert_eq!(
            idle("200ms").unwrap().idle_after,
            Some(std::time::Duration::from_millis(200))
        );
        for bad in [
            "",
            "15",
            "0s",
            "-1s",
            "1.5s",
            "1d",
            "s",
            "99999999999999999999h",
        ] {
            let err = idle(bad).err().unwrap();
            assert!(
                err.to_string().contains("GRANARY_IDLE_AFTER"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn a_file_is_read_and_the_environment_wins() {
        let mut settings: Settings = toml::from_str(
            "cluster = \"from-file\"\nsecret = \"0123456789abcdef0123\"\nredis = \"redis://f\"\nname = \"a\"",
        )
        .unwrap();
        settings.apply_env(|n| (n == "GRANARY_NAME").then(|| "b".to_owned()));
        let r = resolve(&settings).unwrap();
        assert_eq!((r.cluster.as_str(), r.name.as_str()), ("from-file", "b"));
        assert!(
            toml::from_str::<Settings>("clustr = \"typo\"").is_err(),
            "unknown keys are refused"
        );
    }

    #[test]
    fn missing_and_bad_settings_say_which_and_why() {
        let err = resolve(&env(&[])).err().unwrap();
        assert!(err.to_string().contains("GRANARY_SECRET"), "{err}");
        assert!(
            err.to_string().contains("`secret` in the settings file"),
            "{err}"
        );
        let err = resolve(&env(&[("GRANARY_SECRET", "short")])).err().unwrap();
        assert!(err.to_string().contains("too short"), "{err}");
        let base = [
            ("GRANARY_CLUSTER", "c"),
            ("GRANARY_SECRET", "0123456789abcdef"),
            ("GRANARY_REDIS", "redis://x"),
        ];
        let mut bad = base.to_vec();
        bad.push(("GRANARY_LISTEN", "nowhere"));
        let err = resolve(&env(&bad)).err().unwrap();
        assert!(err.to_string().contains("GRANARY_LISTEN"), "{err}");
        let mut bad = base.to_vec();
        bad.push(("GRANARY_PLACEMENT", "closest"));
        assert_eq!(resolve(&env(&bad)).err().unwrap().exit_code(), 2);
    }

    #[test]
    fn an_otlp_endpoint_needs_the_feature_and_plain_http() {
        let with = |otlp: &'static str| {
            resolve(&env(&[
                ("GRANARY_CLUSTER", "c"),
                ("GRANARY_SECRET", "0123456789abcdef"),
                ("GRANARY_REDIS", "redis://x"),
                ("GRANARY_OTLP", otlp),
            ]))
        };
        if cfg!(feature = "opentelemetry") {
            let url = |otlp| with(otlp).unwrap().otlp.unwrap();
            assert_eq!(url("http://c:4318"), "http://c:4318/v1/traces");
            assert_eq!(url("http://c:4318/"), "http://c:4318/v1/traces");
            assert_eq!(url("http://c:4318/v1/traces"), "http://c:4318/v1/traces");
            for bad in ["https://c:4318", "c:4318", "http://"] {
                let err = with(bad).err().unwrap();
                assert!(err.to_string().contains("GRANARY_OTLP"), "{err}");
                assert!(err.to_string().contains("plain HTTP"), "{err}");
                assert_eq!(err.exit_code(), 2);
            }
        } else {
            let err = with("http://c:4318").err().unwrap();
            assert!(
                err.to_string()
                    .contains("GRANARY_OTLP: built without the opentelemetry feature"),
                "{err}"
            );
            assert_eq!(err.exit_code(), 2);
        }
        assert!(
            resolve(&env(&[
                ("GRANARY_CLUSTER", "c"),
                ("GRANARY_SECRET", "0123456789abcdef"),
                ("GRANARY_REDIS", "redis://x"),
            ]))
            .unwrap()
            .otlp
            .is_none()
        );
    }

    #[test]
    fn a_dashboard_token_needs_the_http_address_and_enough_characters() {
        let r = with(&[
            ("GRANARY_METRICS", "127.0.0.1:9100"),
            ("GRANARY_DASHBOARD_TOKEN", "a-dashboard-token-0123"),
        ])
        .unwrap();
        assert_eq!(r.dashboard_token.as_deref(), Some("a-dashboard-token-0123"));
        assert_eq!(r.http, Some("127.0.0.1:9100".parse().unwrap()));
        assert_eq!(
            with(&[("GRANARY_METRICS", "127.0.0.1:9100")])
                .unwrap()
                .dashboard_token,
            None,
            "no token: no dashboard"
        );
        let err = with(&[("GRANARY_DASHBOARD_TOKEN", "a-dashboard-token-0123")])
            .err()
            .unwrap();
        assert!(err.to_string().contains("GRANARY_METRICS"), "{err}");
        assert!(!err.to_string().contains("a-dashboard-token"), "{err}");
        let err = with(&[
            ("GRANARY_METRICS", "127.0.0.1:9100"),
            ("GRANARY_DASHBOARD_TOKEN", "short-secret"),
        ])
        .err()
        .unwrap();
        assert!(err.to_string().contains("too short"), "{err}");
        assert!(!err.to_string().contains("short-secret"), "{err}");
    }
}

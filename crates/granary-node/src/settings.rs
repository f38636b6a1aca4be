//! [`Settings`] (a TOML file, then the `GRANARY_*` environment variables) and their checked
//! form, [`Resolved`]: every setting is checked here, before anything connects.

use std::net::SocketAddr;
use std::path::Path;

use granary::Placement;
use serde::Deserialize;

use crate::{NodeError, sinks, tls};

mod link_tls;

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
    /// The grain types this silo hosts, comma-separated (default: every registered type).
    pub hosts: Option<String>,
    /// This silo's roles, comma-separated, e.g. `sim,eu`.
    pub roles: Option<String>,
    /// The role each grain type asks for: `game=sim; lobby=social`.
    pub type_roles: Option<String>,
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
    /// The PEM file of the CA that signed the cluster's certificates (turns TLS on).
    pub tls_ca: Option<String>,
    /// The PEM file of this silo's certificate chain.
    pub tls_cert: Option<String>,
    /// The PEM file of this silo's private key.
    pub tls_key: Option<String>,
    /// `1`: peers that dial this silo (silos and clients) must present a certificate.
    pub tls_mutual: Option<String>,
    /// The name every silo's certificate carries, checked instead of the address dialed.
    pub tls_server_name: Option<String>,
    /// The CA (PEM file) a `rediss://` Redis's certificate is checked against, besides the
    /// system's roots.
    pub redis_ca: Option<String>,
    /// The client certificate (PEM file) presented to Redis over TLS.
    pub redis_cert: Option<String>,
    /// The private key (PEM file) of `redis_cert`.
    pub redis_key: Option<String>,
    /// The CA (PEM file) a `tls://` NATS server's certificate is checked against.
    pub nats_ca: Option<String>,
    /// The client certificate (PEM file) presented to NATS.
    pub nats_cert: Option<String>,
    /// The private key (PEM file) of `nats_cert`.
    pub nats_key: Option<String>,
    /// The CA (PEM file) an `amqps://` RabbitMQ's certificate is checked against.
    pub amqp_ca: Option<String>,
    /// The client certificate (PEM file) presented to RabbitMQ.
    pub amqp_cert: Option<String>,
    /// The private key (PEM file) of `amqp_cert`.
    pub amqp_key: Option<String>,
    /// librdkafka properties for a Kafka that requires TLS or SASL: `name=value` pairs
    /// separated by `;`, e.g. `security.protocol=SASL_SSL; sasl.mechanism=SCRAM-SHA-512`.
    pub kafka_properties: Option<String>,
    /// Replicas that must acknowledge each commit, optionally with the wait: `1` or `1/500ms`.
    pub redis_wait_replicas: Option<String>,
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

    /// Settings from the variables `pairs` only: no file, no process environment.
    #[cfg(test)]
    pub(crate) fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        let mut settings = Self::default();
        settings.apply_env(|name| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        });
        settings
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
            ("GRANARY_HOSTS", &mut self.hosts),
            ("GRANARY_ROLES", &mut self.roles),
            ("GRANARY_TYPE_ROLES", &mut self.type_roles),
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
            ("GRANARY_TLS_CA", &mut self.tls_ca),
            ("GRANARY_TLS_CERT", &mut self.tls_cert),
            ("GRANARY_TLS_KEY", &mut self.tls_key),
            ("GRANARY_TLS_MUTUAL", &mut self.tls_mutual),
            ("GRANARY_TLS_SERVER_NAME", &mut self.tls_server_name),
            ("GRANARY_REDIS_CA", &mut self.redis_ca),
            ("GRANARY_REDIS_CERT", &mut self.redis_cert),
            ("GRANARY_REDIS_KEY", &mut self.redis_key),
            ("GRANARY_NATS_CA", &mut self.nats_ca),
            ("GRANARY_NATS_CERT", &mut self.nats_cert),
            ("GRANARY_NATS_KEY", &mut self.nats_key),
            ("GRANARY_AMQP_CA", &mut self.amqp_ca),
            ("GRANARY_AMQP_CERT", &mut self.amqp_cert),
            ("GRANARY_AMQP_KEY", &mut self.amqp_key),
            ("GRANARY_KAFKA_PROPERTIES", &mut self.kafka_properties),
            ("GRANARY_REDIS_WAIT_REPLICAS", &mut self.redis_wait_replicas),
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
pub(crate) struct Resolved {
    pub(crate) name: String,
    pub(crate) cluster: String,
    pub(crate) secret: String,
    pub(crate) redis: String,
    pub(crate) listen: SocketAddr,
    pub(crate) advertise: Option<SocketAddr>,
    pub(crate) placement: Placement,
    /// `GRANARY_HOSTS`: the grain types to host, if limited (checked against the registered
    /// types when the silo is built).
    pub(crate) hosts: Vec<String>,
    /// `GRANARY_ROLES`.
    pub(crate) roles: Vec<String>,
    /// `GRANARY_TYPE_ROLES`: (grain type, role).
    pub(crate) type_roles: Vec<(String, String)>,
    pub(crate) test_profile: bool,
    /// Create the cluster in Redis if it does not exist.
    pub(crate) create: bool,
    /// `GRANARY_IDLE_AFTER`, if set.
    pub(crate) idle_after: Option<std::time::Duration>,
    /// `GRANARY_MAX_EVENT_SIZE`, if set.
    pub(crate) max_event_size: Option<usize>,
    /// `GRANARY_RELAY_MAX_REFUSALS`, if set.
    pub(crate) relay_max_refusals: Option<u32>,
    pub(crate) http: Option<SocketAddr>,
    pub(crate) dashboard_token: Option<String>,
    /// The URL the spans are posted to.
    pub(crate) otlp: Option<String>,
    /// The event sinks and routes.
    pub(crate) routing: sinks::Routing,
    /// `GRANARY_TLS_*`: TLS on the silo's links.
    pub(crate) tls: Option<granary::TlsConfig>,
    /// The certificates of a `rediss://` Redis, if set.
    pub(crate) redis_tls: Option<tls::TlsFiles>,
    /// `GRANARY_REDIS_WAIT_REPLICAS`: replicas that must acknowledge each commit, and how long
    /// a commit waits for them.
    pub(crate) redis_wait_replicas: Option<(u32, std::time::Duration)>,
}

/// How long a commit waits for its replicas when `GRANARY_REDIS_WAIT_REPLICAS` gives no time:
/// well under the store's 2 s command deadline.
const DEFAULT_REPLICA_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// `GRANARY_REDIS_WAIT_REPLICAS`: `<replicas>` or `<replicas>/<wait>`, e.g. `1` or `2/300ms`.
fn wait_replicas(value: Option<&str>) -> Result<Option<(u32, std::time::Duration)>, NodeError> {
    let Some(value) = value else {
        return Ok(None);
    };
    let (replicas, wait) = value.split_once('/').unwrap_or((value, ""));
    let replicas = replicas.trim().parse::<u32>().ok().filter(|n| *n >= 1);
    let wait = if wait.trim().is_empty() {
        Some(DEFAULT_REPLICA_WAIT)
    } else {
        duration(wait).filter(|w| *w < std::time::Duration::from_secs(2))
    };
    match (replicas, wait) {
        (Some(replicas), Some(wait)) => Ok(Some((replicas, wait))),
        _ => Err(NodeError::Setting {
            name: "GRANARY_REDIS_WAIT_REPLICAS",
            problem: format!(
                "{value:?} is not <replicas> or <replicas>/<wait>: at least 1 replica, and a \
                 wait under 2s (the Redis command deadline), e.g. 1 or 1/500ms"
            ),
        }),
    }
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

/// The non-empty items of a comma-separated list.
fn list(value: Option<&str>) -> Vec<String> {
    value
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `GRANARY_TYPE_ROLES`: `type=role` pairs separated by `;`.
fn type_roles(value: Option<&str>) -> Result<Vec<(String, String)>, NodeError> {
    let mut pairs = Vec::new();
    for item in value.unwrap_or_default().split(';').map(str::trim) {
        if item.is_empty() {
            continue;
        }
        match item.split_once('=').map(|(t, r)| (t.trim(), r.trim())) {
            Some((grain_type, role)) if !grain_type.is_empty() && !role.is_empty() => {
                pairs.push((grain_type.to_owned(), role.to_owned()));
            }
            _ => {
                return Err(NodeError::Setting {
                    name: "GRANARY_TYPE_ROLES",
                    problem: format!(
                        "{item:?} is not grain-type=role (e.g. game=sim; lobby=social)"
                    ),
                });
            }
        }
    }
    Ok(pairs)
}

/// Checks every setting; the error names the first one that is missing or wrong.
pub(crate) fn resolve(settings: &Settings) -> Result<Resolved, NodeError> {
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
    let hosts = list(settings.hosts.as_deref());
    let roles = list(settings.roles.as_deref());
    let type_roles = type_roles(settings.type_roles.as_deref())?;
    let routing = sinks::Routing::resolve(settings)?;
    let tls = link_tls::resolve(settings)?;
    let redis_tls = tls::REDIS.resolve(settings)?;
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
        hosts,
        roles,
        type_roles,
        test_profile,
        create,
        idle_after,
        max_event_size,
        relay_max_refusals,
        http,
        dashboard_token,
        otlp,
        routing,
        tls,
        redis_tls,
        redis_wait_replicas: wait_replicas(settings.redis_wait_replicas.as_deref())?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Settings {
        Settings::from_pairs(pairs)
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
    fn replica_acknowledged_commits_are_read_and_checked() {
        assert_eq!(with(&[]).unwrap().redis_wait_replicas, None);
        let one = with(&[("GRANARY_REDIS_WAIT_REPLICAS", "1")]).unwrap();
        assert_eq!(one.redis_wait_replicas, Some((1, DEFAULT_REPLICA_WAIT)));
        let two = with(&[("GRANARY_REDIS_WAIT_REPLICAS", "2/300ms")]).unwrap();
        assert_eq!(
            two.redis_wait_replicas,
            Some((2, std::time::Duration::from_millis(300)))
        );
        for bad in ["0", "x", "1/5s", "1/soon"] {
            let err = with(&[("GRANARY_REDIS_WAIT_REPLICAS", bad)])
                .err()
                .expect("refused");
            assert!(
                err.to_string().contains("GRANARY_REDIS_WAIT_REPLICAS"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn hosted_types_roles_and_type_roles_are_read_and_checked() {
        let r = with(&[]).unwrap();
        assert!(r.hosts.is_empty() && r.roles.is_empty() && r.type_roles.is_empty());
        let r = with(&[
            ("GRANARY_HOSTS", "game, lobby"),
            ("GRANARY_ROLES", "sim,eu,"),
            ("GRANARY_TYPE_ROLES", "game=sim; lobby = social;"),
        ])
        .unwrap();
        assert_eq!(r.hosts, ["game", "lobby"]);
        assert_eq!(r.roles, ["sim", "eu"]);
        assert_eq!(
            r.type_roles,
            [
                ("game".to_owned(), "sim".to_owned()),
                ("lobby".to_owned(), "social".to_owned())
            ]
        );
        for bad in ["game", "game=", "=sim", "game=sim; lobby"] {
            let err = with(&[("GRANARY_TYPE_ROLES", bad)]).err().unwrap();
            assert!(
                err.to_string().contains("GRANARY_TYPE_ROLES"),
                "{bad}: {err}"
            );
            assert_eq!(err.exit_code(), 2);
        }
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

//! Where a silo process relays its events: the sinks its settings configure (Redis Streams
//! always; NATS JetStream, RabbitMQ, Kafka and SQS when their address is set) and the routes
//! that send an event type to some of them (`GRANARY_ROUTES`).
//!
//! Redis Streams gets every event, and so does every other configured sink that no route names;
//! a sink that routes name gets only the event types routed to it. So with Kafka and SQS
//! configured, `match.ended=kafka; player.died=sqs` sends match results to Kafka and deaths to
//! SQS, nothing else to either, and everything to Redis Streams (and to NATS and RabbitMQ, if
//! configured and not routed).

use std::sync::Arc;

use granary_events::{RelayBuilder, Sink};
use granary_redis::{RedisStore, RedisStreamsSink};

use crate::{NodeError, Settings, tls};

/// A kind of sink, as `GRANARY_ROUTES` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SinkKind {
    Redis,
    Nats,
    Amqp,
    Kafka,
    Sqs,
}

impl SinkKind {
    const ALL: [Self; 5] = [Self::Redis, Self::Nats, Self::Amqp, Self::Kafka, Self::Sqs];

    /// Its name in `GRANARY_ROUTES`.
    fn name(self) -> &'static str {
        match self {
            Self::Redis => "redis",
            Self::Nats => "nats",
            Self::Amqp => "amqp",
            Self::Kafka => "kafka",
            Self::Sqs => "sqs",
        }
    }

    /// The setting that configures it (`redis` is always configured).
    fn setting(self) -> &'static str {
        match self {
            Self::Redis => "GRANARY_REDIS",
            Self::Nats => "GRANARY_NATS",
            Self::Amqp => "GRANARY_AMQP",
            Self::Kafka => "GRANARY_KAFKA",
            Self::Sqs => "GRANARY_SQS",
        }
    }

    /// The cargo feature of `granary-node` it needs, if any.
    fn feature(self) -> Option<&'static str> {
        match self {
            Self::Kafka => Some("kafka"),
            Self::Sqs => Some("sqs"),
            _ => None,
        }
    }

    /// Whether this build can relay to it (Kafka and SQS need their features).
    fn built_in(self) -> bool {
        let (kafka, sqs) = (cfg!(feature = "kafka"), cfg!(feature = "sqs"));
        (self != Self::Kafka || kafka) && (self != Self::Sqs || sqs)
    }

    /// The settings of its TLS certificates, if it has them.
    fn tls(self) -> Option<&'static tls::TlsSettings> {
        match self {
            Self::Redis => Some(&tls::REDIS),
            Self::Nats => Some(&tls::NATS),
            Self::Amqp => Some(&tls::AMQP),
            Self::Kafka | Self::Sqs => None,
        }
    }

    fn address(self, settings: &Settings) -> Option<&str> {
        match self {
            Self::Redis => settings.redis.as_deref(),
            Self::Nats => settings.nats.as_deref(),
            Self::Amqp => settings.amqp.as_deref(),
            Self::Kafka => settings.kafka.as_deref(),
            Self::Sqs => settings.sqs.as_deref(),
        }
    }
}

/// The validated sinks and routes of a silo process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Routing {
    /// The configured sinks, in [`SinkKind::ALL`] order; `redis` first.
    configured: Vec<SinkKind>,
    /// `(event type, sinks)`, in the order given.
    routes: Vec<(String, Vec<SinkKind>)>,
    /// The NATS JetStream stream.
    nats_stream: String,
    /// The prefix of its subjects (`events.`).
    nats_subjects: String,
    /// The RabbitMQ exchange.
    amqp_exchange: String,
    /// The certificates of a `tls://` NATS, if set.
    nats_tls: Option<tls::TlsFiles>,
    /// The certificates of an `amqps://` RabbitMQ, if set.
    amqp_tls: Option<tls::TlsFiles>,
    /// `GRANARY_KAFKA_PROPERTIES`, checked.
    kafka_properties: Vec<(String, String)>,
}

/// The default NATS stream (`GRANARY_NATS_STREAM`).
const NATS_STREAM: &str = "GRANARY_EVENTS";
/// The default prefix of the NATS subjects (`GRANARY_NATS_SUBJECTS`).
const NATS_SUBJECTS: &str = "events.";
/// The default RabbitMQ exchange (`GRANARY_AMQP_EXCHANGE`).
const AMQP_EXCHANGE: &str = "granary.events";

/// Checks a name against what its server accepts.
fn check_name(
    value: &str,
    setting: &'static str,
    what: &str,
    allowed: impl Fn(char) -> bool,
) -> Result<(), NodeError> {
    if value.is_empty() || value.len() > 255 || !value.chars().all(allowed) {
        return Err(NodeError::Setting {
            name: setting,
            problem: format!("{value:?} is not a valid {what}"),
        });
    }
    Ok(())
}

impl Routing {
    /// Checks the sink settings of `settings`: addresses, names and `GRANARY_ROUTES`.
    pub(crate) fn resolve(settings: &Settings) -> Result<Self, NodeError> {
        let configured: Vec<SinkKind> = SinkKind::ALL
            .into_iter()
            .filter(|k| *k == SinkKind::Redis || k.address(settings).is_some())
            .collect();
        for kind in &configured {
            if let Some(feature) = kind.feature().filter(|_| !kind.built_in()) {
                return Err(NodeError::Setting {
                    name: kind.setting(),
                    problem: format!(
                        "built without the {feature} feature: build granary-node with \
                         `--features {feature}` (a game's host binary: enable it on its \
                         granary-cli or granary-node dependency), or unset it"
                    ),
                });
            }
        }
        if let Some(url) = &settings.sqs
            && url != "aws"
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(NodeError::Setting {
                name: "GRANARY_SQS",
                problem: format!(
                    "{url:?}: use `aws` (AWS itself, with the credentials and region of the \
                     environment) or the URL of an SQS-compatible server, e.g. \
                     http://127.0.0.1:5000"
                ),
            });
        }
        let routes = match settings.routes.as_deref() {
            Some(text) => parse_routes(text, &configured)?,
            None => Vec::new(),
        };
        let nats_stream = settings.nats_stream.as_deref().unwrap_or(NATS_STREAM);
        // JetStream stream names: no whitespace, `.`, `*`, `>`, path separators.
        check_name(
            nats_stream,
            "GRANARY_NATS_STREAM",
            "JetStream stream name (letters, digits, `-` and `_`)",
            |c| c.is_ascii_alphanumeric() || c == '-' || c == '_',
        )?;
        let nats_subjects = settings.nats_subjects.as_deref().unwrap_or(NATS_SUBJECTS);
        check_name(
            nats_subjects,
            "GRANARY_NATS_SUBJECTS",
            "subject prefix (tokens of letters, digits, `-` and `_`, each followed by `.`, \
             e.g. `staging.events.`)",
            |c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.',
        )?;
        if !nats_subjects.ends_with('.')
            || nats_subjects.starts_with('.')
            || nats_subjects.contains("..")
        {
            return Err(NodeError::Setting {
                name: "GRANARY_NATS_SUBJECTS",
                problem: format!(
                    "{nats_subjects:?}: write tokens each followed by `.`, e.g. `staging.events.`"
                ),
            });
        }
        let amqp_exchange = settings.amqp_exchange.as_deref().unwrap_or(AMQP_EXCHANGE);
        check_name(
            amqp_exchange,
            "GRANARY_AMQP_EXCHANGE",
            "RabbitMQ exchange name (letters, digits, `-`, `_`, `.` and `:`)",
            |c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'),
        )?;
        Ok(Self {
            configured,
            routes,
            nats_stream: nats_stream.to_owned(),
            nats_subjects: nats_subjects.to_owned(),
            amqp_exchange: amqp_exchange.to_owned(),
            nats_tls: tls::NATS.resolve(settings)?,
            amqp_tls: tls::AMQP.resolve(settings)?,
            kafka_properties: kafka_properties(settings)?,
        })
    }

    /// The sinks every event type goes to.
    fn defaults(&self) -> Vec<SinkKind> {
        self.configured
            .iter()
            .copied()
            .filter(|k| {
                *k == SinkKind::Redis || !self.routes.iter().any(|(_, sinks)| sinks.contains(k))
            })
            .collect()
    }

    /// Connects the configured sinks and sets up `relay` with them: Redis Streams under
    /// `prefix`; Kafka topics and SQS queues under `GRANARY_QUEUE_PREFIX`.
    pub(crate) async fn apply(
        &self,
        settings: &Settings,
        store: Arc<RedisStore>,
        prefix: &str,
        mut relay: RelayBuilder,
    ) -> Result<RelayBuilder, NodeError> {
        let mut sinks: Vec<(SinkKind, Arc<dyn Sink>)> = Vec::new();
        for kind in &self.configured {
            let address = kind.address(settings).unwrap_or_default();
            // Names the settings, never the address: a URL may carry a password.
            let settings_named = match kind.tls() {
                Some(link) if link.is_tls(address) => link.names(),
                _ => kind.setting().to_owned(),
            };
            let failed =
                |e: String| NodeError::Events(format!("{} ({settings_named}): {e}", kind.name()));
            let sink: Arc<dyn Sink> = match kind {
                SinkKind::Redis => Arc::new(RedisStreamsSink::new(store.clone(), prefix)),
                SinkKind::Nats => Arc::new(
                    granary_nats::NatsSink::connect_with_tls(
                        address,
                        &self.nats_stream,
                        &self.nats_subjects,
                        &self
                            .nats_tls
                            .as_ref()
                            .map(tls::TlsFiles::nats)
                            .unwrap_or_default(),
                    )
                    .await
                    .map_err(|e| failed(e.to_string()))?,
                ),
                SinkKind::Amqp => Arc::new(
                    granary_rabbitmq::RabbitSink::connect_with_tls(
                        address,
                        &self.amqp_exchange,
                        "",
                        &self
                            .amqp_tls
                            .as_ref()
                            .map(tls::TlsFiles::amqp)
                            .unwrap_or_default(),
                    )
                    .await
                    .map_err(|e| failed(e.to_string()))?,
                ),
                #[cfg(feature = "kafka")]
                SinkKind::Kafka => kafka(address, queue_prefix(settings), &self.kafka_properties)
                    .await
                    .map_err(failed)?,
                #[cfg(feature = "sqs")]
                SinkKind::Sqs => {
                    let routed: Vec<&str> = self
                        .routes
                        .iter()
                        .filter(|(_, sinks)| sinks.contains(&SinkKind::Sqs))
                        .map(|(event, _)| event.as_str())
                        .collect();
                    sqs(address, queue_prefix(settings), &routed)
                        .await
                        .map_err(failed)?
                }
                // `resolve` refuses a sink this build lacks.
                #[cfg(not(feature = "kafka"))]
                SinkKind::Kafka => return Err(failed("built without the kafka feature".into())),
                #[cfg(not(feature = "sqs"))]
                SinkKind::Sqs => return Err(failed("built without the sqs feature".into())),
            };
            sinks.push((*kind, sink));
        }
        let sink_of = |kind: SinkKind| {
            sinks
                .iter()
                .find(|(k, _)| *k == kind)
                .map(|(_, sink)| sink.clone())
        };
        for kind in self.defaults() {
            if let Some(sink) = sink_of(kind) {
                relay = relay.sink(sink);
            }
        }
        for (event, kinds) in &self.routes {
            for kind in self.targets(kinds) {
                if let Some(sink) = sink_of(kind) {
                    relay = relay.route(event, sink, event);
                }
            }
        }
        Ok(relay)
    }

    /// The sinks of a routed type: the defaults and its route's (a relay route replaces the
    /// defaults of its type, so they are listed again).
    fn targets(&self, kinds: &[SinkKind]) -> Vec<SinkKind> {
        let mut all = self.defaults();
        for kind in kinds {
            if !all.contains(kind) {
                all.push(*kind);
            }
        }
        all
    }
}

/// `GRANARY_QUEUE_PREFIX`: the prefix of Kafka topics and SQS queues.
#[cfg(any(feature = "kafka", feature = "sqs"))]
fn queue_prefix(settings: &Settings) -> &str {
    settings.queue_prefix.as_deref().unwrap_or("")
}

/// Parses `match.ended=kafka; player.died=sqs,nats`.
fn parse_routes(
    text: &str,
    configured: &[SinkKind],
) -> Result<Vec<(String, Vec<SinkKind>)>, NodeError> {
    let problem = |problem: String| NodeError::Setting {
        name: "GRANARY_ROUTES",
        problem,
    };
    let mut routes: Vec<(String, Vec<SinkKind>)> = Vec::new();
    for route in text.split(';').map(str::trim).filter(|r| !r.is_empty()) {
        let Some((event, list)) = route.split_once('=') else {
            return Err(problem(format!(
                "{route:?}: write `<event type>=<sink>[,<sink>…]`, routes separated by `;`, \
                 e.g. `match.ended=kafka; player.died=sqs,nats`"
            )));
        };
        let event = event.trim();
        if event.is_empty() {
            return Err(problem(format!("{route:?}: the event type is missing")));
        }
        if routes.iter().any(|(e, _)| e == event) {
            return Err(problem(format!(
                "{event:?} is routed twice: list all its sinks in one route"
            )));
        }
        let mut kinds = Vec::new();
        for name in list.split(',').map(str::trim) {
            let Some(kind) = SinkKind::ALL.into_iter().find(|k| k.name() == name) else {
                return Err(problem(format!(
                    "{event}: unknown sink {name:?}: use redis, nats, amqp, kafka or sqs"
                )));
            };
            if kind == SinkKind::Redis {
                return Err(problem(format!(
                    "{event}: redis gets every event already; route to nats, amqp, kafka or sqs"
                )));
            }
            if !configured.contains(&kind) {
                return Err(problem(format!(
                    "{event}: sink {name} is not configured: set {}",
                    kind.setting()
                )));
            }
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
        routes.push((event.to_owned(), kinds));
    }
    Ok(routes)
}

/// `GRANARY_KAFKA_PROPERTIES`: `name=value` pairs separated by `;`, for a Kafka sink.
fn kafka_properties(settings: &Settings) -> Result<Vec<(String, String)>, NodeError> {
    let problem = |problem: String| NodeError::Setting {
        name: "GRANARY_KAFKA_PROPERTIES",
        problem,
    };
    let Some(text) = settings.kafka_properties.as_deref() else {
        return Ok(Vec::new());
    };
    if settings.kafka.is_none() {
        return Err(problem("set, but GRANARY_KAFKA is not".into()));
    }
    let mut pairs = Vec::new();
    for (n, item) in text.split(';').map(str::trim).enumerate() {
        if item.is_empty() {
            continue;
        }
        // The problem never quotes the item: it may hold a password.
        let Some((name, value)) = item.split_once('=') else {
            return Err(problem(format!(
                "item {} is not name=value (e.g. security.protocol=SASL_SSL); items are \
                 separated by `;`",
                n + 1
            )));
        };
        pairs.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    #[cfg(feature = "kafka")]
    client_properties(&pairs).map_err(problem)?;
    Ok(pairs)
}

/// The Kafka clients' properties of `pairs`; a message if one is refused.
#[cfg(feature = "kafka")]
fn client_properties(
    pairs: &[(String, String)],
) -> Result<granary_kafka::ClientProperties, String> {
    pairs.iter().try_fold(
        granary_kafka::ClientProperties::new(),
        |all, (name, value)| all.set(name, value),
    )
}

#[cfg(feature = "kafka")]
async fn kafka(
    brokers: &str,
    prefix: &str,
    properties: &[(String, String)],
) -> Result<Arc<dyn Sink>, String> {
    let config = granary_kafka::KafkaSinkConfig {
        properties: client_properties(properties)?,
        ..granary_kafka::KafkaSinkConfig::default()
    };
    let sink = granary_kafka::KafkaSink::connect(brokers, prefix, config)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(sink))
}

/// An SQS sink, checked (SQS answers, accepts the credentials) and with the queues of the
/// event types routed to it created.
#[cfg(feature = "sqs")]
async fn sqs(endpoint: &str, prefix: &str, routed: &[&str]) -> Result<Arc<dyn Sink>, String> {
    let endpoint = if endpoint == "aws" {
        granary_sqs::SqsEndpoint::aws()
    } else {
        granary_sqs::SqsEndpoint::url(endpoint)
    };
    let sink = granary_sqs::SqsSink::new(endpoint.client().await, prefix);
    sink.check().await.map_err(|e| e.to_string())?;
    for event in routed {
        sink.ensure_queue(event).await.map_err(|e| e.to_string())?;
    }
    Ok(Arc::new(sink))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        Settings::from_pairs(pairs)
    }

    fn problem(pairs: &[(&str, &str)]) -> String {
        match Routing::resolve(&settings(pairs)) {
            Err(NodeError::Setting { name, problem }) => format!("{name}: {problem}"),
            other => panic!("expected a settings error, got {other:?}"),
        }
    }

    const NATS: (&str, &str) = ("GRANARY_NATS", "nats://n:4222");
    const AMQP: (&str, &str) = ("GRANARY_AMQP", "amqp://a:5672");

    #[test]
    fn without_routes_every_configured_sink_is_a_default() {
        let routing = Routing::resolve(&settings(&[("GRANARY_REDIS", "redis://r"), NATS])).unwrap();
        assert_eq!(routing.defaults(), vec![SinkKind::Redis, SinkKind::Nats]);
        assert!(routing.routes.is_empty());
    }

    #[test]
    fn a_routed_sink_gets_only_its_types_and_the_others_get_everything() {
        let routing = Routing::resolve(&settings(&[
            NATS,
            AMQP,
            (
                "GRANARY_ROUTES",
                " match.ended = amqp ;player.died=amqp,amqp,nats; ",
            ),
        ]))
        .unwrap();
        // NATS is routed: it gets only player.died; RabbitMQ only the two routed types.
        assert_eq!(routing.defaults(), vec![SinkKind::Redis]);
        assert_eq!(
            routing.routes,
            vec![
                ("match.ended".to_owned(), vec![SinkKind::Amqp]),
                (
                    "player.died".to_owned(),
                    vec![SinkKind::Amqp, SinkKind::Nats]
                ),
            ]
        );
        assert_eq!(
            routing.targets(&routing.routes[1].1),
            vec![SinkKind::Redis, SinkKind::Amqp, SinkKind::Nats]
        );
        let routing = Routing::resolve(&settings(&[
            NATS,
            AMQP,
            ("GRANARY_ROUTES", "match.ended=amqp"),
        ]))
        .unwrap();
        // NATS is named by no route: it gets every event, the routed ones too.
        assert_eq!(routing.defaults(), vec![SinkKind::Redis, SinkKind::Nats]);
        assert_eq!(
            routing.targets(&routing.routes[0].1),
            vec![SinkKind::Redis, SinkKind::Nats, SinkKind::Amqp]
        );
    }

    #[test]
    fn bad_routes_say_what_is_wrong() {
        let routes = |r: &'static str| [NATS, ("GRANARY_ROUTES", r)];
        for (given, expected) in [
            ("match.ended", "write `<event type>=<sink>"),
            ("=nats", "the event type is missing"),
            ("a=nats;a=nats", "\"a\" is routed twice"),
            ("a=redis", "redis gets every event already"),
            (
                "a=kafak",
                "unknown sink \"kafak\": use redis, nats, amqp, kafka or sqs",
            ),
            ("a=amqp", "sink amqp is not configured: set GRANARY_AMQP"),
            ("a=", "unknown sink \"\""),
        ] {
            let message = problem(&routes(given));
            assert!(message.starts_with("GRANARY_ROUTES: "), "{message}");
            assert!(message.contains(expected), "{given}: {message}");
        }
    }

    #[test]
    fn nats_and_rabbitmq_names_are_settings_checked_before_use() {
        let routing = Routing::resolve(&settings(&[NATS, AMQP])).unwrap();
        assert_eq!(
            (
                routing.nats_stream.as_str(),
                routing.nats_subjects.as_str(),
                routing.amqp_exchange.as_str()
            ),
            ("GRANARY_EVENTS", "events.", "granary.events")
        );
        let routing = Routing::resolve(&settings(&[
            ("GRANARY_NATS_STREAM", "STAGING_EVENTS"),
            ("GRANARY_NATS_SUBJECTS", "staging.events."),
            ("GRANARY_AMQP_EXCHANGE", "staging.events"),
        ]))
        .unwrap();
        assert_eq!(
            (
                routing.nats_stream.as_str(),
                routing.nats_subjects.as_str(),
                routing.amqp_exchange.as_str()
            ),
            ("STAGING_EVENTS", "staging.events.", "staging.events")
        );
        for (setting, value) in [
            ("GRANARY_NATS_STREAM", "staging.events"),
            ("GRANARY_NATS_STREAM", ""),
            ("GRANARY_NATS_SUBJECTS", "staging.events"),
            ("GRANARY_NATS_SUBJECTS", "staging..events."),
            ("GRANARY_NATS_SUBJECTS", "events.>"),
            ("GRANARY_AMQP_EXCHANGE", "staging events"),
        ] {
            let message = problem(&[(setting, value)]);
            assert!(message.starts_with(setting), "{value}: {message}");
        }
    }

    #[test]
    fn kafka_and_sqs_need_their_features_and_sqs_a_url() {
        for (kind, setting, value) in [
            (SinkKind::Kafka, "GRANARY_KAFKA", "127.0.0.1:9092"),
            (SinkKind::Sqs, "GRANARY_SQS", "http://127.0.0.1:5000"),
        ] {
            let resolved = Routing::resolve(&settings(&[(setting, value)]));
            if kind.built_in() {
                assert!(resolved.unwrap().defaults().contains(&kind));
            } else {
                let message = problem(&[(setting, value)]);
                assert!(
                    message.contains("built without the") && message.starts_with(setting),
                    "{message}"
                );
            }
        }
        if SinkKind::Sqs.built_in() {
            let message = problem(&[("GRANARY_SQS", "sqs.eu-west-1.amazonaws.com")]);
            assert!(message.contains("use `aws`"), "{message}");
            assert!(Routing::resolve(&settings(&[("GRANARY_SQS", "aws")])).is_ok());
        }
    }

    #[test]
    fn kafka_properties_are_name_value_pairs_for_a_configured_kafka() {
        const KAFKA: (&str, &str) = ("GRANARY_KAFKA", "127.0.0.1:9093");
        let properties = (
            "GRANARY_KAFKA_PROPERTIES",
            "security.protocol=SASL_SSL; sasl.mechanism = SCRAM-SHA-512 ;sasl.password=a=b;",
        );
        let message = problem(&[properties]);
        assert!(
            message.starts_with("GRANARY_KAFKA_PROPERTIES: set, but GRANARY_KAFKA is not"),
            "{message}"
        );
        if !SinkKind::Kafka.built_in() {
            return;
        }
        let routing = Routing::resolve(&settings(&[KAFKA, properties])).unwrap();
        assert_eq!(
            routing.kafka_properties,
            [
                ("security.protocol".to_owned(), "SASL_SSL".to_owned()),
                ("sasl.mechanism".to_owned(), "SCRAM-SHA-512".to_owned()),
                ("sasl.password".to_owned(), "a=b".to_owned()),
            ]
        );
        let message = problem(&[
            KAFKA,
            ("GRANARY_KAFKA_PROPERTIES", "ssl.ca.location=x; hunter2"),
        ]);
        assert!(message.contains("item 2 is not name=value"), "{message}");
        assert!(
            !message.contains("hunter2"),
            "a value is never shown: {message}"
        );
        let message = problem(&[KAFKA, ("GRANARY_KAFKA_PROPERTIES", "acks=1")]);
        assert!(message.contains("acks is set by Granary"), "{message}");
    }
}

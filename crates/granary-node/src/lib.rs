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
//! | `GRANARY_REDIS` | the Redis URL of state, directory and membership: `redis://host:port`, or for a Redis Cluster `redis+cluster://host1:port1,host2:port2` (seed nodes) | required |
//! | `GRANARY_LISTEN` | the transport's listen address | `0.0.0.0:11111` |
//! | `GRANARY_ADVERTISE` | the address other silos dial, if not the one bound | the bound address |
//! | `GRANARY_PLACEMENT` | `prefer-local`, `hash`, `random` or `least-loaded` | `prefer-local` |
//! | `GRANARY_HOSTS` | the grain types the silo hosts, comma-separated (each registered) | every registered type |
//! | `GRANARY_ROLES` | the silo's roles, comma-separated | none |
//! | `GRANARY_TYPE_ROLES` | the role a grain type asks for: `game=sim; lobby=social` | none |
//! | `GRANARY_PROFILE` | `production` or `test` (fast timings: failure detection in about a second) | `production` |
//! | `GRANARY_BOOTSTRAP` | `join`: start only if the cluster exists in Redis (a Redis that lost its data is not taken for a new, empty cluster); `create`: create the cluster if it does not exist, else join it (the first silo of a new cluster) | `join` |
//! | `GRANARY_IDLE_AFTER` | deactivate a grain after this long without calls: a number with `ms`, `s`, `m` or `h` (`90s`, `15m`) | the profile's: `15m` in production, `200ms` in test |
//! | `GRANARY_MAX_EVENT_SIZE` | the largest event `ctx.publish` takes, in bytes of JSON (raise it only if every queue the event goes to takes it) | `1048576` (1 MiB) |
//! | `GRANARY_RELAY_MAX_REFUSALS` | how many times a sink may refuse an event before the relay moves it to its shard's dead-letter stream (`granary events dead`) | `5` |
//! | `GRANARY_METRICS` | the HTTP address: Prometheus metrics at `http://<address>/metrics`, the health probes `/health/live` and `/health/ready`, and the dashboard when a token is set | off |
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
//! | `GRANARY_REDIS_WAIT_REPLICAS` | replica-acknowledged commits: each commit waits until this many replicas of its Redis primary confirmed it (`WAIT`), e.g. `1`, or `1/300ms` to set the wait (default 500 ms, under 2 s); fewer in time fails the call (`StorageError::NotReplicated`) | off |
//!
//! | `GRANARY_REDIS_CA`, `GRANARY_REDIS_CERT`, `GRANARY_REDIS_KEY` | for a `rediss://` Redis: the CA (PEM file) its certificate is checked against besides the system's roots, and the client certificate and key (PEM files) presented to a Redis that asks for one | off |
//! | `GRANARY_NATS_CA`, `GRANARY_NATS_CERT`, `GRANARY_NATS_KEY` | likewise for a `tls://` NATS | off |
//! | `GRANARY_AMQP_CA`, `GRANARY_AMQP_CERT`, `GRANARY_AMQP_KEY` | likewise for an `amqps://` RabbitMQ | off |
//! | `GRANARY_KAFKA_PROPERTIES` | librdkafka properties of the Kafka sink, for a broker that requires TLS or SASL: `name=value` pairs separated by `;`, e.g. `security.protocol=SASL_SSL; sasl.mechanism=SCRAM-SHA-512; sasl.username=granary; sasl.password=…; ssl.ca.location=/etc/granary/kafka-ca.pem` (the properties Granary sets itself, such as `acks`, are refused) | none |
//!
//! The certificate files are read and checked when the settings are (a missing file, one
//! without a PEM certificate or key, a certificate without its key, or certificates for a
//! plaintext URL are settings errors); a TLS handshake that fails (a server certificate the CA
//! did not sign, or expired; a plaintext server; a client certificate refused) fails the start
//! with an error naming the link's settings. `docs/operating.md` ("TLS") says how to make the
//! certificates.
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
//! # Health probes
//!
//! With `GRANARY_METRICS` set, the silo serves `/health/live` (200 while the HTTP server
//! answers) and `/health/ready` (200 only while the silo is `Active` in its own view of
//! membership, its lease holding, and its Redis answers a `PING` within 800 ms; otherwise 503
//! with a JSON body naming the failed checks), without the dashboard's token. The server
//! answers from before the silo joins (not ready: starting) until it stopped (not ready from
//! SIGTERM on). `docs/operating.md` has the Kubernetes probes.
//!
//! # Dashboard
//!
//! With `GRANARY_METRICS` and `GRANARY_DASHBOARD_TOKEN` set, the silo serves a web page of the
//! live cluster at `/dashboard`: every silo of the membership table with its status, heartbeat
//! age, activations (per grain type) and calls per second, and the newest events of the event
//! streams (`GRANARY_EVENTS_PREFIX`). It reads everything from Redis, so any silo shows the
//! whole cluster, and it refreshes every second. Its charts of the last 10 minutes (calls/s and
//! p99 latency per silo, activations per type, events/s and relay lag per sink) and its
//! per-method call and error counts come from a ring of samples the silo takes every 2 s of
//! every silo's `/metrics`, at the HTTP address each silo process publishes in Redis when it
//! joins. Open it as `/dashboard?token=<token>`; the page sends the token to its JSON API,
//! `/dashboard/api/cluster` and `/dashboard/history.json`, as
//! `Authorization: Bearer <token>` (either form works on every route). A request without the
//! right token gets 401 and a message saying how to pass it. Without a token the routes are not
//! served, and the silo says so when it starts. The token is never logged.
//!
//! The silo prints `granary silo <id> ready at <address>` once it is active, stops cleanly on
//! SIGINT or SIGTERM, and exits with status 3 if the cluster declares it dead.

mod dashboard;
mod error;
mod health;
mod http;
mod process;
mod settings;
mod sinks;
mod telemetry;
mod tls;

pub use error::NodeError;
pub use process::{run, run_with};
pub use settings::Settings;

//! `--redis` mode: each silo is its own OS process (this binary, started again with
//! `--serve-silo`), state, directory and membership live in the real Redis, each silo relays
//! the events of its outbox shards to Redis Streams (and to NATS, RabbitMQ, Kafka and SQS when
//! given: `match.ended` to Kafka and `player.died` to SQS, by `GRANARY_ROUTES`), and
//! a kill is a real SIGKILL.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use granary::provider::{MembershipTable, Outbox};
use granary_events::EventEnvelope;
use granary_redis::{RedisConfig, RedisMembership, RedisStore};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Where the silo processes connect and what they relay to.
pub(crate) struct Backends<'a> {
    pub(crate) redis: &'a str,
    pub(crate) nats: Option<&'a str>,
    pub(crate) amqp: Option<&'a str>,
    /// Kafka bootstrap servers `match.ended` also goes to.
    pub(crate) kafka: Option<&'a str>,
    /// SQS (`aws` or a URL) `player.died` also goes to.
    pub(crate) sqs: Option<&'a str>,
    /// Where the first silo serves its dashboard and metrics.
    pub(crate) dashboard: Option<SocketAddr>,
}

impl Backends<'_> {
    /// `GRANARY_ROUTES`: `match.ended` to Kafka, `player.died` to SQS (and every event to
    /// Redis Streams, NATS and RabbitMQ, which no route names).
    fn routes(&self) -> Option<String> {
        let routes: Vec<String> = [
            self.kafka
                .map(|_| format!("{}=kafka", crate::queues::TO_KAFKA)),
            self.sqs.map(|_| format!("{}=sqs", crate::queues::TO_SQS)),
        ]
        .into_iter()
        .flatten()
        .collect();
        (!routes.is_empty()).then(|| routes.join(";"))
    }
}

struct SiloProcess {
    name: String,
    address: SocketAddr,
    child: Option<Child>,
}

/// Silo processes sharing a Redis.
pub(crate) struct ProcessCluster {
    silos: Vec<SiloProcess>,
    store: Arc<RedisStore>,
    prefix: String,
    redis: String,
}

impl ProcessCluster {
    /// Starts `count` silo processes of cluster `cluster`, one after the other.
    pub(crate) async fn start(
        count: usize,
        cluster: &str,
        secret: &str,
        backends: &Backends<'_>,
    ) -> anyhow::Result<Self> {
        let store = Arc::new(
            RedisStore::connect(RedisConfig::new(backends.redis, cluster))
                .await
                .with_context(|| format!("cannot use Redis at {}", backends.redis))?,
        );
        let prefix = format!("{cluster}:events:");
        let exe = std::env::current_exe().context("cannot find this program to start silos")?;
        let mut silos = Vec::with_capacity(count);
        for index in 0..count {
            let name = crate::silo_name(index);
            let mut command = Command::new(&exe);
            command
                .arg("--serve-silo")
                .env("GRANARY_NAME", &name)
                .env("GRANARY_CLUSTER", cluster)
                .env("GRANARY_SECRET", secret)
                .env("GRANARY_REDIS", backends.redis)
                .env("GRANARY_LISTEN", "127.0.0.1:0")
                .env("GRANARY_PROFILE", "test")
                // The demo's cluster is new: whichever silo comes first creates it.
                .env("GRANARY_BOOTSTRAP", "create")
                .env("GRANARY_EVENTS_PREFIX", &prefix)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .kill_on_drop(true);
            if let Some(url) = backends.nats {
                command.env("GRANARY_NATS", url);
            }
            if let Some(uri) = backends.amqp {
                command.env("GRANARY_AMQP", uri);
            }
            if let Some(brokers) = backends.kafka {
                command.env("GRANARY_KAFKA", brokers);
            }
            if let Some(endpoint) = backends.sqs {
                command.env("GRANARY_SQS", endpoint);
            }
            if let Some(routes) = backends.routes() {
                command
                    .env("GRANARY_ROUTES", routes)
                    .env("GRANARY_QUEUE_PREFIX", crate::queues::queue_prefix(cluster));
            }
            if let Some(address) = backends.dashboard.filter(|_| index == 0) {
                let token = uuid::Uuid::new_v4().simple().to_string();
                command
                    .env("GRANARY_METRICS", address.to_string())
                    .env("GRANARY_DASHBOARD_TOKEN", &token);
                println!("  dashboard: http://{address}/dashboard?token={token}");
            }
            let mut child = command
                .spawn()
                .with_context(|| format!("cannot start silo process {name}"))?;
            let address = ready_address(&mut child, &name).await?;
            silos.push(SiloProcess {
                name,
                address,
                child: Some(child),
            });
        }
        Ok(Self {
            silos,
            store,
            prefix,
            redis: backends.redis.to_owned(),
        })
    }

    /// The silos' names, in start order.
    pub(crate) fn names(&self) -> Vec<String> {
        self.silos.iter().map(|s| s.name.clone()).collect()
    }

    /// Where a client reaches the silos.
    pub(crate) fn gateways(&self) -> Vec<SocketAddr> {
        self.silos.iter().map(|s| s.address).collect()
    }

    /// The cluster's membership table in Redis.
    pub(crate) fn membership(&self) -> Arc<dyn MembershipTable> {
        Arc::new(RedisMembership::new(self.store.clone()))
    }

    /// Sends SIGKILL to silo `index` and waits for it to die.
    pub(crate) async fn kill(&mut self, index: usize) -> anyhow::Result<()> {
        if let Some(mut child) = self.silos[index].child.take() {
            child.kill().await.context("cannot kill the silo")?;
        }
        Ok(())
    }

    /// Every event the cluster committed, as the relays delivered them to Redis Streams: waits
    /// until the outbox is empty (every event relayed), then reads the streams. A relay that
    /// took over a dead silo's shards may have delivered some events twice (same id).
    pub(crate) async fn committed_events(&self) -> anyhow::Result<Vec<EventEnvelope>> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while !self.store.pending(1).await?.is_empty() {
            if tokio::time::Instant::now() > deadline {
                bail!("the relays did not empty the outbox within a minute");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut conn = granary_redis::RedisConnection::open(&self.redis, None).await?;
        let mut events = Vec::new();
        for topic in [
            "match.created",
            "match.started",
            "player.died",
            "match.ended",
        ] {
            let stream = format!("{}{topic}", self.prefix);
            let mut from = "-".to_owned();
            loop {
                let page: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
                    .arg(&stream)
                    .arg(&from)
                    .arg("+")
                    .arg("COUNT")
                    .arg(10_000)
                    .query_async(&mut conn)
                    .await?;
                let Some(last) = page.ids.last().map(|e| e.id.clone()) else {
                    break;
                };
                for entry in &page.ids {
                    let Some(redis::Value::BulkString(bytes)) = entry.map.get("event") else {
                        bail!("stream {stream} entry {} has no event field", entry.id);
                    };
                    events.push(EventEnvelope::from_bytes(bytes)?);
                }
                from = format!("({last}");
            }
        }
        Ok(events)
    }

    /// Stops the remaining silos with SIGTERM (a clean shutdown) and waits for them.
    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        for silo in &mut self.silos {
            let Some(mut child) = silo.child.take() else {
                continue;
            };
            if let Some(pid) = child.id() {
                let _ = Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status()
                    .await;
            }
            if tokio::time::timeout(Duration::from_secs(15), child.wait())
                .await
                .is_err()
            {
                child.kill().await?;
                bail!("silo {} did not stop within 15 s of SIGTERM", silo.name);
            }
        }
        Ok(())
    }
}

/// Reads the child's output until its ready line (`granary silo <id> ready at <address>`),
/// then keeps draining it so that the pipe never fills.
async fn ready_address(child: &mut Child, name: &str) -> anyhow::Result<SocketAddr> {
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let wait = async {
        while let Some(line) = lines.next_line().await? {
            if let Some((_, address)) = line.split_once(" ready at ") {
                return Ok(address.trim().parse()?);
            }
        }
        bail!("silo process {name} exited before it was ready (see its messages above)")
    };
    let address = tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .with_context(|| format!("silo process {name} was not ready within 30 s"))??;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(address)
}

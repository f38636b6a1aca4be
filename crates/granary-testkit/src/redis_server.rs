//! Redis for tests: the shared server, and private servers a test may kill and restart.
//!
//! Tests of Redis code talk to a real Redis. The shared one
//! ([`shared_redis_url`], 127.0.0.1:6379 unless `GRANARY_TEST_REDIS` says otherwise) serves
//! tests that only need unique key names; it is never flushed. A test that kills or restarts
//! Redis, or needs AOF `always`, starts a [`PrivateRedis`] on a free loopback port and stops it
//! by its pid. A test that ran a cluster on the shared Redis removes its keys afterwards with
//! [`remove_cluster_keys`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::private_server::{free_port, kill, wait_until_serving};

/// The URL of the shared test Redis: `GRANARY_TEST_REDIS`, or `redis://127.0.0.1:6379`.
/// `GRANARY_TEST_REDIS` may name a Redis Cluster (`redis+cluster://host:port,…`, e.g. one the
/// `redis-cluster` example of this crate started): the tests that use the shared Redis then
/// run on the cluster.
///
/// # Panics
/// If nothing answers there, with a message that says how to start Redis: a test of Redis code
/// never skips silently.
#[must_use]
pub async fn shared_redis_url() -> String {
    let url =
        std::env::var("GRANARY_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let addr = url
        .trim_start_matches("redis://")
        .trim_start_matches("redis+cluster://")
        .split('/')
        .next()
        .unwrap_or_default()
        .rsplit('@')
        .next()
        .unwrap_or_default()
        .split(',')
        .next()
        .unwrap_or_default()
        .to_owned();
    let answers = match addr.parse::<SocketAddr>() {
        Ok(addr) => ping(addr, Duration::from_secs(2)).await,
        Err(_) => false,
    };
    assert!(
        answers,
        "these tests need a Redis at {url} and nothing answers there. Start one with \
         `redis-server --daemonize yes --port 6379 --save '' --appendonly no` (Debian: \
         `apt-get install redis-server`), or point GRANARY_TEST_REDIS at one; `./test` \
         installs and starts it for you"
    );
    url
}

/// A unique name for keys, streams or clusters of one test: `<prefix>-<uuid>`.
#[must_use]
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::now_v7().simple())
}

/// Why [`remove_cluster_keys`] did not finish.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CleanupError {
    /// The cluster id is not one a Granary store accepts (1 to 64 letters, digits, `-`, `_`,
    /// `.`); as part of a key pattern it could match other clusters' keys, so nothing was
    /// removed. Pass the id the test gave its `RedisConfig`.
    #[error("cluster id {0:?} is not a valid Granary cluster id; nothing was removed")]
    InvalidCluster(String),
    /// Redis refused the URL, the connection or a command. Some keys may be removed already;
    /// call again once Redis answers.
    #[error("redis failed while removing the cluster's keys")]
    Redis(#[source] redis::RedisError),
    /// Redis did not answer a command within 5 s. Some keys may be removed already; call
    /// again.
    #[error("redis did not answer within {0:?} while removing the cluster's keys")]
    Timeout(Duration),
}

/// How long [`remove_cluster_keys`] waits for each Redis command.
const CLEANUP_COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// Removes every key of Granary cluster `cluster` from the Redis at `url`, and only those: the
/// keys named `granary:<cluster>:…` (metadata, membership table, heartbeats) and
/// `granary:{<cluster>:<shard>}…` (grain state and claims, outbox and dead-letter streams,
/// the shards' epochs). Finds them with `SCAN` by those prefixes and removes them with
/// `UNLINK`; never `FLUSHDB`, so other tests' data on a shared Redis stays. Returns how many
/// keys were removed.
///
/// Call it when a test that ran a cluster on the shared Redis ends. Keys the test named itself
/// (the streams of a Redis Streams sink, a consumer's idempotency keys) are not the cluster's:
/// give them unique names ([`unique_name`]) and remove them yourself.
///
/// # Errors
/// [`CleanupError::InvalidCluster`] for an id that is not a valid cluster id;
/// [`CleanupError::Redis`] or [`CleanupError::Timeout`] when Redis fails or does not answer.
pub async fn remove_cluster_keys(url: &str, cluster: &str) -> Result<usize, CleanupError> {
    let valid = (1..=64).contains(&cluster.len())
        && cluster
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !valid {
        return Err(CleanupError::InvalidCluster(cluster.to_owned()));
    }
    let patterns = [
        format!("granary:{cluster}:*"),
        format!("granary:{{{cluster}:*"),
    ];
    let Some(seeds) = url.strip_prefix("redis+cluster://") else {
        return remove_keys_on(url, &patterns).await;
    };
    // A Redis Cluster: every primary holds some of the keys.
    let (auth, seeds) = seeds.rsplit_once('@').map_or(("", seeds), |(a, s)| (a, s));
    let auth = if auth.is_empty() {
        String::new()
    } else {
        format!("{auth}@")
    };
    let seed = seeds.split(',').next().unwrap_or_default();
    let client =
        redis::Client::open(format!("redis://{auth}{seed}")).map_err(CleanupError::Redis)?;
    let mut conn = bounded(client.get_multiplexed_async_connection()).await?;
    let nodes: String = bounded(redis::cmd("CLUSTER").arg("NODES").query_async(&mut conn)).await?;
    let mut removed = 0;
    for line in nodes.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(addr), Some(flags)) = (fields.get(1), fields.get(2)) else {
            continue;
        };
        if flags.contains("master") && !flags.contains("fail") {
            let addr = addr.split('@').next().unwrap_or_default();
            removed += remove_keys_on(&format!("redis://{auth}{addr}"), &patterns).await?;
        }
    }
    Ok(removed)
}

/// Removes the keys matching `patterns` from the one Redis (or cluster node) at `url`, one
/// `UNLINK` per key (the keys of a cluster node lie in several slots).
async fn remove_keys_on(url: &str, patterns: &[String]) -> Result<usize, CleanupError> {
    let client = redis::Client::open(url).map_err(CleanupError::Redis)?;
    let mut conn = bounded(client.get_multiplexed_async_connection()).await?;
    let mut removed = 0;
    for pattern in patterns {
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = bounded(
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut conn),
            )
            .await?;
            if !keys.is_empty() {
                let mut unlink = redis::pipe();
                for key in &keys {
                    unlink.cmd("UNLINK").arg(key);
                }
                let n: Vec<usize> = bounded(unlink.query_async(&mut conn)).await?;
                removed += n.iter().sum::<usize>();
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    Ok(removed)
}

/// `command` under [`CLEANUP_COMMAND_TIMEOUT`].
async fn bounded<T>(
    command: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, CleanupError> {
    tokio::time::timeout(CLEANUP_COMMAND_TIMEOUT, command)
        .await
        .map_err(|_| CleanupError::Timeout(CLEANUP_COMMAND_TIMEOUT))?
        .map_err(CleanupError::Redis)
}

/// Whether a Redis at `addr` answers `PING` within `timeout`.
async fn ping(addr: SocketAddr, timeout: Duration) -> bool {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(b"PING\r\n").await?;
        let mut reply = [0u8; 7];
        stream.read_exact(&mut reply).await?;
        Ok::<_, std::io::Error>(&reply == b"+PONG\r\n")
    };
    matches!(tokio::time::timeout(timeout, exchange).await, Ok(Ok(true)))
}

/// How a [`PrivateRedis`] persists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// Nothing on disk: a restart comes back empty.
    None,
    /// AOF with `appendfsync always`: every acknowledged write survives a kill.
    AofAlways,
}

/// A `redis-server` of one test, on a free loopback port, killed by pid when dropped.
#[derive(Debug)]
pub struct PrivateRedis {
    port: u16,
    dir: PathBuf,
    persistence: Persistence,
    child: Option<Child>,
    /// The TLS listener's port and arguments, if it has one.
    tls: Option<(u16, Vec<std::ffi::OsString>)>,
}

impl PrivateRedis {
    /// Starts a server and waits until it answers.
    ///
    /// # Panics
    /// If `redis-server` is not installed or does not answer within 10 s.
    #[must_use]
    pub async fn start(persistence: Persistence) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(unique_name("granary-redis"));
        std::fs::create_dir_all(&dir).expect("create the server's directory");
        let mut server = Self {
            port,
            dir,
            persistence,
            child: None,
            tls: None,
        };
        server.restart().await;
        server
    }

    /// Starts a server (without persistence) with a TLS listener too, presenting `server` and
    /// trusting `ca` for client certificates, which it requires when `require_client_cert`
    /// (`--tls-auth-clients yes`, else `optional`); waits until it answers. Its plaintext port
    /// stays open ([`url`](Self::url)) for the "TLS client to a plaintext port" case.
    ///
    /// # Panics
    /// As [`start`](Self::start), and if `redis-server` was built without TLS.
    #[must_use]
    pub async fn start_tls(
        server: &crate::tls::CertFiles,
        ca: &Path,
        require_client_cert: bool,
    ) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(unique_name("granary-redis"));
        std::fs::create_dir_all(&dir).expect("create the server's directory");
        let tls_port = free_port();
        let args = vec![
            "--tls-port".into(),
            tls_port.to_string().into(),
            "--tls-cert-file".into(),
            server.cert.clone().into(),
            "--tls-key-file".into(),
            server.key.clone().into(),
            "--tls-ca-cert-file".into(),
            ca.into(),
            "--tls-auth-clients".into(),
            if require_client_cert {
                "yes"
            } else {
                "optional"
            }
            .into(),
        ];
        let mut redis = Self {
            port,
            dir,
            persistence: Persistence::None,
            child: None,
            tls: Some((tls_port, args)),
        };
        redis.restart().await;
        redis
    }

    /// The URL of the TLS listener, `rediss://127.0.0.1:<port>`, if the server has one
    /// ([`start_tls`](Self::start_tls)).
    #[must_use]
    pub fn tls_url(&self) -> Option<String> {
        self.tls
            .as_ref()
            .map(|(port, _)| format!("rediss://127.0.0.1:{port}"))
    }

    /// The server's URL.
    #[must_use]
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The server's data directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Kills the server with SIGKILL (no shutdown, no final fsync) and waits for it to exit.
    pub fn kill(&mut self) {
        kill(&mut self.child);
    }

    /// Starts the server again on the same port and directory (after [`kill`](Self::kill)),
    /// and waits until it answers.
    ///
    /// # Panics
    /// If it exits at start or does not answer within 10 s.
    pub async fn restart(&mut self) {
        self.kill();
        let aof = match self.persistence {
            Persistence::None => ["--appendonly", "no"],
            Persistence::AofAlways => ["--appendonly", "yes"],
        };
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(aof)
            .args(["--appendfsync", "always"])
            .arg("--dir")
            .arg(&self.dir)
            .args(self.tls.iter().flat_map(|(_, args)| args))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("`redis-server` is installed (Debian: apt-get install redis-server)");
        let child = self.child.insert(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let server = format!("private redis-server on port {}", self.port);
        wait_until_serving(child, &server, Duration::from_secs(10), "", async || {
            ping(addr, Duration::from_millis(200)).await
        })
        .await;
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

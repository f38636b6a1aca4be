//! [`RedisConnection`] (the store's [`Conn`]): a connection to one Redis or to a Redis
//! Cluster, behind one type, for the store and for what works beside it.
//!
//! Every command goes through [`redis::aio::ConnectionLike`], so that the store's code is the
//! same for both; the single-node path is the [`ConnectionManager`] it always was (one `match`
//! more per command). What differs is kept here: commands on keys of several slots
//! ([`Conn::query_each`]), `WAIT` on the node of a key ([`Conn::wait_replicas`]) and
//! node-level commands ([`Conn::any_node`]).

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{
    MultipleNodeRoutingInfo, Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr,
};
use redis::{Cmd, FromRedisValue, Pipeline, RedisFuture, RedisResult, Value};

/// A connection to the Redis, or the Redis Cluster, that a Granary Redis URL names
/// (`redis://`, `rediss://`, or `redis+cluster://host1:port1,host2:port2`, as
/// [`RedisConfig::new`](crate::RedisConfig::new) takes it), for what works beside the store
/// on the same Redis: stream consumers, tools, tests. Every command goes through
/// [`ConnectionLike`], so `redis::cmd(…).query_async(&mut conn)` works on either; on a
/// cluster each goes to the primary of its key's slot (following `MOVED` and `ASK`), so a
/// command must not name keys of two slots. Auto-reconnecting, multiplexed, cheap to clone.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use granary_redis::RedisConnection;
///
/// let mut conn = RedisConnection::open("redis+cluster://10.0.0.1:7000", None).await?;
/// let len: u64 = redis::cmd("XLEN").arg("events:match.ended").query_async(&mut conn).await?;
/// # let _ = len;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub enum RedisConnection {
    /// One Redis (or its primary).
    Single(ConnectionManager),
    /// A Redis Cluster: each command goes to the primary of its key's slot, following
    /// `MOVED`/`ASK` redirections, and the slot map is refreshed when it changes.
    Cluster(ClusterConnection),
}

/// The store's name for its connection.
pub(crate) type Conn = RedisConnection;

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}

impl Conn {
    /// Whether this is a connection to a Redis Cluster.
    #[must_use]
    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// Runs `cmds`, each a command whose first argument is its one key, on keys that may lie
    /// in different slots, and returns their replies in order. On one Redis they go as one
    /// pipeline (one round trip). On a cluster, whose pipelines must stay within one slot, the
    /// commands on one key go as one pipeline, in their order, and the keys' pipelines all at
    /// once, multiplexed on the connections to the nodes.
    pub(crate) async fn query_each<T: FromRedisValue>(
        &self,
        cmds: Vec<Cmd>,
    ) -> RedisResult<Vec<T>> {
        if cmds.is_empty() {
            // Nothing to send (an empty pipeline gets no reply to wait for).
            return Ok(Vec::new());
        }
        match self {
            Self::Single(conn) => {
                let mut pipe = Pipeline::with_capacity(cmds.len());
                for cmd in cmds {
                    pipe.add_command(cmd);
                }
                pipe.query_async(&mut conn.clone()).await
            }
            Self::Cluster(conn) => {
                let count = cmds.len();
                // Per key: its first command's index, the indexes of its commands, a pipeline.
                let mut by_key: Vec<(Vec<u8>, Vec<usize>, Pipeline)> = Vec::new();
                for (index, cmd) in cmds.into_iter().enumerate() {
                    let key = match cmd.args_iter().nth(1) {
                        Some(redis::Arg::Simple(key)) => key.to_vec(),
                        _ => Vec::new(),
                    };
                    let at = match by_key.iter().position(|(k, ..)| *k == key) {
                        Some(at) => at,
                        None => {
                            by_key.push((key, Vec::new(), Pipeline::new()));
                            by_key.len() - 1
                        }
                    };
                    let (_, indexes, pipe) = &mut by_key[at];
                    indexes.push(index);
                    pipe.add_command(cmd);
                }
                let replies =
                    futures::future::try_join_all(by_key.into_iter().map(|(_, indexes, pipe)| {
                        let mut conn = conn.clone();
                        async move {
                            let values: Vec<Value> = pipe.query_async(&mut conn).await?;
                            Ok::<_, redis::RedisError>(indexes.into_iter().zip(values))
                        }
                    }))
                    .await?;
                let mut ordered: Vec<Option<Value>> = vec![None; count];
                for (index, value) in replies.into_iter().flatten() {
                    ordered[index] = Some(value);
                }
                ordered
                    .into_iter()
                    .map(|value| Ok(T::from_redis_value(value.unwrap_or(Value::Nil))?))
                    .collect()
            }
        }
    }

    /// `WAIT replicas timeout` on the Redis that holds `key` (on one Redis: that Redis): waits
    /// until `replicas` replicas acknowledged every write this connection sent before, or
    /// `timeout`. Returns how many acknowledged.
    pub(crate) async fn wait_replicas(
        &self,
        key: &str,
        replicas: u32,
        timeout: Duration,
    ) -> RedisResult<i64> {
        let mut wait = redis::cmd("WAIT");
        wait.arg(replicas).arg(
            u64::try_from(timeout.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
        );
        match self {
            Self::Single(conn) => wait.query_async(&mut conn.clone()).await,
            Self::Cluster(conn) => {
                let route = Route::with_key(key.as_bytes(), SlotAddr::Master);
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
                let reply = conn.clone().route_command(wait, routing).await?;
                Ok(i64::from_redis_value(reply)?)
            }
        }
    }

    /// Runs a command that names no key (`INFO`, `CLUSTER INFO`) on one node: on one Redis,
    /// that Redis; on a cluster, a node chosen at random.
    pub(crate) async fn any_node<T: FromRedisValue>(&self, cmd: Cmd) -> RedisResult<T> {
        match self {
            Self::Single(conn) => cmd.query_async(&mut conn.clone()).await,
            Self::Cluster(conn) => {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random);
                let reply = conn.clone().route_command(cmd, routing).await?;
                Ok(T::from_redis_value(reply)?)
            }
        }
    }

    /// The nodes that hold keys: on one Redis, that Redis (`None`); on a cluster, every
    /// primary, by address (for [`on_node`](Self::on_node)).
    pub(crate) async fn primaries(&self) -> RedisResult<Vec<Option<(String, u16)>>> {
        let Self::Cluster(conn) = self else {
            return Ok(vec![None]);
        };
        let routing = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
        let reply = conn
            .clone()
            .route_command(redis::cmd("PING"), routing)
            .await?;
        let Value::Map(nodes) = reply else {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Client,
                "PING to every primary did not answer per node",
            )));
        };
        Ok(nodes
            .into_iter()
            .filter_map(|(address, _)| {
                let address = String::from_utf8(match address {
                    Value::BulkString(bytes) => bytes,
                    _ => return None,
                })
                .ok()?;
                let (host, port) = address.rsplit_once(':')?;
                Some(Some((host.to_owned(), port.parse().ok()?)))
            })
            .collect())
    }

    /// Runs `cmd` on `node`, one of [`primaries`](Self::primaries).
    pub(crate) async fn on_node<T: FromRedisValue>(
        &self,
        node: Option<&(String, u16)>,
        cmd: Cmd,
    ) -> RedisResult<T> {
        match (self, node) {
            (Self::Cluster(conn), Some((host, port))) => {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port: *port,
                });
                Ok(T::from_redis_value(
                    conn.clone().route_command(cmd, routing).await?,
                )?)
            }
            _ => self.any_node(cmd).await,
        }
    }
}

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConnection")
            .field("cluster", &self.is_cluster())
            .finish_non_exhaustive()
    }
}

/// How long a cluster connection's command without a response timeout waits: a blocking read
/// (`XREADGROUP … BLOCK`) waits on purpose; an hour stands for "as long as it takes".
const NO_RESPONSE_TIMEOUT: Duration = Duration::from_secs(3600);

impl RedisConnection {
    /// Connects to `url`. Each command waits at most `response_timeout` for its reply;
    /// `None` waits as long as it takes (for blocking reads).
    ///
    /// # Errors
    /// A [`ConnectError`](crate::ConnectError) naming the URL (its password hidden) and the
    /// cause: a URL that does not parse, a Redis that cannot be reached, a seed that is not a
    /// Redis Cluster node, or a cluster that does not serve every slot.
    pub async fn open(
        url: &str,
        response_timeout: Option<Duration>,
    ) -> Result<Self, crate::ConnectError> {
        let config = crate::RedisConfig::new(url, "granary");
        let cluster_timeout = response_timeout.unwrap_or(NO_RESPONSE_TIMEOUT);
        let (conn, _) = crate::store::open(&config, response_timeout, cluster_timeout).await?;
        Ok(conn)
    }
}

//! A private Redis Cluster for tests: three primaries (and optionally a replica each) on free
//! loopback ports, killed by pid when dropped.
//!
//! Each node is a `redis-server --cluster-enabled yes` in a directory of its own; `redis-cli
//! --cluster create … --cluster-yes` joins them and assigns the slots. [`PrivateRedisCluster::start`]
//! returns once every node reports `cluster_state:ok` (and every replica's link to its primary
//! is up). [`PrivateRedisCluster::url`] is the `redis+cluster://` URL a `RedisConfig` takes.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::private_server::{free_port, kill, wait_until_serving};
use crate::redis_server::unique_name;

/// How long one command to a node may take before the helper gives up.
const NODE_COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the cluster may take to form, or to settle after a change.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

/// One `redis-server` of the cluster.
#[derive(Debug)]
struct Node {
    port: u16,
    child: Option<Child>,
}

/// A Redis Cluster of one test: 3 primaries, `replicas` replicas each, on loopback.
#[derive(Debug)]
pub struct PrivateRedisCluster {
    dir: PathBuf,
    nodes: Vec<Node>,
}

impl PrivateRedisCluster {
    /// Starts 3 primaries with `replicas` replicas each (`cluster-node-timeout` 2 s: a killed
    /// primary's replica takes over a few seconds later; `cluster-allow-replica-migration no`:
    /// a primary emptied by a reshard stays a primary), joins them into a cluster that serves
    /// every slot, and waits until every node says so.
    ///
    /// # Panics
    /// If `redis-server` or `redis-cli` is missing or fails, or the cluster does not form
    /// within 60 s.
    pub async fn start(replicas: usize) -> Self {
        let dir = std::env::temp_dir().join(unique_name("granary-redis-cluster"));
        std::fs::create_dir_all(&dir).expect("create the cluster's directory");
        let mut cluster = Self {
            dir,
            nodes: Vec::new(),
        };
        for _ in 0..3 * (1 + replicas) {
            let port = free_port();
            let node_dir = cluster.dir.join(port.to_string());
            std::fs::create_dir_all(&node_dir).expect("create a node's directory");
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-config-file", "nodes.conf"])
                .args(["--cluster-node-timeout", "2000"])
                // A primary whose slots all moved away stays a primary (by default it would
                // become a replica), so that a test can move slots back to it.
                .args(["--cluster-allow-replica-migration", "no"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&node_dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("`redis-server` is installed (Debian: apt-get install redis-server)");
            let mut child = Some(child);
            let server = format!("cluster redis-server on port {port}");
            if let Some(child) = child.as_mut() {
                wait_until_serving(child, &server, Duration::from_secs(10), "", async || {
                    node_query::<String>(port, redis::cmd("PING")).await.is_ok()
                })
                .await;
            }
            cluster.nodes.push(Node { port, child });
        }
        let mut create = vec!["--cluster".to_owned(), "create".to_owned()];
        create.extend(
            cluster
                .nodes
                .iter()
                .map(|n| format!("127.0.0.1:{}", n.port)),
        );
        create.extend([
            "--cluster-replicas".to_owned(),
            replicas.to_string(),
            "--cluster-yes".to_owned(),
        ]);
        cluster.cli(&create).await;
        cluster.wait_until_ok().await;
        cluster
    }

    /// The cluster's URL, `redis+cluster://127.0.0.1:<port>,…`, naming every node as a seed.
    #[must_use]
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", seeds.join(","))
    }

    /// The ports of the nodes that run (primaries and replicas).
    #[must_use]
    pub fn ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.port)
            .collect()
    }

    /// Runs `redis-cli` with `args` and returns its standard output.
    ///
    /// # Panics
    /// If `redis-cli` is missing, fails, or runs longer than 120 s.
    pub async fn cli(&self, args: &[String]) -> String {
        let run = tokio::process::Command::new("redis-cli")
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(Duration::from_secs(120), run)
            .await
            .unwrap_or_else(|_| panic!("redis-cli {args:?} did not finish within 120 s"))
            .expect("`redis-cli` is installed (Debian: apt-get install redis-tools)");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success() && !stdout.contains("[ERR]"),
            "redis-cli {args:?} failed ({}): {stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }

    /// The id of the node on `port` (`CLUSTER MYID`).
    ///
    /// # Panics
    /// If the node does not answer.
    pub async fn node_id(&self, port: u16) -> String {
        node_query(port, redis::cmd("CLUSTER").arg("MYID").clone())
            .await
            .unwrap_or_else(|e| panic!("CLUSTER MYID on port {port}: {e}"))
    }

    /// The ports of the primaries that run, each with the number of slots it serves, as the
    /// first running node sees them (`CLUSTER NODES`).
    ///
    /// # Panics
    /// If no node answers.
    pub async fn primaries(&self) -> Vec<(u16, usize)> {
        let nodes = self.cluster_nodes().await;
        let mut primaries = Vec::new();
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(addr), Some(flags)) = (fields.get(1), fields.get(2)) else {
                continue;
            };
            if !flags.contains("master") || flags.contains("fail") {
                continue;
            }
            let port = node_port(addr);
            let slots = fields
                .iter()
                .skip(8)
                .map(|range| match range.split_once('-') {
                    Some((a, b)) => {
                        b.parse::<usize>()
                            .unwrap_or(0)
                            .saturating_sub(a.parse().unwrap_or(0))
                            + 1
                    }
                    None if !range.starts_with('[') => 1,
                    None => 0,
                })
                .sum();
            if let Some(port) = port {
                primaries.push((port, slots));
            }
        }
        primaries.sort_unstable();
        primaries
    }

    /// The port of the primary that serves `key` now.
    ///
    /// # Panics
    /// If no node answers, or none serves the key's slot.
    pub async fn primary_of(&self, key: &str) -> u16 {
        let port = self.ports()[0];
        let slot: i64 = node_query(port, redis::cmd("CLUSTER").arg("KEYSLOT").arg(key).clone())
            .await
            .unwrap_or_else(|e| panic!("CLUSTER KEYSLOT on port {port}: {e}"));
        let nodes = self.cluster_nodes().await;
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if !fields.get(2).is_some_and(|f| f.contains("master")) {
                continue;
            }
            let serves = fields.iter().skip(8).any(|range| {
                let (a, b) = range.split_once('-').unwrap_or((range, range));
                matches!((a.parse::<i64>(), b.parse::<i64>()), (Ok(a), Ok(b)) if (a..=b).contains(&slot))
            });
            if serves {
                return fields
                    .get(1)
                    .and_then(|addr| node_port(addr))
                    .expect("a node address ends with its port");
            }
        }
        panic!("no primary serves slot {slot} of key {key:?}:\n{nodes}");
    }

    /// The ports of the running replicas of the primary on `port`.
    ///
    /// # Panics
    /// If no node answers.
    pub async fn replicas_of(&self, port: u16) -> Vec<u16> {
        let id = self.node_id(port).await;
        let nodes = self.cluster_nodes().await;
        nodes
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let flags = fields.get(2)?;
                let replica = flags.contains("slave") && !flags.contains("fail");
                (replica && fields.get(3) == Some(&id.as_str()))
                    .then(|| node_port(fields.get(1)?))
                    .flatten()
            })
            .collect()
    }

    /// Moves `slots` slots, keys included, from the primary on `from` to the primary on `to`
    /// (`redis-cli --cluster reshard … --cluster-yes`) while the cluster serves: clients meet
    /// `ASK` redirections during the move and `MOVED` after it. Returns `redis-cli`'s output.
    ///
    /// # Panics
    /// If `redis-cli` fails.
    pub async fn reshard(&self, from: u16, to: u16, slots: usize) -> String {
        let (from_id, to_id) = (self.node_id(from).await, self.node_id(to).await);
        self.cli(&[
            "--cluster".to_owned(),
            "reshard".to_owned(),
            format!("127.0.0.1:{from}"),
            "--cluster-from".to_owned(),
            from_id,
            "--cluster-to".to_owned(),
            to_id,
            "--cluster-slots".to_owned(),
            slots.to_string(),
            "--cluster-yes".to_owned(),
        ])
        .await
    }

    /// Kills the node on `port` with SIGKILL and waits for it to exit. The other nodes notice
    /// after `cluster-node-timeout`; a replica of a killed primary then takes over.
    pub fn kill_node(&mut self, port: u16) {
        if let Some(node) = self.nodes.iter_mut().find(|n| n.port == port) {
            kill(&mut node.child);
        }
    }

    /// Waits until every running node reports `cluster_state:ok` with every slot served, and
    /// every running replica's link to its primary is up.
    ///
    /// # Panics
    /// If that does not happen within 60 s.
    pub async fn wait_until_ok(&self) {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            let mut ok = true;
            let mut last = String::new();
            for port in self.ports() {
                let info = node_query::<String>(port, redis::cmd("CLUSTER").arg("INFO").clone())
                    .await
                    .unwrap_or_default();
                let repl =
                    node_query::<String>(port, redis::cmd("INFO").arg("replication").clone())
                        .await
                        .unwrap_or_default();
                let replica_down =
                    repl.contains("role:slave") && !repl.contains("master_link_status:up");
                if !info.contains("cluster_state:ok")
                    || !info.contains("cluster_slots_ok:16384")
                    || replica_down
                {
                    ok = false;
                    last = format!("node {port}: {info}{repl}");
                    break;
                }
            }
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the Redis Cluster did not settle within {SETTLE_TIMEOUT:?}: {last}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn cluster_nodes(&self) -> String {
        for port in self.ports() {
            if let Ok(nodes) =
                node_query::<String>(port, redis::cmd("CLUSTER").arg("NODES").clone()).await
            {
                return nodes;
            }
        }
        panic!("no node of the cluster answers CLUSTER NODES");
    }
}

impl Drop for PrivateRedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            kill(&mut node.child);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The port of a `CLUSTER NODES` address, `<ip>:<port>@<bus port>`.
fn node_port(addr: &str) -> Option<u16> {
    addr.split('@').next()?.rsplit(':').next()?.parse().ok()
}

/// Sends `cmd` to the node on `port` (not following redirections), under a deadline.
async fn node_query<T: redis::FromRedisValue>(port: u16, cmd: redis::Cmd) -> Result<T, String> {
    let exchange = async {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        cmd.query_async::<T>(&mut conn).await
    };
    match tokio::time::timeout(NODE_COMMAND_TIMEOUT, exchange).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err(format!("no answer within {NODE_COMMAND_TIMEOUT:?}")),
    }
}

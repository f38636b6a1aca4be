//! [`RedisConfig`]: where the store connects and how long it waits.

use std::time::Duration;

use redis::TlsCertificates;

/// What a silo does when Redis holds no epoch for its cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Bootstrap {
    /// Create the cluster (its epoch) if Redis has none: right for the first start of a cluster
    /// and for development.
    #[default]
    CreateIfMissing,
    /// Refuse to start when Redis has no epoch for the cluster: right for production silos
    /// joining a cluster that is known to exist, so that a Redis that lost its data while every
    /// silo was down is not taken for a new, empty cluster.
    RequireExisting,
}

/// How a [`RedisStore`](crate::RedisStore) connects.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// The Redis URL, e.g. `redis://127.0.0.1:6379` or `redis://:password@host:6379/0`; for a
    /// Redis Cluster, `redis+cluster://` and one or more seed nodes separated by commas, e.g.
    /// `redis+cluster://10.0.0.1:7000,10.0.0.2:7000` or `redis+cluster://:password@h1:7000,h2:7000`
    /// (the store learns the other nodes from the seeds; a cluster has only database 0).
    pub url: String,
    /// The cluster id: part of every key, so that clusters can share a Redis. Letters, digits,
    /// `-`, `_` and `.`, at most 64.
    pub cluster: String,
    /// Number of shards (hash tags) the grains are spread over; read from Redis when the cluster
    /// exists already. Each shard has one outbox stream. Default 64.
    pub shards: u32,
    /// Deadline of every command: a command without a reply by then fails with
    /// `StorageError::Unavailable` (its outcome unknown). Default 2 s.
    pub command_timeout: Duration,
    /// Deadline of one connection attempt. Default 500 ms.
    pub connect_timeout: Duration,
    /// Attempts per reconnection before failing the commands that wait for it; the next command
    /// starts a new reconnection. Default 2.
    pub reconnect_attempts: usize,
    /// What to do when Redis holds no epoch for the cluster.
    pub bootstrap: Bootstrap,
    /// The CA to trust and the client certificate to present over TLS, for a `rediss://` URL
    /// whose server certificate the system's roots do not sign (or that requires client
    /// certificates). `None` (the default): a `rediss://` URL trusts the system's roots.
    pub tls: Option<TlsCertificates>,
    /// Replica-acknowledged commits: when set, a commit is acknowledged only after this many
    /// replicas of the primary that ran it confirmed it (`WAIT`). Default `None`: a commit is
    /// acknowledged when the primary ran it. See the crate docs, "What committed means".
    pub wait_replicas: Option<WaitReplicas>,
}

/// How many replicas must confirm a commit, and how long the commit waits for them
/// ([`RedisConfig::wait_replicas`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitReplicas {
    /// Replicas that must acknowledge each commit; at least 1.
    pub replicas: u32,
    /// How long a commit waits for them; if fewer acknowledge by then, the commit fails with
    /// `StorageError::NotReplicated` (it was applied by the primary, and may be lost if the
    /// primary fails before its replicas catch up). Must be shorter than
    /// [`RedisConfig::command_timeout`].
    pub timeout: Duration,
}

/// Where the store connects: one Redis, or the seed nodes of a Redis Cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// One Redis, by its URL.
    Single(String),
    /// A Redis Cluster: one `redis://` URL per seed node.
    Cluster(Vec<String>),
}

/// The scheme of a Redis Cluster URL.
const CLUSTER_SCHEME: &str = "redis+cluster://";

impl RedisConfig {
    /// The defaults for `url` and `cluster`.
    #[must_use]
    pub fn new(url: impl Into<String>, cluster: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            cluster: cluster.into(),
            shards: 64,
            command_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_millis(500),
            reconnect_attempts: 2,
            bootstrap: Bootstrap::default(),
            wait_replicas: None,
            tls: None,
        }
    }

    /// Sets [`tls`](Self::tls): the CA and client certificate of a `rediss://` URL.
    #[must_use]
    pub fn tls(mut self, certificates: TlsCertificates) -> Self {
        self.tls = Some(certificates);
        self
    }

    /// Whether the URL asks for TLS (`rediss://`).
    fn is_tls(&self) -> bool {
        self.url.starts_with("rediss://")
    }

    /// The client of [`url`](Self::url) with [`tls`](Self::tls).
    pub(crate) fn client(&self) -> Result<redis::Client, String> {
        let url = self.redacted_url();
        if self.is_tls() {
            install_crypto_provider();
        }
        match &self.tls {
            None => redis::Client::open(self.url.as_str())
                .map_err(|e| format!("invalid Redis URL {url}: {e}")),
            Some(_) if !self.is_tls() => Err(format!(
                "TLS certificates are set but {url} is not a TLS URL: use rediss://"
            )),
            Some(certificates) => {
                redis::Client::build_with_tls(self.url.as_str(), certificates.clone())
                    .map_err(|e| format!("TLS certificates for {url}: {e}"))
            }
        }
    }

    /// Sets [`wait_replicas`](Self::wait_replicas): each commit waits until `replicas` replicas
    /// acknowledged it, at most `timeout`.
    #[must_use]
    pub fn wait_replicas(mut self, replicas: u32, timeout: Duration) -> Self {
        self.wait_replicas = Some(WaitReplicas { replicas, timeout });
        self
    }

    /// Where to connect: parses [`url`](Self::url). An error names what is wrong with it.
    pub(crate) fn target(&self) -> Result<Target, String> {
        let url = self.redacted_url();
        let Some(rest) = self.url.strip_prefix(CLUSTER_SCHEME) else {
            let host = self.url.split_once("://").map_or("", |(_, rest)| rest);
            let host = host.rsplit_once('@').map_or(host, |(_, host)| host);
            if host.split('/').next().unwrap_or("").contains(',') {
                return Err(format!(
                    "the Redis URL {url} names several hosts; for a Redis Cluster write \
                     {CLUSTER_SCHEME}host1:port1,host2:port2"
                ));
            }
            return Ok(Target::Single(self.url.clone()));
        };
        let (auth, hosts) = match rest.rsplit_once('@') {
            Some((auth, hosts)) => (format!("{auth}@"), hosts),
            None => (String::new(), rest),
        };
        let hosts = hosts.strip_suffix('/').unwrap_or(hosts);
        if let Some(bad) = hosts.find(['/', '?']) {
            return Err(format!(
                "the Redis Cluster URL {url} has {:?} after its seed nodes; a cluster URL is \
                 {CLUSTER_SCHEME}[:password@]host1:port1,host2:port2 (no database: a cluster \
                 has only database 0)",
                &hosts[bad..]
            ));
        }
        let seeds: Vec<String> = hosts
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(|host| format!("redis://{auth}{host}"))
            .collect();
        if seeds.is_empty() {
            return Err(format!(
                "the Redis Cluster URL {url} names no seed node; write \
                 {CLUSTER_SCHEME}host1:port1,host2:port2"
            ));
        }
        Ok(Target::Cluster(seeds))
    }

    /// Sets [`bootstrap`](Self::bootstrap).
    #[must_use]
    pub fn bootstrap(mut self, bootstrap: Bootstrap) -> Self {
        self.bootstrap = bootstrap;
        self
    }

    /// Sets [`shards`](Self::shards).
    #[must_use]
    pub fn shards(mut self, shards: u32) -> Self {
        self.shards = shards;
        self
    }

    /// Sets [`command_timeout`](Self::command_timeout).
    #[must_use]
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// The URL without its password, for messages.
    pub(crate) fn redacted_url(&self) -> String {
        match (self.url.find("://"), self.url.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                format!("{}://…@{}", &self.url[..scheme], &self.url[at + 1..])
            }
            _ => self.url.clone(),
        }
    }
}

/// Makes ring the process's rustls crypto provider, unless one is installed already. rustls
/// picks its provider alone only when the build has exactly one; a build with a dependency
/// that brings aws-lc-rs too (the AWS SDK of the SQS sink) has two, and rustls would panic at
/// the first TLS connection.
pub(crate) fn install_crypto_provider() {
    // An `Err` means a provider is installed already: that one serves.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::{RedisConfig, Target};

    fn target(url: &str) -> Result<Target, String> {
        RedisConfig::new(url, "c").target()
    }

    #[test]
    fn a_redis_url_is_one_redis() {
        assert_eq!(
            target("redis://:pw@h:6379/2"),
            Ok(Target::Single("redis://:pw@h:6379/2".into()))
        );
    }

    #[test]
    fn a_cluster_url_lists_its_seeds_with_the_credentials() {
        assert_eq!(
            target("redis+cluster://:pw@h1:7000, h2:7001/"),
            Ok(Target::Cluster(vec![
                "redis://:pw@h1:7000".into(),
                "redis://:pw@h2:7001".into()
            ]))
        );
        assert_eq!(
            target("redis+cluster://h1:7000"),
            Ok(Target::Cluster(vec!["redis://h1:7000".into()]))
        );
    }

    #[test]
    fn bad_cluster_urls_say_what_is_wrong_without_the_password() {
        let several = target("redis://:secret@h1:1,h2:2").unwrap_err();
        assert!(several.contains("redis+cluster://host1"), "{several}");
        assert!(!several.contains("secret"), "{several}");
        let database = target("redis+cluster://:secret@h1:1/3").unwrap_err();
        assert!(
            database.contains("\"/3\"") && database.contains("database 0"),
            "{database}"
        );
        assert!(!database.contains("secret"), "{database}");
        let empty = target("redis+cluster://").unwrap_err();
        assert!(empty.contains("no seed node"), "{empty}");
    }
}

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
    /// The Redis URL, e.g. `redis://127.0.0.1:6379` or `redis://:password@host:6379/0`.
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
}

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

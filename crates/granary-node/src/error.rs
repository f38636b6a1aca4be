//! [`NodeError`]: why a silo process could not run, and the exit status it ends with.

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
    /// The TLS settings (`GRANARY_TLS_*`) name a file that cannot be read or a certificate or
    /// key that cannot be used; the message names the setting.
    #[error("TLS setting {0}")]
    Tls(#[from] granary::TlsError),
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
            | Self::Tls(_)
            | Self::Redis(granary_redis::ConnectError::Config(_)) => 2,
            _ => 1,
        }
    }
}

/// Names the setting when Redis could not be reached or the URL is invalid, and the TLS
/// settings too when the URL is `rediss://` (a refused certificate is one cause then).
fn redis_setting(err: &granary_redis::ConnectError) -> String {
    match err {
        granary_redis::ConnectError::Unreachable { url, .. } if crate::tls::REDIS.is_tls(url) => {
            format!("setting {}: ", crate::tls::REDIS.names())
        }
        granary_redis::ConnectError::Config(problem) if problem.contains("TLS") => {
            format!("setting {}: ", crate::tls::REDIS.names())
        }
        granary_redis::ConnectError::Config(_)
        | granary_redis::ConnectError::Unreachable { .. }
        | granary_redis::ConnectError::Cluster { .. } => "setting GRANARY_REDIS: ".into(),
        _ => String::new(),
    }
}

//! Silo processes of the example (its `silo` binary) in a new cluster on the shared Redis,
//! for the tests that run it as operators do.
#![allow(
    dead_code,
    reason = "each test binary that includes it reads the fields it needs"
)]

use granary_testkit::process::SiloProcess;
use granary_testkit::redis_server::{shared_redis_url, unique_name};

/// The secret of the tests' clusters.
pub(crate) const SECRET: &str = "0123456789abcdef0123456789abcdef";

/// A cluster of example silo processes.
pub(crate) struct Silos {
    /// The shared Redis's URL.
    pub(crate) redis: String,
    /// The cluster's id (new for each test).
    pub(crate) cluster: String,
    /// The prefix of the cluster's event streams.
    pub(crate) prefix: String,
    /// The processes, named as asked.
    pub(crate) processes: Vec<SiloProcess>,
}

/// Starts one silo process per name in a new cluster named after `test`, with hash
/// placement, each ready when this returns.
pub(crate) async fn start(test: &str, names: &[&str]) -> Silos {
    let redis = shared_redis_url().await;
    let cluster = unique_name(test);
    let prefix = format!("{cluster}:");
    let env = [
        ("GRANARY_CLUSTER", cluster.as_str()),
        ("GRANARY_SECRET", SECRET),
        ("GRANARY_REDIS", redis.as_str()),
        ("GRANARY_PLACEMENT", "hash"),
        ("GRANARY_EVENTS_PREFIX", prefix.as_str()),
    ];
    let mut processes = Vec::new();
    for name in names {
        processes.push(SiloProcess::start(env!("CARGO_BIN_EXE_silo"), name, &env).await);
    }
    Silos {
        redis,
        cluster,
        prefix,
        processes,
    }
}

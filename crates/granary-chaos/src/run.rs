//! One chaos run: start the silos, run the workload under the faults, read back what Redis
//! holds, check it, and sum it up in one [`Summary`].

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use granary::{ClientConfig, ClusterClient, Event, GrainId};
use granary_redis::{RedisStore, RedisStreamsSink};
use granary_testkit::redis_server::{Persistence, PrivateRedis};
use serde::Serialize;

use crate::checker::{Verdict, check};
use crate::cluster::SiloSpec;
use crate::error::ChaosError;
use crate::faults::{Cluster, FaultReport, Timing};
use crate::grain::{Appended, LIST_TYPE, ListGrain};
use crate::history::{EventRecord, FaultKind, History, Outcome};
use crate::unavailability::Percentiles;
use crate::workload::{Load, Workload};

/// The cluster secret of every run (the silos listen on loopback only).
const SECRET: &str = "granary chaos suite: a secret of 32+ bytes";

/// The options of a run (the `granary-chaos` command line).
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "granary-chaos",
    about = "List-append load on silo processes under faults; prints one JSON summary line and \
             exits non-zero on any violation (see docs/chaos.md)"
)]
pub struct Options {
    /// The faults to inject, in turn, one every `--interval` (repeat the option or separate
    /// with commas).
    #[arg(long = "fault", value_delimiter = ',', required = true)]
    pub faults: Vec<FaultKind>,
    /// How long the workload runs, in seconds.
    #[arg(long, default_value_t = 60)]
    pub duration: u64,
    /// Seconds between two faults (the first comes after one interval).
    #[arg(long, default_value_t = 10)]
    pub interval: u64,
    /// Silo processes.
    #[arg(long, default_value_t = 3)]
    pub silos: usize,
    /// Keys (grains) the callers append to.
    #[arg(long, default_value_t = 32)]
    pub keys: u32,
    /// Concurrent callers.
    #[arg(long, default_value_t = 48)]
    pub callers: u32,
    /// The silos' `GRANARY_PROFILE`: `test` (failure detection in about a second) or
    /// `production`.
    #[arg(long, default_value = "test")]
    pub profile: String,
    /// The silos' `GRANARY_PLACEMENT`.
    #[arg(long, default_value = "hash")]
    pub placement: String,
    /// The Redis of the run (not used with `--fault redis-restart`, which starts its own
    /// `redis-server` with AOF `appendfsync always` on a free port).
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    pub redis: String,
    /// The silo binary (default: `chaos-silo` beside this program).
    #[arg(long)]
    pub silo_bin: Option<PathBuf>,
    /// The client's call deadline, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub call_timeout_ms: u64,
    /// How long a stopped silo stays stopped, in milliseconds, at least: until it is declared
    /// dead, and no less than this.
    #[arg(long, default_value_t = 6000)]
    pub stop_hold_ms: u64,
    /// How long a partition lasts, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub partition_hold_ms: u64,
    /// How long Redis stays down in a Redis restart, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub redis_down_ms: u64,
    /// The longest a stopped silo may take to be declared dead, and a dead one to exit, in
    /// seconds (default: 15 in the test profile, 40 in production).
    #[arg(long)]
    pub detection: Option<u64>,
    /// Where a restarted silo listens: `same` (its predecessor's address, as a restarted
    /// server would) or `new` (a free port).
    #[arg(long, value_enum, default_value = "same")]
    pub restart_address: RestartAddress,
    /// How long to wait, after the workload, for the relays to deliver the last events.
    #[arg(long, default_value_t = 30)]
    pub settle: u64,
    /// Where each silo process's log goes (default: a new directory under the temp dir).
    #[arg(long)]
    pub log_dir: Option<PathBuf>,
}

/// Where a restarted silo listens (`--restart-address`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RestartAddress {
    /// Its predecessor's address, as a restarted server would.
    Same,
    /// A new free port.
    New,
}

/// The one line a run prints.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// No violation.
    pub ok: bool,
    /// Data and fault violations together.
    pub violations: usize,
    /// The faults asked for.
    pub faults: Vec<FaultKind>,
    /// The silos' profile.
    pub profile: String,
    /// The cluster id (unique per run).
    pub cluster: String,
    /// Silo processes.
    pub silos: usize,
    /// Keys.
    pub keys: u32,
    /// Callers.
    pub callers: u32,
    /// How long the workload ran, in seconds.
    pub duration_s: f64,
    /// Appends attempted.
    pub attempts: usize,
    /// Appends acknowledged.
    pub acks: usize,
    /// Appends failed (their outcome unknown).
    pub failures: usize,
    /// Failures per `CallError` variant.
    pub failures_by_kind: BTreeMap<String, usize>,
    /// Failures with an error that is not retryable (`CallError::is_retryable`); a violation
    /// when the only fault is `rolling`: a graceful restart fails no call that way.
    pub non_retryable_failures: usize,
    /// Calls the client tried again, transparently, after every gateway refused them without
    /// running them (a silo shutting down).
    pub client_retries: u64,
    /// The duration of the acknowledged calls, in milliseconds (the client's transparent
    /// retries included).
    pub call_ms: Percentiles,
    /// Values in the final lists.
    pub committed: usize,
    /// Entries in the event stream (redeliveries included).
    pub events: usize,
    /// What the checker found.
    #[serde(flatten)]
    pub verdict: Verdict,
    /// What the faults did.
    #[serde(flatten)]
    pub fault_report: FaultReport,
    /// The silos' log files.
    pub logs: String,
}

/// A unique cluster id for this run.
fn cluster_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("chaos-{nanos:x}-{}", std::process::id())
}

fn silo_binary(options: &Options) -> Result<PathBuf, ChaosError> {
    if let Some(path) = &options.silo_bin {
        return Ok(path.clone());
    }
    let me = std::env::current_exe().map_err(|e| {
        ChaosError::Options(format!(
            "cannot find this program's path ({e}): pass --silo-bin"
        ))
    })?;
    Ok(me.with_file_name("chaos-silo"))
}

/// Runs the workload under the faults and checks the history.
///
/// # Errors
/// A [`ChaosError`] when the run could not be carried out (not when it found violations:
/// those are in the [`Summary`]).
pub async fn run(options: &Options) -> Result<Summary, ChaosError> {
    if options.silos < 2 {
        return Err(ChaosError::Options("--silos: at least 2".into()));
    }
    if options.keys == 0 || options.callers == 0 {
        return Err(ChaosError::Options(
            "--keys and --callers: at least 1".into(),
        ));
    }
    let test_profile = match options.profile.as_str() {
        "test" => true,
        "production" => false,
        other => {
            return Err(ChaosError::Options(format!(
                "--profile {other:?}: use test or production"
            )));
        }
    };
    let cluster = cluster_id();
    let mut private = if options.faults.contains(&FaultKind::RedisRestart) {
        Some(PrivateRedis::start(Persistence::AofAlways).await)
    } else {
        None
    };
    let redis = private
        .as_ref()
        .map_or_else(|| options.redis.clone(), PrivateRedis::url);
    let log_dir = options
        .log_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(&cluster));
    std::fs::create_dir_all(&log_dir).map_err(|source| ChaosError::Process {
        what: format!("create {}", log_dir.display()),
        source,
    })?;
    let prefix = format!("{cluster}:events:");
    let spec = SiloSpec {
        binary: silo_binary(options)?,
        env: [
            ("GRANARY_CLUSTER", cluster.as_str()),
            ("GRANARY_SECRET", SECRET),
            ("GRANARY_REDIS", redis.as_str()),
            ("GRANARY_PROFILE", options.profile.as_str()),
            ("GRANARY_PLACEMENT", options.placement.as_str()),
            ("GRANARY_EVENTS_PREFIX", prefix.as_str()),
            // The first silo creates the cluster; with every silo told so, any may be first.
            ("GRANARY_BOOTSTRAP", "create"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
        log_dir: log_dir.clone(),
    };
    let timing = Timing {
        detection: Duration::from_secs(options.detection.unwrap_or(if test_profile {
            15
        } else {
            40
        })),
        stop_hold: Duration::from_millis(options.stop_hold_ms),
        partition_hold: Duration::from_millis(options.partition_hold_ms),
        redis_down: Duration::from_millis(options.redis_down_ms),
        new_address: options.restart_address == RestartAddress::New,
    };

    let mut silos = Cluster::start(spec, options.silos, &redis, &cluster, timing).await?;
    let store = silos.store.clone();

    let mut config = ClientConfig::new(&cluster, SECRET, silos.addresses());
    config.call_timeout = Duration::from_millis(options.call_timeout_ms);
    config.refresh = Duration::from_millis(if test_profile { 200 } else { 1000 });
    let client = ClusterClient::connect(config).await?;
    let load = Load {
        callers: options.callers,
        keys: options.keys,
        retry_pause: Duration::from_millis(20),
    };
    let t0 = Instant::now();
    silos.begin(t0);
    let workload = Workload::start(&client, load, t0);
    let duration = Duration::from_secs(options.duration);
    let interval = Duration::from_secs(options.interval.max(1));
    let mut next = interval;
    let mut turn = 0;
    let result = async {
        while next < duration {
            tokio::time::sleep(next.saturating_sub(t0.elapsed())).await;
            let fault = options.faults[turn % options.faults.len()];
            turn += 1;
            silos.inject(fault, private.as_mut()).await?;
            next = (t0.elapsed() + interval).max(next + interval);
        }
        tokio::time::sleep(duration.saturating_sub(t0.elapsed())).await;
        Ok::<_, ChaosError>(())
    }
    .await;
    let non_retryable_failures = workload.non_retryable();
    let attempts = workload.stop().await;
    let client_retries = client.retries();
    let end = t0.elapsed();
    client.close().await;
    if let Err(err) = result {
        silos.shutdown().await;
        return Err(err);
    }
    silos.settle().await?;
    let read = read_back(&store, &prefix, options).await;
    let injections = silos.injections.clone();
    let fault_report = silos.report.clone();
    silos.shutdown().await;
    drop(private.take());
    let (final_lists, events) = read?;
    let history = History {
        attempts,
        injections,
        final_lists,
        events,
        end,
    };
    let verdict = check(&history);
    let mut failures_by_kind = BTreeMap::new();
    for attempt in &history.attempts {
        if let Outcome::Failed(kind) = &attempt.outcome {
            *failures_by_kind.entry(kind.clone()).or_default() += 1;
        }
    }
    let failures = failures_by_kind.values().sum();
    let graceful_only = options.faults.iter().all(|f| *f == FaultKind::Rolling);
    let violations = verdict.violations()
        + fault_report.violations()
        + if graceful_only {
            non_retryable_failures
        } else {
            0
        };
    let call_ms = Percentiles::of(
        history
            .attempts
            .iter()
            .filter(|a| matches!(a.outcome, Outcome::Acked(_)))
            .map(|a| u64::try_from(a.end.saturating_sub(a.start).as_millis()).unwrap_or(u64::MAX))
            .collect(),
    );
    Ok(Summary {
        ok: violations == 0,
        violations,
        faults: options.faults.clone(),
        profile: options.profile.clone(),
        cluster,
        silos: options.silos,
        keys: options.keys,
        callers: options.callers,
        duration_s: (end.as_secs_f64() * 10.0).round() / 10.0,
        attempts: history.attempts.len(),
        acks: history.attempts.len() - failures,
        failures,
        failures_by_kind,
        non_retryable_failures,
        client_retries,
        call_ms,
        committed: history.final_lists.values().map(Vec::len).sum(),
        events: history.events.len(),
        verdict,
        fault_report,
        logs: log_dir.display().to_string(),
    })
}

/// Reads the final lists and the event stream once the relays delivered every committed
/// value's event, the lists stopped changing (a call the client gave up on may still commit),
/// or `--settle` passed.
async fn read_back(
    store: &Arc<RedisStore>,
    prefix: &str,
    options: &Options,
) -> Result<(BTreeMap<i64, Vec<u64>>, Vec<EventRecord>), ChaosError> {
    let deadline = Instant::now() + Duration::from_secs(options.settle);
    let sink = RedisStreamsSink::new(store.clone(), prefix);
    let mut previous = None;
    loop {
        // The connection may be broken by a Redis restart: it reconnects on the next command.
        let read = async {
            Ok::<_, ChaosError>((
                final_lists(store, options.keys).await?,
                events(&sink).await?,
            ))
        };
        let (lists, events) = match read.await {
            Ok(read) => read,
            Err(err) if Instant::now() >= deadline => return Err(err),
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let named: HashSet<(i64, u64)> = events.iter().map(|e| (e.key, e.value)).collect();
        let delivered = lists
            .iter()
            .all(|(key, list)| list.iter().all(|v| named.contains(&(*key, *v))));
        let still = previous.as_ref() == Some(&lists);
        if (delivered && still) || Instant::now() >= deadline {
            return Ok((lists, events));
        }
        previous = Some(lists);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The committed list of every key.
async fn final_lists(store: &RedisStore, keys: u32) -> Result<BTreeMap<i64, Vec<u64>>, ChaosError> {
    let mut lists = BTreeMap::new();
    for key in 0..i64::from(keys) {
        let (blob, _version) = store.read_raw(&GrainId::new(LIST_TYPE, key)).await?;
        let values = match blob {
            None => Vec::new(),
            Some(blob) => {
                granary::codec::state_codec::decode::<ListGrain>(&blob)
                    .map_err(|e| ChaosError::Decode {
                        key,
                        reason: e.to_string(),
                    })?
                    .values
            }
        };
        lists.insert(key, values);
    }
    Ok(lists)
}

/// Every entry of the `Appended` stream.
async fn events(sink: &RedisStreamsSink) -> Result<Vec<EventRecord>, ChaosError> {
    let envelopes = sink
        .recent(&[Appended::TYPE_NAME.to_owned()], 100_000_000)
        .await?;
    Ok(envelopes
        .into_iter()
        .filter_map(|envelope| {
            let key = envelope.source.key.parse().ok()?;
            let value = envelope.decode::<Appended>().ok()?.value;
            Some(EventRecord {
                id: envelope.id,
                key,
                value,
            })
        })
        .collect())
}

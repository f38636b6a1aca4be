//! P11: durable reminders' lateness (`fired_at − due` as the grain sees it) with 100,000
//! reminders at a 10 s period on one silo, against the same number of plain tokio sleeps (one
//! task per sleep) on the same runtime; and the Redis memory one reminder takes.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use granary::provider::{
    Claim, Commit, GrainAddress, Reminder, ReminderChange, StateChange, StateStore,
};
use granary::{ActivationId, GrainContext, GrainId, ReminderTick, Result, Silo, SiloId, grain};
use granary_redis::{RedisConfig, RedisStore};

use crate::engines::multi_thread;

/// Grains of the run, and reminders per grain (100,000 in all at full scale).
const PER_GRAIN: usize = 100;
/// The reminders' period.
const PERIOD: Duration = Duration::from_secs(10);
/// When the first reminder is due after arming starts; the others follow, spread over one
/// period. Long enough for arming 100,000 reminders to be over on a loaded machine: the ticks
/// measured are the steady state, not the registration's.
const FIRST: Duration = Duration::from_secs(10);
/// Periods measured.
const ROUNDS: usize = 2;

/// Each tick's lateness in microseconds, as the grains saw it.
static LATENESS: Mutex<Vec<u64>> = Mutex::new(Vec::new());

fn record(lateness: Duration) {
    let micros = u64::try_from(lateness.as_micros()).unwrap_or(u64::MAX);
    LATENESS.lock().expect("not poisoned").push(micros);
}

/// A grain that arms reminders and records how late each tick is.
#[derive(Debug, Default)]
pub(crate) struct LateGrain;

#[grain(name = "bench.late", state = ())]
impl LateGrain {
    /// Registers reminders `r0..`, the `i`-th first due `first_ms[i]` from now.
    pub async fn arm(&self, ctx: &GrainContext<Self>, first_ms: Vec<u64>) -> Result<()> {
        for (i, first) in first_ms.into_iter().enumerate() {
            ctx.register_reminder(&format!("r{i}"), Duration::from_millis(first), PERIOD)
                .await?;
        }
        Ok(())
    }

    #[on_reminder]
    async fn late(&self, _ctx: &GrainContext<Self>, _name: &str, tick: ReminderTick) -> Result<()> {
        record(tick.fired_at.duration_since(tick.due).unwrap_or_default());
        Ok(())
    }
}

/// The first due time of reminder `n` of `total`, spread evenly over one period.
fn first_of(n: usize, total: usize) -> Duration {
    FIRST + PERIOD.mul_f64(n as f64 / total as f64)
}

/// The p99 of `micros`, in milliseconds.
fn p99_ms(mut micros: Vec<u64>) -> f64 {
    micros.sort_unstable();
    let at = (micros.len() * 99 / 100).min(micros.len().saturating_sub(1));
    micros.get(at).map_or(f64::NAN, |&m| m as f64 / 1_000.0)
}

/// Granary: `total` reminders on one silo (memory store, two worker threads), `ROUNDS`
/// periods of ticks; the p99 lateness in ms.
pub(crate) fn granary(total: usize) -> f64 {
    LATENESS.lock().expect("not poisoned").clear();
    let grains = total.div_ceil(PER_GRAIN);
    multi_thread(2).block_on(async {
        let silo = Silo::builder()
            .register::<LateGrain>()
            .start()
            .await
            .expect("silo starts");
        let client = silo.client();
        let armed = Instant::now();
        let arms = (0..grains).map(|g| {
            let firsts = (0..PER_GRAIN)
                .map(|i| {
                    let first = first_of(i * grains + g, grains * PER_GRAIN);
                    let first = first.saturating_sub(armed.elapsed());
                    u64::try_from(first.as_millis()).unwrap_or(0)
                })
                .collect();
            let grain = client.grain::<LateGrain>(g as i64);
            async move { grain.arm(firsts).await.expect("arm") }
        });
        futures::future::join_all(arms).await;
        eprintln!(
            "# P11: {} reminders armed in {:?}",
            grains * PER_GRAIN,
            armed.elapsed()
        );
        let wanted = grains * PER_GRAIN * ROUNDS;
        let deadline = armed + FIRST + PERIOD * (ROUNDS as u32 + 3);
        while LATENESS.lock().expect("not poisoned").len() < wanted && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let seen = std::mem::take(&mut *LATENESS.lock().expect("not poisoned"));
        if seen.len() < wanted {
            eprintln!("# P11: only {} of {wanted} ticks arrived", seen.len());
        }
        if let Err(e) = silo.shutdown().await {
            eprintln!("# P11: the silo did not shut down cleanly: {e:?}");
        }
        p99_ms(seen)
    })
}

/// The baseline: `total` tokio tasks, each sleeping until its due time `ROUNDS` times, with
/// the same due times as [`granary()`]; the p99 lateness in ms.
pub(crate) fn tokio_sleeps(total: usize) -> f64 {
    multi_thread(2).block_on(async {
        let start = Instant::now();
        let tasks: Vec<_> = (0..total)
            .map(|n| {
                let first = start + first_of(n, total);
                tokio::spawn(async move {
                    let mut late = Vec::with_capacity(ROUNDS);
                    let mut due = first;
                    for _ in 0..ROUNDS {
                        tokio::time::sleep_until(due.into()).await;
                        late.push(u64::try_from(due.elapsed().as_micros()).unwrap_or(u64::MAX));
                        due += PERIOD;
                    }
                    late
                })
            })
            .collect();
        let mut all = Vec::with_capacity(total * ROUNDS);
        for task in tasks {
            all.extend(task.await.expect("sleeper"));
        }
        p99_ms(all)
    })
}

/// Registers `total` reminders in a fresh cluster of the Redis at `GRANARY_BENCH_REDIS`
/// (default `redis://127.0.0.1:6379`) and measures what they take: `MEMORY USAGE` of the
/// grains' reminder hashes and the shards' indexes, per reminder. The cluster's keys are
/// removed after.
pub(crate) fn redis_bytes_per_reminder(total: usize) -> anyhow::Result<f64> {
    let url = std::env::var("GRANARY_BENCH_REDIS")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let cluster = format!("bench-{}", uuid::Uuid::now_v7().simple());
    multi_thread(2).block_on(async {
        let store = RedisStore::connect(RedisConfig::new(&url, &cluster)).await?;
        let mut conn = redis::Client::open(url.as_str())?
            .get_multiplexed_async_connection()
            .await?;
        let due = granary::provider::unix_ms(SystemTime::now()) + 3_600_000;
        for g in 0..total.div_ceil(PER_GRAIN) {
            let address = GrainAddress {
                grain: GrainId::new("bench.late", g as i64),
                silo: SiloId::new("bench", 1),
                activation: ActivationId::new(),
            };
            let Claim::Won(loaded) = store.claim(&address, None).await? else {
                anyhow::bail!("a fresh grain is free");
            };
            let reminders = (0..PER_GRAIN)
                .map(|i| {
                    ReminderChange::Set(Reminder {
                        name: format!("r{i}"),
                        period_ms: 10_000,
                        next_due_ms: due + i as u64,
                    })
                })
                .collect();
            store
                .commit(Commit {
                    grain: address.grain.clone(),
                    activation: address.activation,
                    expected_version: loaded.version,
                    change: StateChange::Unchanged,
                    events: Vec::new(),
                    reminders,
                })
                .await?;
        }
        let mut keys = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, found): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("granary:{{{cluster}:*"))
                .arg("COUNT")
                .arg(10_000)
                .query_async(&mut conn)
                .await?;
            keys.extend(found);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let mut bytes = 0u64;
        for key in keys
            .iter()
            .filter(|k| k.contains(":rem:") || k.ends_with(":reminders"))
        {
            let size: Option<u64> = redis::cmd("MEMORY")
                .arg("USAGE")
                .arg(key)
                .arg("SAMPLES")
                .arg(0)
                .query_async(&mut conn)
                .await?;
            bytes += size.unwrap_or(0);
        }
        keys.push(format!("granary:{cluster}:meta"));
        for chunk in keys.chunks(10_000) {
            let () = redis::cmd("UNLINK")
                .arg(chunk)
                .query_async(&mut conn)
                .await?;
        }
        Ok(bytes as f64 / (total.div_ceil(PER_GRAIN) * PER_GRAIN) as f64)
    })
}

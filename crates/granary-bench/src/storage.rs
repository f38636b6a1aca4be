//! P5 (cold activation from Redis) and P6 (state + events commit): Granary on Redis against
//! redis-rs doing the same Redis work directly, on one multiplexed connection, in one run.
//!
//! Needs a Redis: `GRANARY_BENCH_REDIS`, or `redis://127.0.0.1:6379`. Every key the run writes
//! is under a cluster id of its own and is deleted at the end.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use granary::codec::state_codec;
use granary::{Event, GrainContext, Result, Silo, SiloConfig, grain};
use granary_redis::{RedisConfig, RedisStore};
use redis::aio::MultiplexedConnection;
use serde::{Deserialize, Serialize};
use tokio::runtime::Runtime;

use crate::engines::{multi_thread, p50_of};

/// The benchmark grain's state: about 200 bytes once encoded.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(crate) struct Stored {
    n: u64,
    blob: String,
}

/// Published by every bump.
#[derive(Debug, Serialize, Deserialize)]
struct Bumped {
    n: u64,
}

impl Event for Bumped {
    const TYPE_NAME: &'static str = "bench.bumped";
}

/// A grain with stored state: `get` reads it, `bump` writes it with one event.
#[derive(Debug, Default)]
pub(crate) struct StoredGrain;

#[grain(name = "bench.stored", state = Stored)]
impl StoredGrain {
    /// The state's size.
    pub async fn get(&self, ctx: &GrainContext<Self>) -> Result<u64> {
        Ok(ctx.state().blob.len() as u64)
    }

    /// Adds one, publishes `Bumped`, commits both.
    pub async fn bump(&self, ctx: &GrainContext<Self>) -> Result<u64> {
        let n = {
            let mut state = ctx.state();
            state.n += 1;
            state.n
        };
        ctx.publish(&Bumped { n })?;
        ctx.write_state().await?;
        Ok(n)
    }
}

fn state() -> Stored {
    Stored {
        n: 0,
        blob: "x".repeat(175),
    }
}

/// One Redis cluster id for the whole run, its store and a plain connection for the baselines.
pub(crate) struct RedisBench {
    rt: Runtime,
    cluster: String,
    store: Arc<RedisStore>,
    conn: MultiplexedConnection,
    blob: Vec<u8>,
}

impl RedisBench {
    pub(crate) fn connect() -> anyhow::Result<Self> {
        let url = std::env::var("GRANARY_BENCH_REDIS")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
        let rt = multi_thread(2);
        let cluster = format!("bench-{}", uuid::Uuid::now_v7().simple());
        let (store, conn) = rt.block_on(async {
            let store = RedisStore::connect(RedisConfig::new(&url, &cluster))
                .await
                .with_context(|| format!("P5/P6 need a Redis at {url} (GRANARY_BENCH_REDIS)"))?;
            let conn = redis::Client::open(url.as_str())?
                .get_multiplexed_async_connection()
                .await?;
            anyhow::Ok((store, conn))
        })?;
        let blob = state_codec::encode::<StoredGrain>(&state())?;
        Ok(Self {
            rt,
            cluster,
            store: Arc::new(store),
            conn,
            blob,
        })
    }

    /// Bytes of one stored state.
    pub(crate) fn state_bytes(&self) -> usize {
        self.blob.len()
    }

    fn silo(&self) -> Silo {
        self.rt.block_on(async {
            Silo::builder()
                .config(SiloConfig {
                    idle_timeout: Duration::from_secs(3600),
                    ..SiloConfig::default()
                })
                .storage(self.store.clone())
                .register::<StoredGrain>()
                .start()
                .await
                .expect("silo starts")
        })
    }

    fn get_key(&self, i: usize) -> String {
        format!("granary-bench:{}:get:{i}", self.cluster)
    }

    /// Stores `grains` states (and as many plain keys of the same size for the GET baseline).
    pub(crate) fn seed_p5(&self, grains: usize) {
        self.rt.block_on(async {
            let chunks = 128;
            let tasks: Vec<_> = (0..chunks)
                .map(|c| {
                    let store = self.store.clone();
                    let blob = self.blob.clone();
                    tokio::spawn(async move {
                        for i in (c..grains).step_by(chunks) {
                            let id = granary::GrainId::new("bench.stored", format!("p5-{i}"));
                            store.put_raw(&id, &blob).await.expect("seed state");
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.expect("seed task");
            }
            let mut conn = self.conn.clone();
            let () = redis::cmd("SET")
                .arg(self.raw_claim_key("epoch"))
                .arg("epoch")
                .query_async(&mut conn)
                .await
                .expect("seed epoch");
            for start in (0..grains).step_by(1_000) {
                let mut pipe = redis::pipe();
                for i in start..(start + 1_000).min(grains) {
                    pipe.set(self.get_key(i), &self.blob).ignore();
                    pipe.hset_multiple(
                        self.raw_claim_key(&i.to_string()),
                        &[("v", &b"1"[..]), ("d", &self.blob)],
                    )
                    .ignore();
                }
                let () = pipe.query_async(&mut conn).await.expect("seed keys");
            }
        });
    }

    /// Activations per second: `grains` cold grains, first calls from `concurrency` callers.
    pub(crate) fn p5_granary(&self, grains: usize, concurrency: usize) -> f64 {
        let silo = self.silo();
        let rate = self.rt.block_on(async {
            let client = silo.client();
            let start = Instant::now();
            let tasks: Vec<_> = (0..concurrency)
                .map(|c| {
                    let client = client.clone();
                    tokio::spawn(async move {
                        for i in (c..grains).step_by(concurrency) {
                            let grain = client.grain::<StoredGrain>(format!("p5-{i}"));
                            std::hint::black_box(grain.get().await.expect("cold call"));
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.expect("caller");
            }
            grains as f64 / start.elapsed().as_secs_f64()
        });
        assert_eq!(
            silo.activation_count(),
            grains,
            "every grain activated once"
        );
        self.rt
            .block_on(silo.shutdown())
            .expect("shutdown releases every grain");
        rate
    }

    /// GETs per second of `grains` keys of the same size, from `concurrency` tasks.
    pub(crate) fn p5_redis_get(&self, grains: usize, concurrency: usize) -> f64 {
        self.rt.block_on(async {
            let start = Instant::now();
            let tasks: Vec<_> = (0..concurrency)
                .map(|c| {
                    let mut conn = self.conn.clone();
                    let keys: Vec<String> = (c..grains)
                        .step_by(concurrency)
                        .map(|i| self.get_key(i))
                        .collect();
                    tokio::spawn(async move {
                        for key in keys {
                            let value: Vec<u8> = redis::cmd("GET")
                                .arg(&key)
                                .query_async(&mut conn)
                                .await
                                .expect("GET");
                            std::hint::black_box(value);
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.expect("caller");
            }
            grains as f64 / start.elapsed().as_secs_f64()
        })
    }

    fn raw_claim_key(&self, name: &str) -> String {
        format!("granary-bench:{{{}:raw-p5}}:{name}", self.cluster)
    }

    /// Claims per second of the claim script alone on `grains` stored grains from
    /// `concurrency` tasks: the Redis side of a cold activation, without the runtime. Owners are
    /// removed first (untimed), so that every claim is a first claim.
    pub(crate) fn p5_raw_claim(&self, grains: usize, concurrency: usize) -> f64 {
        let script = Arc::new(redis::Script::new(granary_redis::__private::claim_script()));
        self.rt.block_on(async {
            let mut conn = self.conn.clone();
            for start in (0..grains).step_by(1_000) {
                let mut pipe = redis::pipe();
                for i in start..(start + 1_000).min(grains) {
                    pipe.hdel(self.raw_claim_key(&i.to_string()), "a").ignore();
                }
                let () = pipe.query_async(&mut conn).await.expect("reset owners");
            }
            let start = Instant::now();
            let tasks: Vec<_> = (0..concurrency)
                .map(|c| {
                    let mut conn = self.conn.clone();
                    let script = script.clone();
                    let epoch = self.raw_claim_key("epoch");
                    let keys: Vec<String> = (c..grains)
                        .step_by(concurrency)
                        .map(|i| self.raw_claim_key(&i.to_string()))
                        .collect();
                    tokio::spawn(async move {
                        for key in keys {
                            let reply: Vec<redis::Value> = script
                                .key(&epoch)
                                .key(&key)
                                .arg("epoch")
                                .arg("0190aaaabbbbccccddddeeeeffff0000|1|raw")
                                .arg("")
                                .invoke_async(&mut conn)
                                .await
                                .expect("claim");
                            std::hint::black_box(reply);
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.expect("caller");
            }
            grains as f64 / start.elapsed().as_secs_f64()
        })
    }

    /// p50 of one grain call that writes state and one event, sequentially.
    pub(crate) fn p6a_granary(&self, calls: usize) -> f64 {
        let silo = self.silo();
        let p50 = self.rt.block_on(async {
            let grain = silo
                .client()
                .grain::<StoredGrain>(format!("p6a-{}", uuid::Uuid::now_v7()));
            p50_of(calls, |_| {
                let grain = &grain;
                async move { grain.bump().await.expect("bump") }
            })
            .await
        });
        self.rt.block_on(silo.shutdown()).expect("shutdown");
        p50
    }

    /// p50 of the raw commit script with the same arguments, sequentially.
    pub(crate) fn p6a_raw(&self, calls: usize) -> f64 {
        self.rt.block_on(async {
            let raw = self.raw_writer("p6a").await;
            p50_of(calls, |_| {
                let raw = &raw;
                let conn = self.conn.clone();
                async move { raw.commit(conn).await }
            })
            .await
        })
    }

    /// Commits per second of `writers` grains each committing `per_writer` times in sequence.
    pub(crate) fn p6b_granary(&self, writers: usize, per_writer: usize) -> f64 {
        let silo = self.silo();
        let run = uuid::Uuid::now_v7();
        let rate = self.rt.block_on(async {
            let client = silo.client();
            let grains: Vec<_> = (0..writers)
                .map(|w| client.grain::<StoredGrain>(format!("p6b-{run}-{w}")))
                .collect();
            for grain in &grains {
                grain.get().await.expect("activate");
            }
            let start = Instant::now();
            let tasks: Vec<_> = grains
                .into_iter()
                .map(|grain| {
                    tokio::spawn(async move {
                        for _ in 0..per_writer {
                            grain.bump().await.expect("bump");
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.expect("writer");
            }
            (writers * per_writer) as f64 / start.elapsed().as_secs_f64()
        });
        self.rt.block_on(silo.shutdown()).expect("shutdown");
        rate
    }

    /// Commits per second of the raw script from `writers` tasks on one multiplexed connection.
    pub(crate) fn p6b_raw(&self, writers: usize, per_writer: usize) -> f64 {
        self.rt.block_on(async {
            let mut raws = Vec::with_capacity(writers);
            for w in 0..writers {
                raws.push(self.raw_writer(&format!("p6b-{w}")).await);
            }
            let start = Instant::now();
            let tasks: Vec<_> = raws
                .into_iter()
                .map(|raw| {
                    let conn = self.conn.clone();
                    tokio::spawn(async move {
                        for _ in 0..per_writer {
                            raw.commit(conn.clone()).await;
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.expect("writer");
            }
            (writers * per_writer) as f64 / start.elapsed().as_secs_f64()
        })
    }

    /// A grain's keys prepared for the raw script: the epoch copy and the owner entry.
    async fn raw_writer(&self, name: &str) -> RawWriter {
        let tag = format!(
            "granary-bench:{{{}:raw-{name}-{}}}",
            self.cluster,
            uuid::Uuid::now_v7().simple()
        );
        let writer = RawWriter {
            script: redis::Script::new(granary_redis::__private::commit_script()),
            epoch_key: format!("{tag}:epoch"),
            grain_key: format!("{tag}:grain"),
            outbox_key: format!("{tag}:outbox"),
            version: AtomicU64::new(0),
            blob: self.blob.clone(),
        };
        let mut conn = self.conn.clone();
        let () = redis::pipe()
            .set(&writer.epoch_key, "epoch")
            .ignore()
            .hset(&writer.grain_key, "a", "activation")
            .ignore()
            .query_async(&mut conn)
            .await
            .expect("prepare raw keys");
        writer
    }

    /// Deletes every key of the run.
    pub(crate) fn cleanup(&self) {
        self.rt.block_on(async {
            let mut conn = self.conn.clone();
            for pattern in [
                format!("granary:{{{}:*", self.cluster),
                format!("granary:{}:*", self.cluster),
                format!("granary-bench:{}:*", self.cluster),
                format!("granary-bench:{{{}:*", self.cluster),
            ] {
                let mut cursor = 0u64;
                loop {
                    let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(10_000)
                        .query_async(&mut conn)
                        .await
                        .expect("SCAN");
                    if !keys.is_empty() {
                        let () = redis::cmd("UNLINK")
                            .arg(&keys)
                            .query_async(&mut conn)
                            .await
                            .expect("UNLINK");
                    }
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
            }
        });
    }
}

/// The commit script called directly, as the store calls it.
struct RawWriter {
    script: redis::Script,
    epoch_key: String,
    grain_key: String,
    outbox_key: String,
    version: AtomicU64,
    blob: Vec<u8>,
}

impl RawWriter {
    async fn commit(&self, mut conn: MultiplexedConnection) -> u64 {
        let version = self.version.load(Ordering::Relaxed);
        let payload = format!("{{\"n\":{}}}", version + 1);
        let reply: Vec<redis::Value> = self
            .script
            .key(&self.epoch_key)
            .key(&self.grain_key)
            .key(&self.outbox_key)
            .arg("epoch")
            .arg("activation")
            .arg(version)
            .arg("w")
            .arg(self.blob.as_slice())
            .arg("11:bench.stored:s:raw")
            .arg(1)
            .arg("bench.bumped")
            .arg(payload.as_bytes())
            .arg("")
            .invoke_async(&mut conn)
            .await
            .expect("raw commit");
        assert!(
            matches!(reply.first(), Some(redis::Value::BulkString(ok)) if ok == b"ok"),
            "{reply:?}"
        );
        self.version.store(version + 1, Ordering::Relaxed);
        version + 1
    }
}

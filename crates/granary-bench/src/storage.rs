//! P5 (cold activation from Redis), P6 (state + events commit) and P10 (Redis bytes per
//! persisted grain): Granary on Redis against redis-rs doing the same Redis work directly, on one
//! multiplexed connection, in one run.
//!
//! Needs a Redis: `GRANARY_BENCH_REDIS`, or `redis://127.0.0.1:6379`. Every key the run writes
//! is under a cluster id of its own and is deleted at the end.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use granary::codec::state_codec;
use granary::provider::{Claim, Commit, GrainAddress, StateChange, StateStore};
use granary::{
    ActivationId, Event, GrainContext, GrainId, PublishedEvent, Result, Silo, SiloConfig, SiloId,
    grain,
};
use granary_redis::{RedisConfig, RedisStore};
use granary_testkit::redis_cluster::PrivateRedisCluster;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
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

/// One Redis cluster id for the whole run, its store and a plain connection for the baselines:
/// to one Redis (`C` = [`MultiplexedConnection`]), or to a private Redis Cluster the run
/// started (`C` = [`ClusterConnection`], P5-cluster and P6-cluster).
pub(crate) struct RedisBench<C = MultiplexedConnection> {
    rt: Runtime,
    cluster: String,
    store: Arc<RedisStore>,
    conn: C,
    blob: Vec<u8>,
    /// On a Redis Cluster: the servers (killed when the bench is dropped), and the raw claim
    /// baseline spreads its keys over [`RAW_SHARDS`] hash tags, as the store spreads grains over
    /// its shards, instead of one.
    servers: Option<PrivateRedisCluster>,
}

/// The hash tags the raw claim baseline spreads its keys over on a Redis Cluster.
const RAW_SHARDS: usize = 64;

impl RedisBench<ClusterConnection> {
    /// Starts a private 3-primary Redis Cluster and connects the store and the baseline's
    /// cluster connection to it.
    pub(crate) fn connect_cluster() -> anyhow::Result<Self> {
        let rt = multi_thread(2);
        let cluster = format!("bench-{}", uuid::Uuid::now_v7().simple());
        let (servers, store, conn) = rt.block_on(async {
            let servers = PrivateRedisCluster::start(0).await;
            let store = RedisStore::connect(RedisConfig::new(servers.url(), &cluster))
                .await
                .context("P5-cluster/P6-cluster: the store on the private Redis Cluster")?;
            let seeds = servers
                .ports()
                .into_iter()
                .map(|port| format!("redis://127.0.0.1:{port}"));
            let conn = redis::cluster::ClusterClient::new(seeds)?
                .get_async_connection()
                .await?;
            anyhow::Ok((servers, store, conn))
        })?;
        Self::assemble(rt, cluster, store, conn, Some(servers))
    }
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
        Self::assemble(rt, cluster, store, conn, None)
    }
}

impl<C: ConnectionLike + Clone + Send + Sync + 'static> RedisBench<C> {
    /// The bench of `cluster` on a connected store and baseline connection.
    fn assemble(
        rt: Runtime,
        cluster: String,
        store: RedisStore,
        conn: C,
        servers: Option<PrivateRedisCluster>,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            rt,
            cluster,
            store: Arc::new(store),
            conn,
            blob: state_codec::encode::<StoredGrain>(&state())?,
            servers,
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
            let epochs = (0..grains.min(self.raw_shards()))
                .map(|i| {
                    redis::cmd("SET")
                        .arg(self.raw_claim_keys(i).0)
                        .arg("epoch")
                        .clone()
                })
                .collect();
            self.run_all(epochs).await;
            for start in (0..grains).step_by(1_000) {
                let mut cmds = Vec::with_capacity(2_000);
                for i in start..(start + 1_000).min(grains) {
                    if self.servers.is_none() {
                        // The GET baseline runs on one Redis only.
                        cmds.push(
                            redis::cmd("SET")
                                .arg(self.get_key(i))
                                .arg(&self.blob)
                                .clone(),
                        );
                    }
                    cmds.push(
                        redis::cmd("HSET")
                            .arg(self.raw_claim_keys(i).1)
                            .arg("v")
                            .arg(&b"1"[..])
                            .arg("d")
                            .arg(&self.blob)
                            .clone(),
                    );
                }
                self.run_all(cmds).await;
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

    /// The hash tags of the raw claim baseline: one on one Redis, [`RAW_SHARDS`] on a cluster.
    fn raw_shards(&self) -> usize {
        if self.servers.is_some() {
            RAW_SHARDS
        } else {
            1
        }
    }

    /// The epoch key and the grain key of the raw claim of grain `i`, under one hash tag.
    fn raw_claim_keys(&self, i: usize) -> (String, String) {
        let tag = match self.servers {
            Some(_) => format!(
                "granary-bench:{{{}:raw-p5-{}}}",
                self.cluster,
                i % RAW_SHARDS
            ),
            None => format!("granary-bench:{{{}:raw-p5}}", self.cluster),
        };
        (format!("{tag}:epoch"), format!("{tag}:{i}"))
    }

    /// Runs `cmds`, replies ignored: one pipeline on one Redis; on a cluster, whose pipelines
    /// stay within one slot, each on its own, all at once (untimed seeding only).
    async fn run_all(&self, cmds: Vec<redis::Cmd>) {
        if self.servers.is_none() {
            let mut pipe = redis::pipe();
            for cmd in cmds {
                pipe.add_command(cmd).ignore();
            }
            let () = pipe
                .query_async(&mut self.conn.clone())
                .await
                .expect("seed keys");
            return;
        }
        let sent = cmds.into_iter().map(|cmd| {
            let mut conn = self.conn.clone();
            async move { cmd.query_async::<redis::Value>(&mut conn).await }
        });
        for reply in futures::future::join_all(sent).await {
            reply.expect("seed a key");
        }
    }

    /// Claims per second of the claim script alone on `grains` stored grains from
    /// `concurrency` tasks: the Redis side of a cold activation, without the runtime. Owners are
    /// removed first (untimed), so that every claim is a first claim.
    pub(crate) fn p5_raw_claim(&self, grains: usize, concurrency: usize) -> f64 {
        self.p5_claims(
            grains,
            concurrency,
            ClaimVia::Script(granary_redis::__private::claim_script()),
        )
    }

    /// As [`p5_raw_claim`](Self::p5_raw_claim), with the claim sent `via` a script or a Redis
    /// function. A function is loaded (untimed) under a library name of this run and deleted
    /// afterwards.
    pub(crate) fn p5_claims(&self, grains: usize, concurrency: usize, via: ClaimVia) -> f64 {
        let library = format!("granary_bench_{}", uuid::Uuid::now_v7().simple());
        let call = match via {
            ClaimVia::Script(source) => ClaimCall::Script(Arc::new(redis::Script::new(source))),
            ClaimVia::Function(_) => ClaimCall::Function(Arc::from(format!("{library}_claim"))),
        };
        self.rt.block_on(async {
            let mut conn = self.conn.clone();
            if let (ClaimVia::Function(source), ClaimCall::Function(name)) = (via, &call) {
                let body = source.strip_prefix("#!lua\n").unwrap_or(source);
                let code = format!(
                    "#!lua name={library}\nredis.register_function('{name}', \
                     function(KEYS, ARGV)\n{body}\nend)"
                );
                let _: String = redis::cmd("FUNCTION")
                    .arg("LOAD")
                    .arg(code)
                    .query_async(&mut conn)
                    .await
                    .expect("FUNCTION LOAD");
            }
            for start in (0..grains).step_by(1_000) {
                let resets = (start..(start + 1_000).min(grains))
                    .map(|i| redis::cmd("HDEL").arg(self.raw_claim_keys(i).1).arg("a").clone())
                    .collect();
                self.run_all(resets).await;
            }
            let start = Instant::now();
            let tasks: Vec<_> = (0..concurrency)
                .map(|c| {
                    let mut conn = self.conn.clone();
                    let call = call.clone();
                    let keys: Vec<(String, String)> = (c..grains)
                        .step_by(concurrency)
                        .map(|i| self.raw_claim_keys(i))
                        .collect();
                    tokio::spawn(async move {
                        for (epoch, key) in keys {
                            let reply = call.claim(&mut conn, &epoch, &key).await;
                            assert!(
                                matches!(reply.first(), Some(redis::Value::BulkString(won)) if won == b"won"),
                                "a first claim wins: {reply:?}"
                            );
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.expect("caller");
            }
            let rate = grains as f64 / start.elapsed().as_secs_f64();
            if matches!(call, ClaimCall::Function(_)) {
                let () = redis::cmd("FUNCTION")
                    .arg("DELETE")
                    .arg(&library)
                    .query_async(&mut conn)
                    .await
                    .expect("FUNCTION DELETE");
            }
            rate
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

    /// Commits per second of `writers` grains, each claimed once (untimed) and then committing
    /// `per_writer` state writes with one event each in sequence, through the store's own
    /// `StateStore::commit` (the fenced script), all on the store's one connection.
    pub(crate) fn p6c_fenced(&self, writers: usize, per_writer: usize) -> f64 {
        let run = uuid::Uuid::now_v7().simple();
        let silo = SiloId::new("bench-p6c", 1);
        self.rt.block_on(async {
            let mut owned = Vec::with_capacity(writers);
            for w in 0..writers {
                let address = GrainAddress {
                    grain: GrainId::new("bench.stored", format!("p6c-{run}-{w}")),
                    silo: silo.clone(),
                    activation: ActivationId::new(),
                };
                match self.store.claim(&address, None).await.expect("claim") {
                    Claim::Won(loaded) => owned.push((address, loaded.version)),
                    Claim::Owned(owner) => panic!("a fresh grain is owned already: {owner:?}"),
                }
            }
            let start = Instant::now();
            let tasks: Vec<_> = owned
                .into_iter()
                .map(|(address, mut version)| {
                    let store = self.store.clone();
                    let blob = self.blob.clone();
                    tokio::spawn(async move {
                        for _ in 0..per_writer {
                            let commit = Commit {
                                grain: address.grain.clone(),
                                activation: address.activation,
                                expected_version: version,
                                change: StateChange::Write(blob.clone()),
                                events: vec![bumped(version + 1)],
                                reminders: Vec::new(),
                            };
                            version = store.commit(commit).await.expect("fenced commit");
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

    /// Commits per second of the same writes done unfenced: `SET` of the same state bytes and
    /// `XADD` of the same event fields, pipelined in one round trip per commit, from `writers`
    /// tasks on one multiplexed connection.
    pub(crate) fn p6c_unfenced(&self, writers: usize, per_writer: usize) -> f64 {
        let run = uuid::Uuid::now_v7().simple();
        self.rt.block_on(async {
            let start = Instant::now();
            let tasks: Vec<_> = (0..writers)
                .map(|w| {
                    let mut conn = self.conn.clone();
                    let blob = self.blob.clone();
                    let tag = format!("granary-bench:{{{}:raw-p6c-{run}-{w}}}", self.cluster);
                    let field = format!("11:bench.stored:s:p6c-{run}-{w}");
                    tokio::spawn(async move {
                        let (state_key, outbox_key) =
                            (format!("{tag}:state"), format!("{tag}:outbox"));
                        for version in 1..=per_writer as u64 {
                            let event = bumped(version);
                            let () = redis::pipe()
                                .set(&state_key, blob.as_slice())
                                .ignore()
                                .cmd("XADD")
                                .arg(&outbox_key)
                                .arg("*")
                                .arg("g")
                                .arg(&field)
                                .arg("v")
                                .arg(version)
                                .arg("i")
                                .arg(0)
                                .arg("t")
                                .arg(&event.type_name)
                                .arg("p")
                                .arg(event.payload.as_slice())
                                .arg("tr")
                                .arg("")
                                .ignore()
                                .query_async(&mut conn)
                                .await
                                .expect("SET + XADD");
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

    /// P10: stores `grains` states through the store (the hash a committed grain leaves behind)
    /// and measures the Redis memory they take (`MEMORY USAGE` of every key of this bench's
    /// cluster), first at rest, then with every grain claimed (its owner entry, which is its
    /// directory entry, written into the same hash).
    pub(crate) fn p10(&self, grains: usize) -> P10 {
        self.rt.block_on(async {
            let ids: Vec<GrainId> = (0..grains)
                .map(|i| GrainId::new("bench.stored", format!("p10-{i}")))
                .collect();
            for chunk in ids.chunks(128) {
                let writes = chunk.iter().map(|id| self.store.put_raw(id, &self.blob));
                for written in futures::future::join_all(writes).await {
                    written.expect("store a state");
                }
            }
            let at_rest = self.key_memory().await;
            let silo = SiloId::new("bench-p10", 1);
            for chunk in ids.chunks(128) {
                let claims = chunk.iter().map(|id| {
                    let address = GrainAddress {
                        grain: id.clone(),
                        silo: silo.clone(),
                        activation: ActivationId::new(),
                    };
                    async move { self.store.claim(&address, None).await }
                });
                for claim in futures::future::join_all(claims).await {
                    assert!(
                        matches!(claim.expect("claim"), Claim::Won(_)),
                        "an unowned grain is claimed"
                    );
                }
            }
            let active = self.key_memory().await;
            P10 {
                grains,
                at_rest,
                active,
            }
        })
    }

    /// `MEMORY USAGE` (all samples) of every key of this bench's cluster, split into the grains'
    /// own keys (`…:grain:…`) and the cluster's shared ones (metadata, shard epochs).
    async fn key_memory(&self) -> KeyMemory {
        let mut conn = self.conn.clone();
        let keys = scan(
            &mut conn,
            &[
                format!("granary:{{{}:*", self.cluster),
                format!("granary:{}:*", self.cluster),
            ],
        )
        .await;
        let mut memory = KeyMemory::default();
        for keys in keys.chunks(1_000) {
            let mut pipe = redis::pipe();
            for key in keys {
                pipe.cmd("MEMORY")
                    .arg("USAGE")
                    .arg(key)
                    .arg("SAMPLES")
                    .arg(0);
            }
            let sizes: Vec<Option<u64>> = pipe.query_async(&mut conn).await.expect("MEMORY USAGE");
            for (key, size) in keys.iter().zip(sizes) {
                let size = size.unwrap_or(0);
                if key.contains(":grain:") {
                    memory.grain_keys += 1;
                    memory.grain_bytes += size;
                } else {
                    memory.shared_keys += 1;
                    memory.shared_bytes += size;
                }
            }
        }
        memory
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
            let keys = scan(
                &mut conn,
                &[
                    format!("granary:{{{}:*", self.cluster),
                    format!("granary:{}:*", self.cluster),
                    format!("granary-bench:{}:*", self.cluster),
                    format!("granary-bench:{{{}:*", self.cluster),
                ],
            )
            .await;
            for keys in keys.chunks(10_000) {
                let () = redis::cmd("UNLINK")
                    .arg(keys)
                    .query_async(&mut conn)
                    .await
                    .expect("UNLINK");
            }
        });
    }
}

/// Every key matching one of `patterns` (`SCAN … MATCH`).
pub(crate) async fn scan(conn: &mut impl ConnectionLike, patterns: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    for pattern in patterns {
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(10_000)
                .query_async(conn)
                .await
                .expect("SCAN");
            found.extend(keys);
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    found
}

/// A leaner spelling of the claim script, measured against it (P5-claim-lean): the same keys,
/// calls and replies, with the owner's activation compared by a plain prefix test instead of a
/// pattern match. The owner entry is `<activation>|…` with a non-empty activation, so for every
/// entry the store writes both spellings decide alike.
pub(crate) const CLAIM_LEAN: &str = r"#!lua
local epoch = redis.call('GET', KEYS[1])
if epoch ~= ARGV[1] then return {'epoch', epoch} end
local grain = redis.call('HMGET', KEYS[2], 'a', 'v', 'd')
local owner = grain[1]
if not owner or (ARGV[3] ~= '' and string.sub(owner, 1, #ARGV[3] + 1) == ARGV[3] .. '|') then
  redis.call('HSET', KEYS[2], 'a', ARGV[2])
  return {'won', grain[2] or '0', grain[3]}
end
if owner == ARGV[2] then return {'won', grain[2] or '0', grain[3]} end
return {'owned', owner}
";

/// How a P5 claim reaches Redis: a Lua script (`EVALSHA`) or the same Lua as a Redis function
/// (`FCALL`).
#[derive(Debug, Clone, Copy)]
pub(crate) enum ClaimVia {
    /// This script's text.
    Script(&'static str),
    /// This script's text (after its `#!lua` line) as a function's body.
    Function(&'static str),
}

/// A prepared claim of [`ClaimVia`].
#[derive(Clone)]
enum ClaimCall {
    Script(Arc<redis::Script>),
    Function(Arc<str>),
}

impl ClaimCall {
    /// Claims `key` for a fixed owner entry; the reply as the script gives it.
    async fn claim(
        &self,
        conn: &mut (impl ConnectionLike + Send),
        epoch: &str,
        key: &str,
    ) -> Vec<redis::Value> {
        const OWNER: &str = "0190aaaabbbbccccddddeeeeffff0000|1|raw";
        match self {
            Self::Script(script) => script
                .key(epoch)
                .key(key)
                .arg("epoch")
                .arg(OWNER)
                .arg("")
                .invoke_async(conn)
                .await
                .expect("claim"),
            Self::Function(name) => redis::cmd("FCALL")
                .arg(&**name)
                .arg(2)
                .arg(epoch)
                .arg(key)
                .arg("epoch")
                .arg(OWNER)
                .arg("")
                .query_async(conn)
                .await
                .expect("claim"),
        }
    }
}

/// The event every P6c commit carries: what `StoredGrain::bump` publishes.
fn bumped(n: u64) -> PublishedEvent {
    PublishedEvent {
        type_name: Bumped::TYPE_NAME.to_owned(),
        payload: format!("{{\"n\":{n}}}").into_bytes(),
        trace: None,
    }
}

/// The Redis memory of a cluster's keys (`MEMORY USAGE`, bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct KeyMemory {
    /// How many grain hashes.
    pub(crate) grain_keys: u64,
    /// Their bytes.
    pub(crate) grain_bytes: u64,
    /// How many other keys (cluster metadata, shard epoch copies).
    pub(crate) shared_keys: u64,
    /// Their bytes.
    pub(crate) shared_bytes: u64,
}

impl KeyMemory {
    /// Bytes per grain: its own keys plus its share of the cluster's shared keys.
    pub(crate) fn per_grain(&self, grains: usize) -> f64 {
        (self.grain_bytes + self.shared_bytes) as f64 / grains as f64
    }
}

/// What P10 measured.
#[derive(Debug, Clone, Copy)]
pub(crate) struct P10 {
    /// How many grains were stored.
    pub(crate) grains: usize,
    /// With every grain at rest (state and version only).
    pub(crate) at_rest: KeyMemory,
    /// With every grain claimed (plus its owner entry).
    pub(crate) active: KeyMemory,
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
    async fn commit(&self, mut conn: impl ConnectionLike + Send) -> u64 {
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

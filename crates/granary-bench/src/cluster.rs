//! P3 (cross-silo call latency), P4 (cross-silo throughput) and P9 (failover time): silo
//! processes (this binary in `--serve silo` mode) on a real Redis, against a raw length-
//! delimited TCP echo process (`--serve echo`) with the same frame sizes and concurrency, and
//! a tonic gRPC server process (`--serve tonic`, see [`crate::grpc`]).
//!
//! P3 and P4 run every side in the same [`CpuPlacement`]: the benchmark's client runtime pinned to
//! one core, the server process (`--cpu N`) to another.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{FutureExt, SinkExt, StreamExt};
use granary::{ClusterConfig, GrainId, Placement, Silo, SiloConfig};
use granary_redis::{RedisConfig, RedisMembership, RedisStore};
use granary_testkit::process::SiloProcess;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use crate::engines::granary::{BenchGrain, BenchRef};
use crate::engines::multi_thread;
use crate::placement::{CpuPlacement, Pinned};
use crate::report::median;
use crate::tls::BenchTls;

const SECRET: &str = "granary-bench cluster secret, 32+ bytes";

fn redis_url() -> String {
    std::env::var("GRANARY_BENCH_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// `--serve silo`: a silo process hosting the bench grain (settings from `GRANARY_*`).
pub(crate) async fn serve_silo() -> anyhow::Result<()> {
    let settings = granary_node::Settings::load(None)?;
    granary_node::run(settings, |silo| silo.register::<BenchGrain>()).await?;
    Ok(())
}

/// `--serve echo`: echoes length-delimited frames, writing every frame already received before
/// one flush (as the transport does).
pub(crate) async fn serve_echo() -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    #[allow(
        clippy::print_stdout,
        reason = "the ready line is the process's interface"
    )]
    {
        println!("echo ready at {}", listener.local_addr()?);
    }
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            let mut framed = Framed::new(stream, LengthDelimitedCodec::new());
            while let Some(Ok(first)) = framed.next().await {
                if framed.feed(first.freeze()).await.is_err() {
                    return;
                }
                while let Some(Some(Ok(frame))) = framed.next().now_or_never() {
                    if framed.feed(frame.freeze()).await.is_err() {
                        return;
                    }
                }
                if SinkExt::<Bytes>::flush(&mut framed).await.is_err() {
                    return;
                }
            }
        });
    }
}

fn exe() -> String {
    std::env::current_exe()
        .expect("the bench binary's path")
        .display()
        .to_string()
}

/// The arguments that start this binary as a server of `role`, pinned to `cpu` if given.
fn serve_args(role: &str, cpu: Option<usize>) -> Vec<String> {
    let mut args = vec!["--serve".to_owned(), role.to_owned()];
    if let Some(cpu) = cpu {
        args.extend(["--cpu".to_owned(), cpu.to_string()]);
    }
    args
}

/// Starts this binary as a server of `role` (`echo`, `tonic`), pinned to `cpu` if given, and
/// waits for its ready line.
async fn start_server(role: &str, cpu: Option<usize>) -> (SiloProcess, SocketAddr) {
    let args = serve_args(role, cpu);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let process = SiloProcess::start_with_args(&exe(), &args, role, &[]).await;
    let addr = process.addr;
    (process, addr)
}

/// Pins the calling thread to the client's core of `placement` for the guard's lifetime.
fn pin_client(placement: CpuPlacement) -> Pinned {
    placement
        .pin_client()
        .unwrap_or_else(|e| panic!("{placement}: {e}"))
}

/// The timings a benchmark's silos run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Profile {
    /// `ClusterConfig::test_profile()`: a crash declared in about a second.
    Test,
    /// `ClusterConfig::new()`'s defaults: a crash declared in about 4 s.
    Production,
}

async fn start_silo_with(
    cluster: &str,
    name: &str,
    profile: Profile,
    cpu: Option<usize>,
    tls: Option<&BenchTls>,
) -> SiloProcess {
    let redis = redis_url();
    let args = serve_args("silo", cpu);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let tls_env = tls.map(BenchTls::env).unwrap_or_default();
    let mut env = vec![
        ("GRANARY_CLUSTER", cluster),
        ("GRANARY_SECRET", SECRET),
        ("GRANARY_REDIS", &redis),
        ("GRANARY_PLACEMENT", "prefer-local"),
        (
            "GRANARY_PROFILE",
            match profile {
                Profile::Test => "test",
                Profile::Production => "production",
            },
        ),
    ];
    env.extend(tls_env.iter().map(|(k, v)| (*k, v.as_str())));
    let mut process = SiloProcess::start_with_args(&exe(), &args, name, &env).await;
    process.name = name.to_owned();
    process
}

/// An in-process silo joining `cluster` with the cluster timings of `profile`, placing new
/// grains by hash.
async fn local_silo_with(cluster: &str, profile: Profile, tls: Option<&BenchTls>) -> Silo {
    let store = Arc::new(
        RedisStore::connect(RedisConfig::new(redis_url(), cluster))
            .await
            .expect("P3/P4/P9 need a Redis (GRANARY_BENCH_REDIS)"),
    );
    let mut config = ClusterConfig::new(cluster, SECRET, "127.0.0.1:0".parse().expect("addr"));
    if profile == Profile::Test {
        config = config.test_profile();
    }
    config.placement = Placement::Hash;
    config.tls = tls.map(BenchTls::config);
    Silo::builder()
        .config(SiloConfig {
            name: "bench-caller".into(),
            idle_timeout: Duration::from_secs(3600),
            // The production call timeout when profiling: under valgrind a call takes ~50x longer.
            call_timeout: match profile {
                Profile::Test => SiloConfig::test_profile().call_timeout,
                Profile::Production => SiloConfig::default().call_timeout,
            },
            ..SiloConfig::test_profile()
        })
        .storage(store.clone())
        .membership(Arc::new(RedisMembership::new(store)))
        .cluster(config)
        .register::<BenchGrain>()
        .start()
        .await
        .expect("the caller silo starts")
}

/// References to `n` grains activated on other silos than `silo` (keys tried in order).
async fn remote_grains(silo: &Silo, n: usize) -> Vec<BenchRef> {
    let client = silo.client();
    let mut grains = Vec::with_capacity(n);
    let mut key = 0_i64;
    while grains.len() < n {
        let grain = client.grain::<BenchGrain>(key);
        grain.ping(0).await.expect("activate");
        if !silo.is_active(&GrainId::new("bench", key)) {
            grains.push(grain);
        }
        key += 1;
    }
    grains
}

async fn wait_members(silo: &Silo, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while silo.members().len() < n {
        assert!(Instant::now() < deadline, "the cluster did not form");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The results of one P3+P4 repetition.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Calls {
    pub(crate) p50_ns: f64,
    pub(crate) p99_ns: f64,
    pub(crate) calls_per_sec: f64,
}

/// The `p` quantile (0 to 1) of `samples`, nearest rank; sorts them.
pub(crate) fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    let index = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples.get(index).copied().unwrap_or(f64::NAN)
}

/// Granary: sequential calls to one grain on another silo process, then 256 calls in flight
/// over `grains` grains there; this side and the silo process in `placement`, every silo with
/// the cluster timings of `profile` (`Production` under a profiler, which slows both sides),
/// over mutual TLS with `tls`'s certificates if given.
pub(crate) fn granary_calls(
    sequential: usize,
    grains: usize,
    total: usize,
    placement: CpuPlacement,
    profile: Profile,
    tls: Option<&BenchTls>,
) -> Calls {
    let _pinned = pin_client(placement);
    multi_thread(2).block_on(async {
        let cluster = format!("bench-{}", uuid::Uuid::now_v7().simple());
        let remote = start_silo_with(&cluster, "remote", profile, placement.server(), tls).await;
        let silo = local_silo_with(&cluster, profile, tls).await;
        wait_members(&silo, 2).await;
        let refs = remote_grains(&silo, grains).await;
        let one = &refs[0];
        let mut samples = Vec::with_capacity(sequential);
        for i in 0..sequential as u64 {
            let t = Instant::now();
            std::hint::black_box(one.ping(i).await.expect("ping"));
            samples.push(t.elapsed().as_nanos() as f64);
        }
        let p50_ns = percentile(&mut samples, 0.5);
        let p99_ns = percentile(&mut samples, 0.99);
        let refs = Arc::new(refs);
        let permits = Arc::new(Semaphore::new(256));
        let start = Instant::now();
        let mut tasks = Vec::with_capacity(total);
        for i in 0..total {
            let permit = permits.clone().acquire_owned().await.expect("permits");
            let refs = refs.clone();
            tasks.push(tokio::spawn(async move {
                let grain = &refs[i % refs.len()];
                std::hint::black_box(grain.ping(i as u64).await.expect("ping"));
                drop(permit);
            }));
        }
        for task in tasks {
            task.await.expect("caller");
        }
        let calls_per_sec = total as f64 / start.elapsed().as_secs_f64();
        silo.shutdown().await.expect("shutdown");
        remote.signal("-TERM");
        Calls {
            p50_ns,
            p99_ns,
            calls_per_sec,
        }
    })
}

/// tonic gRPC: the same numbers of sequential and in-flight unary calls to a tonic server
/// process, in `placement`.
pub(crate) fn tonic_calls(sequential: usize, total: usize, placement: CpuPlacement) -> Calls {
    let _pinned = pin_client(placement);
    multi_thread(2).block_on(async {
        let (server, addr) = start_server("tonic", placement.server()).await;
        let calls = crate::grpc::calls(addr, sequential, total).await;
        drop(server);
        calls
    })
}

/// Raw TCP: the same numbers of sequential and in-flight request/response frames of `size`
/// bytes to the echo process, in `placement`.
pub(crate) fn raw_calls(
    sequential: usize,
    total: usize,
    size: usize,
    placement: CpuPlacement,
) -> Calls {
    let _pinned = pin_client(placement);
    multi_thread(2).block_on(async {
        let (echo, addr) = start_server("echo", placement.server()).await;
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let mut framed = Framed::new(stream, LengthDelimitedCodec::new());
        let payload = Bytes::from(vec![7u8; size]);
        let mut samples = Vec::with_capacity(sequential);
        for _ in 0..sequential {
            let t = Instant::now();
            framed.send(payload.clone()).await.expect("send");
            framed.next().await.expect("reply").expect("frame");
            samples.push(t.elapsed().as_nanos() as f64);
        }
        let p50_ns = percentile(&mut samples, 0.5);
        let p99_ns = percentile(&mut samples, 0.99);
        let (mut sink, mut stream) = framed.split();
        let permits = Arc::new(Semaphore::new(256));
        let start = Instant::now();
        let reader = {
            let permits = permits.clone();
            tokio::spawn(async move {
                for _ in 0..total {
                    stream.next().await.expect("reply").expect("frame");
                    permits.add_permits(1);
                }
            })
        };
        for _ in 0..total {
            // Write what is queued only when about to wait for answers: as the transport's
            // writer does.
            let permit = match permits.try_acquire() {
                Ok(permit) => permit,
                Err(_) => {
                    sink.flush().await.expect("flush");
                    permits.acquire().await.expect("permits")
                }
            };
            permit.forget();
            sink.feed(payload.clone()).await.expect("send");
        }
        sink.flush().await.expect("flush");
        reader.await.expect("reader");
        let calls_per_sec = total as f64 / start.elapsed().as_secs_f64();
        drop(echo);
        Calls {
            p50_ns,
            p99_ns,
            calls_per_sec,
        }
    })
}

/// P9: a silo hosting `grains` grains goes away; the time until each of them answers again from
/// the survivors, p99, in ms. `crash`: SIGKILL (failure detection needed); otherwise SIGTERM (a
/// clean shutdown that hands over at once): the baseline. Every silo runs the cluster timings
/// of `profile`.
pub(crate) fn failover(grains: usize, crash: bool, profile: Profile) -> f64 {
    multi_thread(2).block_on(async {
        let cluster = format!("bench-{}", uuid::Uuid::now_v7().simple());
        let victim = start_silo_with(&cluster, "victim", profile, None, None).await;
        let survivor = start_silo_with(&cluster, "survivor", profile, None, None).await;
        let silo = local_silo_with(&cluster, profile, None).await;
        wait_members(&silo, 3).await;
        // Grains placed on the victim: its address answers for them in the directory.
        let store = RedisStore::connect(RedisConfig::new(redis_url(), &cluster))
            .await
            .expect("redis");
        let client = silo.client();
        let mut on_victim = Vec::with_capacity(grains);
        let mut key = 0_i64;
        while on_victim.len() < grains {
            let grain = client.grain::<BenchGrain>(key);
            grain.ping(0).await.expect("activate");
            let owner =
                granary::provider::GrainDirectory::lookup(&store, &GrainId::new("bench", key))
                    .await
                    .expect("lookup");
            if owner.is_some_and(|o| o.silo.name() == "victim") {
                on_victim.push(grain);
            }
            key += 1;
        }
        victim.signal(if crash { "-KILL" } else { "-TERM" });
        let start = Instant::now();
        let waits: Vec<_> = on_victim
            .into_iter()
            .map(|grain| {
                tokio::spawn(async move {
                    loop {
                        if grain.ping(1).await.is_ok() {
                            return start.elapsed().as_secs_f64() * 1_000.0;
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                })
            })
            .collect();
        let mut times = Vec::with_capacity(waits.len());
        for wait in waits {
            times.push(wait.await.expect("waiter"));
        }
        silo.shutdown().await.expect("shutdown");
        survivor.signal("-TERM");
        drop(victim);
        percentile(&mut times, 0.99)
    })
}

/// Medians of several [`Calls`].
pub(crate) fn medians(runs: &[Calls]) -> Calls {
    let pick = |f: fn(&Calls) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
    Calls {
        p50_ns: pick(|c| c.p50_ns),
        p99_ns: pick(|c| c.p99_ns),
        calls_per_sec: pick(|c| c.calls_per_sec),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_are_told_their_core() {
        assert_eq!(serve_args("echo", None), ["--serve", "echo"]);
        assert_eq!(
            serve_args("tonic", Some(1)),
            ["--serve", "tonic", "--cpu", "1"]
        );
    }

    #[test]
    fn percentile_is_the_nearest_rank() {
        let mut samples: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(percentile(&mut samples, 0.5), 51.0);
        assert_eq!(percentile(&mut samples, 0.99), 99.0);
        assert!(percentile(&mut [], 0.5).is_nan());
    }
}

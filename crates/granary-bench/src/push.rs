//! P13: a grain's push to the observers of many clients on one gateway: latency from the
//! grain's push to each client's object (p50, p99) and pushes delivered per second, against a
//! raw length-delimited TCP broadcast of the same messages from one process to as many
//! connections.
//!
//! Granary: one silo on a real Redis (the gateway), `clients` `ClusterClient`s connected to it,
//! each serving one observer subscribed to a broadcaster grain's `ObserverSet`; a round is one
//! `broadcast` call, which pushes to every subscriber with one-way calls, and ends when every
//! client's object has the message. The baseline: a TCP listener in the same process with
//! `clients` connections; a round writes the frame to every connection and ends when every
//! reader has it. Both stamp each message with the time it left (the grain's push; the raw
//! write loop), on one process clock, and record the arrival.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use granary::{
    ClientConfig, ClusterClient, ClusterConfig, GrainContext, ObserverSet, Result, Silo,
    SiloConfig, grain, observer,
};
use granary_redis::{RedisConfig, RedisMembership, RedisStore};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

use crate::engines::multi_thread;

const SECRET: &str = "granary-bench cluster secret, 32+ bytes";

/// The payload of one push: a small game update's size.
const PAYLOAD: usize = 64;

/// Nanoseconds since the first call, on the process's monotonic clock (pushes and arrivals
/// are stamped in one process).
fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    u64::try_from(EPOCH.get_or_init(Instant::now).elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// What a client's screen is pushed.
#[observer(name = "bench.push_watcher")]
pub(crate) trait PushWatcher {
    /// A message that left the grain at `sent_ns`.
    #[one_way]
    async fn on_push(&self, sent_ns: u64, payload: Vec<u8>) -> Result<()>;
}

/// The broadcaster's subscribers.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Subscribers {
    watchers: ObserverSet<PushWatcherRef>,
}

/// A grain that pushes each message to all its subscribers.
#[derive(Debug, Default)]
pub(crate) struct Broadcaster;

#[grain(name = "bench.broadcaster", state = Subscribers)]
impl Broadcaster {
    /// Subscribes `watcher` for an hour; how many subscribers there are.
    pub async fn subscribe(
        &self,
        ctx: &GrainContext<Self>,
        watcher: PushWatcherRef,
    ) -> Result<u64> {
        let now = ctx.now();
        let mut state = ctx.state();
        state
            .watchers
            .subscribe(watcher, now, Duration::from_secs(3600));
        Ok(state.watchers.len() as u64)
    }

    /// Pushes `payload` to every subscriber (one-way); how many took it.
    pub async fn broadcast(&self, ctx: &GrainContext<Self>, payload: Vec<u8>) -> Result<u64> {
        let now = ctx.now();
        let pushes = {
            let sent = now_ns();
            ctx.state().watchers.notify(now, move |w| {
                let payload = payload.clone();
                async move { w.on_push(sent, payload).await }
            })
        };
        Ok(pushes.await.delivered as u64)
    }
}

/// A client's observer: reports each arrival's latency.
struct Screen(mpsc::UnboundedSender<u64>);

impl PushWatcher for Screen {
    async fn on_push(&self, sent_ns: u64, _payload: Vec<u8>) -> Result<()> {
        let _ = self.0.send(now_ns().saturating_sub(sent_ns));
        Ok(())
    }
}

/// One side's run: push latencies (ns) and deliveries per second.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Run {
    pub(crate) p50_ns: f64,
    pub(crate) p99_ns: f64,
    pub(crate) pushes_per_sec: f64,
}

/// Percentiles of the latencies and the rate of `rounds × clients` deliveries in `elapsed`.
fn summarize(mut latencies: Vec<u64>, elapsed: Duration) -> Run {
    latencies.sort_unstable();
    let at = |q: f64| {
        let i = ((latencies.len() as f64 - 1.0) * q).round() as usize;
        latencies.get(i).copied().unwrap_or(0) as f64
    };
    Run {
        p50_ns: at(0.50),
        p99_ns: at(0.99),
        pushes_per_sec: latencies.len() as f64 / elapsed.as_secs_f64(),
    }
}

/// Waits for `n` latencies on `arrivals`.
async fn collect(arrivals: &mut mpsc::UnboundedReceiver<u64>, n: usize, into: &mut Vec<u64>) {
    for _ in 0..n {
        into.push(
            tokio::time::timeout(Duration::from_secs(60), arrivals.recv())
                .await
                .expect("every client gets the push within a minute")
                .expect("the clients live"),
        );
    }
}

/// Granary's side: `clients` cluster clients on one gateway silo, `rounds` broadcasts.
pub(crate) fn granary(clients: usize, rounds: usize) -> Run {
    multi_thread(2).block_on(async {
        let cluster = format!("bench-p13-{}", uuid::Uuid::now_v7().simple());
        let url = std::env::var("GRANARY_BENCH_REDIS")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
        let store = Arc::new(
            RedisStore::connect(RedisConfig::new(&url, &cluster))
                .await
                .expect("P13 needs a Redis (GRANARY_BENCH_REDIS)"),
        );
        let silo = Silo::builder()
            .config(SiloConfig {
                name: "gateway".into(),
                idle_timeout: Duration::from_secs(3600),
                ..SiloConfig::test_profile()
            })
            .storage(store.clone())
            .membership(Arc::new(RedisMembership::new(store)))
            .cluster(ClusterConfig::new(
                &cluster,
                SECRET,
                "127.0.0.1:0".parse().expect("addr"),
            ))
            .register::<Broadcaster>()
            .start()
            .await
            .expect("the gateway silo starts");
        let gateway = silo.address().expect("a cluster silo has an address");
        let (arrived, mut arrivals) = mpsc::unbounded_channel();
        let mut connected = Vec::with_capacity(clients);
        for _ in 0..clients {
            let mut config = ClientConfig::new(&cluster, SECRET.as_bytes(), vec![gateway]);
            config.discover = false;
            let client = ClusterClient::connect(config)
                .await
                .expect("a client connects");
            let screen = client.observe(PushWatcherRef::object(Screen(arrived.clone())));
            client
                .grain::<Broadcaster>("b")
                .subscribe(screen.reference())
                .await
                .expect("subscribes");
            connected.push((client, screen));
        }
        let broadcaster = silo.client().grain::<Broadcaster>("b");
        // One warm-up round.
        broadcaster.broadcast(vec![0; PAYLOAD]).await.expect("push");
        collect(&mut arrivals, clients, &mut Vec::new()).await;
        let mut latencies = Vec::with_capacity(clients * rounds);
        let start = Instant::now();
        for _ in 0..rounds {
            broadcaster.broadcast(vec![0; PAYLOAD]).await.expect("push");
            collect(&mut arrivals, clients, &mut latencies).await;
        }
        let run = summarize(latencies, start.elapsed());
        for (client, screen) in connected {
            drop(screen);
            client.close().await;
        }
        silo.shutdown().await.expect("the silo shuts down");
        delete_keys(&url, &cluster).await;
        run
    })
}

/// Deletes the keys the run's cluster left in Redis (membership, the broadcaster's claim).
async fn delete_keys(url: &str, cluster: &str) {
    let mut conn = redis::Client::open(url)
        .expect("a Redis URL")
        .get_multiplexed_async_connection()
        .await
        .expect("Redis answers");
    let patterns = [
        format!("granary:{cluster}:*"),
        format!("granary:{{{cluster}:*"),
    ];
    let keys = crate::storage::scan(&mut conn, &patterns).await;
    if !keys.is_empty() {
        let () = redis::cmd("UNLINK")
            .arg(keys)
            .query_async(&mut conn)
            .await
            .expect("UNLINK");
    }
}

/// The baseline: the same messages written by one process to `clients` TCP connections.
pub(crate) fn raw(clients: usize, rounds: usize) -> Run {
    multi_thread(2).block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("listens");
        let addr = listener.local_addr().expect("an address");
        let (arrived, mut arrivals) = mpsc::unbounded_channel();
        let mut writers = Vec::with_capacity(clients);
        for _ in 0..clients {
            let (stream, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
            let stream = stream.expect("connects");
            stream.set_nodelay(true).expect("nodelay");
            let (server, _) = accepted.expect("accepts");
            server.set_nodelay(true).expect("nodelay");
            let arrived = arrived.clone();
            tokio::spawn(async move {
                let mut frames = FramedRead::new(stream, LengthDelimitedCodec::new());
                while let Some(Ok(frame)) = frames.next().await {
                    let sent = u64::from_le_bytes(frame[..8].try_into().expect("8 bytes"));
                    let _ = arrived.send(now_ns().saturating_sub(sent));
                }
            });
            writers.push(FramedWrite::new(server, LengthDelimitedCodec::new()));
        }
        broadcast_raw(&mut writers).await;
        collect(&mut arrivals, clients, &mut Vec::new()).await;
        let mut latencies = Vec::with_capacity(clients * rounds);
        let start = Instant::now();
        for _ in 0..rounds {
            broadcast_raw(&mut writers).await;
            collect(&mut arrivals, clients, &mut latencies).await;
        }
        summarize(latencies, start.elapsed())
    })
}

/// Writes one frame, stamped now, to every connection.
async fn broadcast_raw(writers: &mut [FramedWrite<TcpStream, LengthDelimitedCodec>]) {
    let mut frame = now_ns().to_le_bytes().to_vec();
    frame.extend_from_slice(&[0; PAYLOAD]);
    let frame = Bytes::from(frame);
    let sends = writers.iter_mut().map(|w| w.send(frame.clone()));
    for sent in futures::future::join_all(sends).await {
        sent.expect("writes");
    }
}

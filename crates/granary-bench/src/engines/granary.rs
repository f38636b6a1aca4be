//! The candidate: Granary grains on a silo with in-memory providers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use granary::{
    CallFilter, FilterCall, GrainContext, Refusal, Result, Silo, SiloBuilder, SiloConfig, grain,
};
use tokio::sync::Notify;

use super::{Target, current_thread, drive_callers, drive_own, multi_thread, p50_of};

static TICKS: AtomicU64 = AtomicU64::new(0);
static TICK_TARGET: AtomicU64 = AtomicU64::new(u64::MAX);
static TICKS_DONE: Notify = Notify::const_new();

/// The benchmark grain: a ping that answers and a one-way tick that counts.
#[derive(Debug, Default)]
pub(crate) struct BenchGrain;

#[grain(name = "bench", state = ())]
impl BenchGrain {
    /// Answers `x + 1`.
    pub async fn ping(&self, _ctx: &GrainContext<Self>, x: u64) -> Result<u64> {
        Ok(x + 1)
    }

    /// Counts one tick.
    #[one_way]
    pub async fn tick(&self, _ctx: &GrainContext<Self>, _x: u64) -> Result<()> {
        if TICKS.fetch_add(1, Ordering::Relaxed) + 1 == TICK_TARGET.load(Ordering::Relaxed) {
            TICKS_DONE.notify_one();
        }
        Ok(())
    }
}

/// P12's stateless worker: the same ping as [`BenchGrain`], with one activation per core of
/// each key (the default maximum).
#[derive(Debug, Default)]
pub(crate) struct StatelessBenchGrain;

#[grain(name = "bench.stateless", stateless_worker)]
impl StatelessBenchGrain {
    /// Answers `x + 1`.
    pub async fn ping(&self, _ctx: &GrainContext<Self>, x: u64) -> Result<u64> {
        Ok(x + 1)
    }
}

impl Target for StatelessBenchRef {
    async fn call(&self, x: u64) -> u64 {
        self.ping(x).await.expect("ping")
    }
}

/// A silo with the default settings, except room for the 1,000,000 grains (and the warm-up
/// grain) of P1b-1M and P8-1M.
async fn silo() -> Silo {
    builder().start().await.expect("silo starts")
}

fn builder() -> SiloBuilder {
    Silo::builder()
        .config(SiloConfig {
            max_activations: 2_000_000,
            ..SiloConfig::default()
        })
        .register::<BenchGrain>()
        .register::<StatelessBenchGrain>()
}

/// The incoming filter of `P1a-filter`: lets every call through, written as a user would
/// write one (an `async fn` that looks at the call).
struct NoOpFilter;

impl CallFilter for NoOpFilter {
    async fn before(&self, call: &mut FilterCall<'_>) -> std::result::Result<(), Refusal> {
        std::hint::black_box(call.kind());
        Ok(())
    }
}

pub(crate) fn p1a(calls: usize) -> f64 {
    p1a_on(calls, builder())
}

/// P1a on a silo with one no-op incoming filter.
pub(crate) fn p1a_filtered(calls: usize) -> f64 {
    p1a_on(calls, builder().incoming_filter(NoOpFilter))
}

fn p1a_on(calls: usize, builder: SiloBuilder) -> f64 {
    current_thread().block_on(async {
        let silo = builder.start().await.expect("silo starts");
        let grain = silo.client().grain::<BenchGrain>(1_i64);
        let p50 = p50_of(calls, |i| {
            let grain = &grain;
            async move { grain.ping(i).await.expect("ping") }
        })
        .await;
        silo.shutdown().await.expect("clean shutdown");
        p50
    })
}

impl Target for BenchRef {
    async fn call(&self, x: u64) -> u64 {
        self.ping(x).await.expect("ping")
    }
}

pub(crate) fn p1b(actors: usize, callers: usize, per_caller: usize) -> f64 {
    multi_thread(2).block_on(async {
        let silo = silo().await;
        let client = silo.client();
        let refs: Vec<BenchRef> = (0..actors as i64)
            .map(|k| client.grain::<BenchGrain>(k))
            .collect();
        for r in &refs {
            r.ping(0).await.expect("activate");
        }
        let rate = drive_callers(refs, callers, per_caller).await;
        silo.shutdown().await.expect("clean shutdown");
        rate
    })
}

/// P12's candidate: `callers` callers on 2 worker threads, each making `per_caller`
/// sequential calls to one and the same stateless worker key; calls/s.
pub(crate) fn p12_stateless(callers: usize, per_caller: usize) -> f64 {
    multi_thread(2).block_on(async {
        let silo = silo().await;
        let worker = silo.client().grain::<StatelessBenchGrain>(1_i64);
        worker.ping(0).await.expect("activate");
        let refs = vec![worker; callers];
        let rate = drive_own(refs, per_caller).await;
        silo.shutdown().await.expect("clean shutdown");
        rate
    })
}

/// P12's baseline: the same callers, each calling a grain of its own (`callers` distinct
/// ordinary grains, so no caller ever waits behind another); calls/s.
pub(crate) fn p12_grains(callers: usize, per_caller: usize) -> f64 {
    multi_thread(2).block_on(async {
        let silo = silo().await;
        let client = silo.client();
        let refs: Vec<BenchRef> = (0..callers as i64)
            .map(|k| client.grain::<BenchGrain>(k))
            .collect();
        for r in &refs {
            r.ping(0).await.expect("activate");
        }
        let rate = drive_own(refs, per_caller).await;
        silo.shutdown().await.expect("clean shutdown");
        rate
    })
}

pub(crate) fn p2(messages: usize) -> f64 {
    current_thread().block_on(async {
        let silo = silo().await;
        let grain = silo.client().grain::<BenchGrain>(1_i64);
        grain.ping(0).await.expect("activate");
        TICKS.store(0, Ordering::Relaxed);
        TICK_TARGET.store(messages as u64, Ordering::Relaxed);
        let done = TICKS_DONE.notified();
        tokio::pin!(done);
        done.as_mut().enable();
        let start = Instant::now();
        for i in 0..messages as u64 {
            grain.tick(i).await.expect("send");
            if i % 1024 == 0 {
                tokio::task::yield_now().await;
            }
        }
        done.await;
        let rate = messages as f64 / start.elapsed().as_secs_f64();
        silo.shutdown().await.expect("clean shutdown");
        rate
    })
}

pub(crate) fn p8(actors: usize) -> f64 {
    current_thread().block_on(async {
        let silo = silo().await;
        let client = silo.client();
        client
            .grain::<BenchGrain>(-1_i64)
            .ping(0)
            .await
            .expect("warm");
        let before = crate::alloc::live();
        for k in 0..actors as i64 {
            client
                .grain::<BenchGrain>(k)
                .ping(0)
                .await
                .expect("activate");
        }
        tokio::task::yield_now().await;
        let after = crate::alloc::live();
        assert_eq!(silo.activation_count(), actors + 1);
        // The figure is taken; a shutdown that does not finish within the silo's timeout (seen
        // with 1,000,000 activations on a current-thread runtime) is reported, not fatal.
        if let Err(e) = silo.shutdown().await {
            eprintln!("# P8 with {actors} activations: the silo did not shut down cleanly: {e:?}");
        }
        (after - before) as f64 / actors as f64
    })
}

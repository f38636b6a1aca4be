//! Test grains that expose what the runtime does: how many activations, how many turns at once,
//! which calls reached them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use granary::{CallError, GrainContext, Result, grain};
use granary_testkit::TestSilo;
use serde::{Deserialize, Serialize};

/// Counters shared by every activation of the probe grains in one test.
#[derive(Debug, Default)]
pub struct Counters {
    pub activations: AtomicU32,
    pub deactivations: AtomicU32,
    pub in_turn: AtomicU32,
    pub max_in_turn: AtomicU32,
    pub ticks: AtomicU32,
    pub ticks_running: AtomicU32,
    pub max_ticks_running: AtomicU32,
    pub tick_done: tokio::sync::Notify,
}

impl Counters {
    fn enter(&self) {
        let now = self.in_turn.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_turn.fetch_max(now, Ordering::SeqCst);
    }
    fn leave(&self) {
        self.in_turn.fetch_sub(1, Ordering::SeqCst);
    }
    pub fn get(counter: &AtomicU32) -> u32 {
        counter.load(Ordering::SeqCst)
    }
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct ProbeState {
    pub count: u32,
    pub saved_on_deactivate: u32,
    /// A reference kept in state: it must come back bound after a reload.
    #[serde(default)]
    pub friend: Option<ProbeRef>,
}

/// A grain that counts, sleeps, panics and calls others on request.
#[derive(Debug)]
pub struct ProbeGrain {
    pub counters: Arc<Counters>,
    pub deactivate_delay: Duration,
}

#[grain(name = "probe", state = ProbeState)]
impl ProbeGrain {
    /// Reads the count, waits `delay_ms` (a real await inside the turn), writes count + 1.
    pub async fn slow_increment(&self, ctx: &GrainContext<Self>, delay_ms: u64) -> Result<u32> {
        self.counters.enter();
        let before = ctx.state().count;
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        ctx.state().count = before + 1;
        let written = ctx.write_state().await;
        self.counters.leave();
        written.map(|()| before + 1)
    }

    /// Waits `delay_ms` inside a read-only turn.
    #[read_only]
    pub async fn slow_read(&self, ctx: &GrainContext<Self>, delay_ms: u64) -> Result<u32> {
        self.counters.enter();
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        self.counters.leave();
        Ok(ctx.state().count)
    }

    /// The current count.
    #[read_only]
    pub async fn count(&self, ctx: &GrainContext<Self>) -> Result<u32> {
        Ok(ctx.state().count)
    }

    /// What `on_deactivate` saved.
    #[read_only]
    pub async fn saved(&self, ctx: &GrainContext<Self>) -> Result<u32> {
        Ok(ctx.state().saved_on_deactivate)
    }

    /// Panics inside the turn, after changing the in-memory state.
    pub async fn explode(&self, ctx: &GrainContext<Self>) -> Result<()> {
        ctx.state().count += 1000;
        panic!("boom in {}", ctx.id());
    }

    /// Asks for deactivation.
    pub async fn retire(&self, ctx: &GrainContext<Self>) -> Result<()> {
        ctx.deactivate_on_idle();
        Ok(())
    }

    /// Calls `count` on probe `other` and returns it.
    pub async fn ask(&self, ctx: &GrainContext<Self>, other: String) -> Result<u32> {
        ctx.grain::<ProbeGrain>(other).count().await
    }

    /// Calls `ask(me)` on probe `other`: `other` then calls back into this grain on the same
    /// chain (A → B → A).
    pub async fn bounce(&self, ctx: &GrainContext<Self>, other: String) -> Result<u32> {
        ctx.grain::<ProbeGrain>(other)
            .ask(ctx.key().to_string())
            .await
    }

    /// Arms a periodic timer whose turns take `work_ms`.
    pub async fn start_ticking(&self, ctx: &GrainContext<Self>, period_ms: u64) -> Result<()> {
        ctx.set_timer(
            "tick",
            Duration::from_millis(period_ms),
            Some(Duration::from_millis(period_ms)),
        );
        Ok(())
    }

    /// Writes `count` unconditionally (a plain write).
    pub async fn set(&self, ctx: &GrainContext<Self>, value: u32) -> Result<()> {
        ctx.state().count = value;
        ctx.write_state().await
    }

    /// Keeps a reference to probe `other` in the state.
    pub async fn befriend(&self, ctx: &GrainContext<Self>, other: String) -> Result<()> {
        ctx.state().friend = Some(ctx.grain::<ProbeGrain>(other));
        ctx.write_state().await
    }

    /// Asks the friend kept in state for its count.
    pub async fn ask_friend(&self, ctx: &GrainContext<Self>) -> Result<u32> {
        let friend = ctx.state().friend.clone();
        match friend {
            Some(friend) => friend.count().await,
            None => Err(CallError::rejected(ctx.id(), "no friend")),
        }
    }

    /// Changes `count` in memory, then fails without saving it.
    pub async fn set_then_fail(&self, ctx: &GrainContext<Self>, value: u32) -> Result<()> {
        ctx.state().count = value;
        Err(CallError::rejected(ctx.id(), "changed my mind"))
    }

    /// Rejects, to check application errors travel.
    pub async fn refuse(&self, ctx: &GrainContext<Self>) -> Result<()> {
        Err(CallError::rejected(ctx.id(), "not today"))
    }

    #[on_activate]
    async fn activated(&self, _ctx: &GrainContext<Self>) -> Result<()> {
        self.counters.activations.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    #[on_deactivate]
    async fn deactivating(&self, ctx: &GrainContext<Self>) -> Result<()> {
        tokio::time::sleep(self.deactivate_delay).await;
        self.counters.deactivations.fetch_add(1, Ordering::SeqCst);
        {
            let mut s = ctx.state();
            s.saved_on_deactivate += 1;
        }
        ctx.write_state().await
    }

    #[on_timer]
    async fn tick(&self, _ctx: &GrainContext<Self>, _name: &str) -> Result<()> {
        let c = &self.counters;
        let running = c.ticks_running.fetch_add(1, Ordering::SeqCst) + 1;
        c.max_ticks_running.fetch_max(running, Ordering::SeqCst);
        // Work longer than the period: a timer that overlapped itself would show it here.
        tokio::time::sleep(Duration::from_millis(30)).await;
        c.ticks.fetch_add(1, Ordering::SeqCst);
        c.ticks_running.fetch_sub(1, Ordering::SeqCst);
        c.tick_done.notify_waiters();
        Ok(())
    }
}

/// The same calls, on a grain that allows call-chain reentrancy.
#[derive(Debug, Default)]
pub struct EchoGrain;

#[grain(name = "echo", state = ProbeState, reentrant)]
impl EchoGrain {
    /// The count.
    pub async fn count(&self, ctx: &GrainContext<Self>) -> Result<u32> {
        Ok(ctx.state().count)
    }

    /// Calls `ask(me)` on echo `other`, which calls back into this grain (A → B → A).
    pub async fn bounce(&self, ctx: &GrainContext<Self>, other: String) -> Result<u32> {
        ctx.state().count = 7;
        ctx.grain::<EchoGrain>(other)
            .ask(ctx.key().to_string())
            .await
    }

    /// Calls `count` on echo `other`.
    pub async fn ask(&self, ctx: &GrainContext<Self>, other: String) -> Result<u32> {
        ctx.grain::<EchoGrain>(other).count().await
    }
}

/// A grain whose activation always fails.
#[derive(Debug, Default)]
pub struct BrokenGrain;

#[grain(name = "broken", state = ProbeState)]
impl BrokenGrain {
    /// Never runs.
    pub async fn hello(&self, _ctx: &GrainContext<Self>) -> Result<()> {
        Ok(())
    }

    #[on_activate]
    async fn activated(&self, _ctx: &GrainContext<Self>) -> Result<()> {
        Err(CallError::Rejected {
            grain: granary::GrainId::new("broken", "x"),
            reason: "no database".into(),
        })
    }
}

/// A silo with the probe grains, sharing `counters`.
/// Idle collection is pushed out of the way (10 min) so that counts of activations are exact.
pub async fn silo(counters: &Arc<Counters>) -> TestSilo {
    silo_with(counters, Duration::ZERO, |c| granary::SiloConfig {
        idle_timeout: Duration::from_secs(600),
        ..c
    })
    .await
}

/// A silo with the probe grains, a deactivation delay and a config tweak.
pub async fn silo_with(
    counters: &Arc<Counters>,
    deactivate_delay: Duration,
    tweak: impl FnOnce(granary::SiloConfig) -> granary::SiloConfig,
) -> TestSilo {
    let counters = counters.clone();
    TestSilo::start_with(tweak(granary::SiloConfig::test_profile()), move |b| {
        b.register_with::<ProbeGrain>(move |_| ProbeGrain {
            counters: counters.clone(),
            deactivate_delay,
        })
        .register::<EchoGrain>()
        .register::<BrokenGrain>()
    })
    .await
    .expect("silo starts")
}

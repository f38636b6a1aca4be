//! Collection per grain type: `#[grain(idle_after = "...")]` and `SiloBuilder::idle_after`
//! override the silo's idle timeout; "never" keeps a grain until it is deactivated on request
//! or the silo stops.
//!
//! These tests run on tokio's paused clock: the silo is alone on the memory store (no socket is
//! awaited), so the runtime jumps from one collection pass to the next and every pass runs, in
//! order, before time moves on. Nothing races the collector.

use std::time::Duration;

use granary::{
    DeactivationReason, GrainContext, GrainId, IdleAfter, Result, SiloConfig, SiloEvent,
    StartError, grain,
};
use granary_testkit::TestSilo;
use tokio::time::Instant;

/// Collected after one second without calls.
#[derive(Default)]
pub struct QuickGrain;

#[grain(name = "collect-quick", state = (), idle_after = "1s")]
impl QuickGrain {
    pub async fn ping(&self, ctx: &GrainContext<Self>) -> Result<()> {
        let _ = ctx;
        Ok(())
    }
}

/// Collected after the silo's idle timeout.
#[derive(Default)]
pub struct PlainGrain;

#[grain(name = "collect-plain", state = ())]
impl PlainGrain {
    pub async fn ping(&self, ctx: &GrainContext<Self>) -> Result<()> {
        let _ = ctx;
        Ok(())
    }
}

/// Never collected for being idle.
#[derive(Default)]
pub struct KeptGrain;

#[grain(name = "collect-kept", state = (), idle_after = "never")]
impl KeptGrain {
    pub async fn ping(&self, ctx: &GrainContext<Self>) -> Result<()> {
        let _ = ctx;
        Ok(())
    }
}

const HOUR: Duration = Duration::from_secs(3600);

/// A silo with a one-hour idle timeout and one-second passes, hosting the three types.
fn config() -> SiloConfig {
    SiloConfig {
        idle_timeout: HOUR,
        collection_quantum: Duration::from_secs(1),
        call_timeout: Duration::from_secs(60),
        ..SiloConfig::test_profile()
    }
}

fn idle(grain: &GrainId) -> impl FnMut(&SiloEvent) -> bool + '_ {
    move |e| matches!(e, SiloEvent::Deactivated(g, DeactivationReason::Idle) if g == grain)
}

#[tokio::test(start_paused = true)]
async fn each_type_is_collected_after_its_own_idle_time() {
    let silo = TestSilo::start_with(config(), |b| {
        b.register::<QuickGrain>()
            .register::<PlainGrain>()
            .register::<KeptGrain>()
    })
    .await
    .unwrap();
    let mut events = silo.events().with_deadline(3 * HOUR);
    let client = silo.client();
    let (quick, plain, kept) = (
        client.grain::<QuickGrain>("q"),
        client.grain::<PlainGrain>("p"),
        client.grain::<KeptGrain>("k"),
    );
    let start = Instant::now();
    quick.ping().await.unwrap();
    plain.ping().await.unwrap();
    kept.ping().await.unwrap();

    events.wait_for(idle(quick.id())).await.unwrap();
    let quick_after = start.elapsed();
    assert!(quick_after >= Duration::from_secs(1), "{quick_after:?}");
    assert!(
        silo.silo().is_active(plain.id()),
        "the silo default (1 h) still holds the plain grain"
    );
    assert!(silo.silo().is_active(kept.id()));

    events.wait_for(idle(plain.id())).await.unwrap();
    let plain_after = start.elapsed();
    assert!(
        plain_after >= HOUR,
        "collected after the silo's idle timeout, not the quick type's: {plain_after:?}"
    );
    assert!(silo.silo().is_active(kept.id()));

    // Six hours of collection passes on the paused clock: every pass runs, none collects it.
    tokio::time::sleep(6 * HOUR).await;
    assert!(silo.silo().is_active(kept.id()), "never means never");
    assert_eq!(silo.silo().activation_count(), 1);

    // On request it goes (and comes back on the next call).
    assert!(silo.deactivate(kept.id()).await.unwrap());
    assert!(!silo.silo().is_active(kept.id()));
    kept.ping().await.unwrap();
    assert!(silo.silo().is_active(kept.id()));

    // The silo's shutdown deactivates it too.
    let mut events = silo.events();
    silo.shutdown().await.unwrap();
    events
        .wait_for(|e| {
            matches!(e, SiloEvent::Deactivated(g, DeactivationReason::Shutdown) if g == kept.id())
        })
        .await
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_builder_overrides_the_type_and_the_silo_default() {
    let silo = TestSilo::start_with(config(), |b| {
        b.idle_after::<KeptGrain>(Duration::from_secs(5))
            .idle_after::<QuickGrain>(IdleAfter::Never)
            .register::<QuickGrain>()
            .register::<KeptGrain>()
            .register::<PlainGrain>()
            .idle_after::<PlainGrain>(Duration::from_secs(2))
    })
    .await
    .unwrap();
    let mut events = silo.events().with_deadline(3 * HOUR);
    let client = silo.client();
    let (quick, plain, kept) = (
        client.grain::<QuickGrain>("q"),
        client.grain::<PlainGrain>("p"),
        client.grain::<KeptGrain>("k"),
    );
    quick.ping().await.unwrap();
    plain.ping().await.unwrap();
    kept.ping().await.unwrap();
    events.wait_for(idle(plain.id())).await.unwrap();
    assert!(
        silo.silo().is_active(kept.id()),
        "5 s from the builder, not 2"
    );
    events.wait_for(idle(kept.id())).await.unwrap();
    tokio::time::sleep(2 * HOUR).await;
    assert!(
        silo.silo().is_active(quick.id()),
        "the builder's Never beats the type's 1 s and the silo's hour"
    );
    silo.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_idle_times_are_refused_at_start() {
    let err = TestSilo::start(|b| b.idle_after::<QuickGrain>(Duration::from_secs(1)))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StartError::IdleAfterUnregistered("collect-quick")),
        "{err}"
    );
    let err = TestSilo::start(|b| {
        b.register::<QuickGrain>()
            .idle_after::<QuickGrain>(Duration::ZERO)
    })
    .await
    .unwrap_err();
    assert!(
        matches!(err, StartError::ZeroIdleAfter("collect-quick")),
        "{err}"
    );
}

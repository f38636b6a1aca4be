//! P14: event → subscribed grain delivery latency. A silo on Redis (state and outbox) runs the
//! relay of its shards with P7's settings (`RelayConfig::default()`) and its subscriptions: a
//! source grain commits one event every 2 ms, and a board grain subscribed to it applies each
//! once (its `AppliedEvents` and count committed to Redis) and records how long after the
//! commit it got the event (`now − timestamp_ms`, as P7-delivery reads its stream). The
//! baseline is P7-delivery: the same cadence, commit to the Redis stream.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use granary::{
    AppliedEvents, Delivery, Event, GrainContext, GrainKey, Result, Silo, Subscription, grain,
};
use granary_events::Relay;
use granary_redis::{RedisConfig, RedisStore};
use serde::{Deserialize, Serialize};

use crate::engines::multi_thread;
use crate::events::{name, now_ms, redis_url};

/// The lag of each event the board applied, in ms.
static LAGS: Mutex<Vec<f64>> = Mutex::new(Vec::new());

/// The event of the run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Scored {
    n: u64,
}

impl Event for Scored {
    const TYPE_NAME: &'static str = "bench.scored";
}

/// Publishes one [`Scored`] per call (committed with the turn).
#[derive(Debug, Default)]
pub(crate) struct ScorerGrain;

#[grain(name = "bench.scorer", state = ())]
impl ScorerGrain {
    /// Publishes event `n`.
    pub async fn score(&self, ctx: &GrainContext<Self>, n: u64) -> Result<()> {
        ctx.publish(&Scored { n })
    }
}

/// The subscribed grain's state: its dedupe and its count, committed together.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Tally {
    applied: AppliedEvents,
    count: u64,
}

/// Applies each [`Scored`] once and records its lag.
#[derive(Debug, Default)]
pub(crate) struct BoardGrain;

#[grain(name = "bench.board", state = Tally)]
impl BoardGrain {
    /// Counts the event once, commits, then records its commit-to-applied lag.
    pub async fn take(
        &self,
        ctx: &GrainContext<Self>,
        _scored: Scored,
        at: Delivery,
    ) -> Result<()> {
        let first = {
            let mut state = ctx.state();
            let first = state.applied.first_time(&at);
            state.count += u64::from(first);
            first
        };
        ctx.write_state().await?;
        if first {
            let lag = now_ms().saturating_sub(at.timestamp_ms) as f64;
            LAGS.lock().expect("not poisoned").push(lag);
        }
        Ok(())
    }
}

/// The p99 delivery lag (ms) of `events` events committed every 2 ms.
pub(crate) fn p14(events: usize) -> f64 {
    LAGS.lock().expect("not poisoned").clear();
    multi_thread(2).block_on(async {
        let cluster = name();
        let store = Arc::new(
            RedisStore::connect(RedisConfig::new(redis_url(), &cluster))
                .await
                .expect("P14 needs Redis (GRANARY_BENCH_REDIS)"),
        );
        let silo = Silo::builder()
            .storage(store.clone())
            .register::<ScorerGrain>()
            .register::<BoardGrain>()
            .subscribe(Subscription::<Scored, BoardGrain>::new(
                |_| Ok(GrainKey::from("board")),
                |board, scored, at| async move { board.take(scored, at).await },
            ))
            .start()
            .await
            .expect("the silo starts");
        let relay = silo
            .deliver_subscriptions(Relay::builder(store.clone()).owner(silo.shard_owner()))
            .start();
        let scorer = silo.client().grain::<ScorerGrain>(1);
        for n in 0..events as u64 {
            scorer.score(n).await.expect("the event commits");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while LAGS.lock().expect("not poisoned").len() < events {
            assert!(
                Instant::now() < deadline,
                "P14: the board applied only some of the events"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        relay.stop().await;
        silo.shutdown().await.expect("the silo stops");
        granary_testkit::redis_server::remove_cluster_keys(&redis_url(), &cluster)
            .await
            .expect("the run's keys are removed");
    });
    let mut lags = std::mem::take(&mut *LAGS.lock().expect("not poisoned"));
    lags.sort_by(f64::total_cmp);
    lags[(lags.len() * 99 / 100).min(lags.len() - 1)]
}

//! What the cluster tests share with the `test-silo` process they start: the grain types.

use std::time::Duration;

use granary::{CallError, Event, GrainContext, ObserverSet, Result, grain, observer};
use serde::{Deserialize, Serialize};

/// The persisted count of a [`CounterGrain`].
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Tally {
    count: u64,
}

/// A count announced by [`CounterGrain::bump_and_announce`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Bumped {
    /// The count after the bump.
    pub count: u64,
}

impl Event for Bumped {
    const TYPE_NAME: &'static str = "cluster.counter.bumped";
}

/// A grain that counts (persisted), says which activation it is, and calls others.
#[derive(Debug, Default)]
pub struct CounterGrain;

#[grain(name = "cluster.counter", state = Tally)]
impl CounterGrain {
    /// Adds one and commits; returns the count and this activation's id.
    pub async fn bump(&self, ctx: &GrainContext<Self>) -> Result<(u64, String)> {
        let count = {
            let mut state = ctx.state();
            state.count += 1;
            state.count
        };
        ctx.write_state().await?;
        Ok((count, ctx.activation_id().to_string()))
    }

    /// The count.
    #[read_only]
    pub async fn get(&self, ctx: &GrainContext<Self>) -> Result<u64> {
        Ok(ctx.state().count)
    }

    /// This activation's id.
    #[read_only]
    pub async fn whoami(&self, ctx: &GrainContext<Self>) -> Result<String> {
        Ok(ctx.activation_id().to_string())
    }

    /// The trace of this call and of a call this turn makes to grain `other`.
    pub async fn traces(&self, ctx: &GrainContext<Self>, other: i64) -> Result<(String, String)> {
        let theirs = ctx.grain::<CounterGrain>(other).trace().await?;
        Ok((ctx.trace_id().to_string(), theirs))
    }

    /// The trace of this call.
    #[read_only]
    pub async fn trace(&self, ctx: &GrainContext<Self>) -> Result<String> {
        Ok(ctx.trace_id().to_string())
    }

    /// Adds one and commits it with a [`Bumped`] event; returns the count.
    pub async fn bump_and_announce(&self, ctx: &GrainContext<Self>) -> Result<u64> {
        let count = {
            let mut state = ctx.state();
            state.count += 1;
            state.count
        };
        ctx.publish(&Bumped { count })?;
        ctx.write_state().await?;
        Ok(count)
    }

    /// Bumps grain `other` (wherever it lives) and returns its answer.
    pub async fn bump_other(&self, ctx: &GrainContext<Self>, other: i64) -> Result<(u64, String)> {
        ctx.grain::<CounterGrain>(other).bump().await
    }
}

/// How a [`GuildGrain`] refuses a member: its own error type, delivered typed to the caller
/// wherever the guild lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GuildError {
    /// The guild has its `limit` members.
    Full {
        /// The most members a guild has.
        limit: usize,
    },
    /// The player is a member already.
    AlreadyMember(String),
    /// The call itself failed (timeout, storage, …).
    Call(granary::CallError),
}

impl From<granary::CallError> for GuildError {
    fn from(err: granary::CallError) -> Self {
        Self::Call(err)
    }
}

/// The members of a [`GuildGrain`].
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Members {
    names: Vec<String>,
}

/// A guild of at most [`GUILD_LIMIT`] members whose methods fail with a [`GuildError`].
#[derive(Debug, Default)]
pub struct GuildGrain;

/// The most members a [`GuildGrain`] takes.
pub const GUILD_LIMIT: usize = 2;

#[grain(name = "cluster.guild", state = Members)]
impl GuildGrain {
    /// Adds `player`; returns the member count.
    pub async fn join(
        &self,
        ctx: &GrainContext<Self>,
        player: String,
    ) -> std::result::Result<usize, GuildError> {
        let count = {
            let mut members = ctx.state();
            if members.names.contains(&player) {
                return Err(GuildError::AlreadyMember(player));
            }
            if members.names.len() >= GUILD_LIMIT {
                return Err(GuildError::Full { limit: GUILD_LIMIT });
            }
            members.names.push(player);
            members.names.len()
        };
        ctx.write_state().await?; // a CallError becomes GuildError::Call
        Ok(count)
    }

    /// Has guild `other` (wherever it lives) take `player`, passing its error on as it is.
    pub async fn join_other(
        &self,
        ctx: &GrainContext<Self>,
        other: i64,
        player: String,
    ) -> std::result::Result<usize, GuildError> {
        let count = ctx.grain::<GuildGrain>(other).join(player).await?;
        Ok(count)
    }
}

/// One delivered reminder tick, as [`ReminderGrain`] records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tick {
    /// The reminder's name.
    pub name: String,
    /// When the tick was due (ms since the Unix epoch).
    pub due_ms: u64,
    /// When it was delivered (ms since the Unix epoch).
    pub fired_at_ms: u64,
    /// The periods missed before it.
    pub missed: u64,
}

/// The persisted ticks of a [`ReminderGrain`].
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Ticks {
    ticks: Vec<Tick>,
}

/// A grain with durable reminders: it records every tick in its state (committed with the
/// tick's advance).
#[derive(Debug, Default)]
pub struct ReminderGrain;

#[grain(name = "cluster.reminded", state = Ticks)]
impl ReminderGrain {
    /// Registers reminder `name`, first due in `first_ms`, every `period_ms`.
    pub async fn register(
        &self,
        ctx: &GrainContext<Self>,
        name: String,
        first_ms: u64,
        period_ms: u64,
    ) -> Result<()> {
        ctx.register_reminder(
            &name,
            std::time::Duration::from_millis(first_ms),
            std::time::Duration::from_millis(period_ms),
        )
        .await
    }

    /// Unregisters reminder `name`.
    pub async fn unregister(&self, ctx: &GrainContext<Self>, name: String) -> Result<()> {
        ctx.unregister_reminder(&name).await
    }

    /// Unregisters reminder `name`, then fails: the removal must not happen.
    pub async fn unregister_then_fail(&self, ctx: &GrainContext<Self>, name: String) -> Result<()> {
        ctx.unregister_reminder(&name).await?;
        Err(granary::CallError::rejected(ctx.id(), "changed my mind"))
    }

    /// The names of the grain's reminders.
    pub async fn reminder_names(&self, ctx: &GrainContext<Self>) -> Result<Vec<String>> {
        Ok(ctx.reminders().await?.into_iter().map(|r| r.name).collect())
    }

    /// The committed next due time of reminder `name` (ms since the Unix epoch).
    pub async fn next_due(&self, ctx: &GrainContext<Self>, name: String) -> Result<Option<u64>> {
        Ok(ctx
            .reminders()
            .await?
            .into_iter()
            .find(|r| r.name == name)
            .map(|r| r.next_due_ms))
    }

    /// Asks to be deactivated once this turn is done.
    pub async fn rest(&self, ctx: &GrainContext<Self>) -> Result<()> {
        ctx.deactivate_on_idle();
        Ok(())
    }

    /// Every tick delivered so far.
    #[read_only]
    pub async fn ticks(&self, ctx: &GrainContext<Self>) -> Result<Vec<Tick>> {
        Ok(ctx.state().ticks.clone())
    }

    #[on_reminder]
    async fn remind(
        &self,
        ctx: &GrainContext<Self>,
        name: &str,
        tick: granary::ReminderTick,
    ) -> Result<()> {
        let ms = |t: std::time::SystemTime| {
            u64::try_from(
                t.duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_millis(),
            )
            .unwrap_or(u64::MAX)
        };
        ctx.state().ticks.push(Tick {
            name: name.to_owned(),
            due_ms: ms(tick.due),
            fired_at_ms: ms(tick.fired_at),
            missed: tick.missed,
        });
        ctx.write_state().await
    }
}

/// What a match tells its watchers.
#[observer(name = "obs.match_watcher")]
pub trait MatchWatcher {
    /// The score changed.
    #[one_way]
    async fn on_score(&self, home: u32, away: u32) -> Result<()>;
    /// Whether the watcher is still there (answered by its client).
    async fn are_you_there(&self) -> Result<String>;
}

/// A match's state: its watchers with their leases, and the score.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct MatchState {
    /// The watchers and their leases.
    pub watchers: ObserverSet<MatchWatcherRef>,
    /// The home side's goals.
    pub home: u32,
}

/// What one push did: delivered, gone, expired, and the watchers left.
type Pushed = (usize, usize, usize, usize);

/// A match that pushes its score to its watchers (observers of its clients).
#[derive(Debug, Default)]
pub struct MatchGrain;

#[grain(name = "obs.match", state = MatchState, idle_after = "never")]
impl MatchGrain {
    /// Subscribes (or renews) `watcher` for `lease_secs`; returns how many watch.
    pub async fn subscribe(
        &self,
        ctx: &GrainContext<Self>,
        watcher: MatchWatcherRef,
        lease_secs: u64,
    ) -> Result<usize> {
        let now = ctx.now();
        let watching = {
            let mut state = ctx.state();
            state
                .watchers
                .subscribe(watcher, now, Duration::from_secs(lease_secs));
            state.watchers.len()
        };
        ctx.write_state().await?;
        Ok(watching)
    }

    /// The home side scores: every watcher is told, one-way.
    pub async fn goal(&self, ctx: &GrainContext<Self>) -> Result<Pushed> {
        let now = ctx.now();
        let pushes = {
            let mut state = ctx.state();
            state.home += 1;
            let home = state.home;
            state
                .watchers
                .notify(now, move |w| async move { w.on_score(home, 0).await })
        };
        let notified = pushes.await;
        let left = {
            let mut state = ctx.state();
            state.watchers.settle(&notified);
            state.watchers.len()
        };
        ctx.write_state().await?;
        Ok((
            notified.delivered,
            notified.gone.len(),
            notified.expired,
            left,
        ))
    }

    /// Pushes `n` scores to every watcher without waiting; how many were accepted and how
    /// many refused because a watcher's queue was full.
    pub async fn flood(&self, ctx: &GrainContext<Self>, n: u32) -> Result<(u32, u32)> {
        let watchers: Vec<MatchWatcherRef> = ctx.state().watchers.iter().cloned().collect();
        let (mut accepted, mut full) = (0, 0);
        for watcher in watchers {
            for i in 0..n {
                match watcher.on_score(i, 0).await {
                    Ok(()) => accepted += 1,
                    Err(CallError::QueueFull { .. }) => full += 1,
                    Err(err) => return Err(err),
                }
            }
        }
        Ok((accepted, full))
    }

    /// Asks every watcher whether it is there (request/response); the answers in order.
    pub async fn roll_call(&self, ctx: &GrainContext<Self>) -> Result<Vec<String>> {
        let watchers: Vec<MatchWatcherRef> = ctx.state().watchers.iter().cloned().collect();
        let mut names = Vec::new();
        for watcher in watchers {
            names.push(
                watcher
                    .with_timeout(Duration::from_secs(5))
                    .are_you_there()
                    .await?,
            );
        }
        Ok(names)
    }
}

pub mod subscribed;

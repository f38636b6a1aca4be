//! [`PlayerGrain`]: health, buffs, deaths and kills of one player, and its energy, which a
//! durable reminder regenerates.

use std::time::Duration;

use granary::provider::unix_ms;
use granary::{CallError, GrainContext, ReminderTick, Result, grain};
use serde::{Deserialize, Serialize};

use crate::MAX_HEALTH;
use crate::events::PlayerDied;
use crate::game::GameGrain;

/// What a buff does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BuffKind {
    /// Absorbs up to `amount` damage, then breaks.
    Shield,
    /// Marks a stronger player; it has no effect on damage taken.
    Strength,
}

/// A temporary effect on a player.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Buff {
    /// What it does.
    pub kind: BuffKind,
    /// How strong it is (a shield's remaining absorption).
    pub amount: i32,
    /// How long it has left to run (counted down in ticks of [`BUFF_TICK`]).
    pub remaining: Duration,
}

/// The persisted state of a player.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlayerState {
    /// Current health; 0 means dead.
    pub health: i32,
    /// The match the player is in.
    pub game: Option<i64>,
    /// Active buffs, in the order they were applied.
    pub buffs: Vec<Buff>,
    /// Deaths over the player's whole life.
    pub deaths: u32,
    /// Kills over the player's whole life.
    pub kills: u32,
    /// Matches won.
    #[serde(default)]
    pub wins: u32,
    /// The victims whose kills were credited in the current match, so that a retried credit
    /// counts once.
    #[serde(default)]
    pub credited: Vec<String>,
    /// Energy points, up to [`MAX_ENERGY`]: entering a match costs [`MATCH_ENERGY`], and the
    /// durable reminder [`ENERGY_REMINDER`] brings one back every [`ENERGY_REGEN`], also while
    /// the player is not active.
    #[serde(default = "full_energy")]
    pub energy: u32,
    /// What the energy reminder delivered so far.
    #[serde(default)]
    pub regen: Regen,
}

/// What a player's energy reminder delivered: the ticks applied, the periods they caught up
/// on, and the ticks that arrived for a due time already applied (the runtime delivers each
/// due time once, so this stays 0; the demo's summary shows it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Regen {
    /// Ticks applied.
    pub ticks: u32,
    /// Periods missed before the ticks applied (each one point too, as the tick reports them).
    pub missed: u64,
    /// Ticks that arrived for a due time already applied, counted and otherwise ignored.
    pub duplicates: u32,
    /// The due time of the last tick applied, in ms since the Unix epoch.
    pub last_due_ms: u64,
}

fn full_energy() -> u32 {
    MAX_ENERGY
}

impl Default for PlayerState {
    fn default() -> Self {
        Self {
            health: MAX_HEALTH,
            game: None,
            buffs: Vec::new(),
            deaths: 0,
            kills: 0,
            wins: 0,
            credited: Vec::new(),
            energy: MAX_ENERGY,
            regen: Regen::default(),
        }
    }
}

/// The result of [`PlayerRef::take_damage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DamageOutcome {
    /// The player survived with this much health.
    Survived {
        /// Health left.
        health: i32,
        /// Damage a shield absorbed.
        absorbed: i32,
    },
    /// This hit killed the player.
    Died,
    /// The player was already dead: nothing happened.
    AlreadyDead,
}

/// What [`PlayerRef::status`] reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlayerStatus {
    /// Current health.
    pub health: i32,
    /// Whether the player is alive.
    pub alive: bool,
    /// The current match.
    pub game: Option<i64>,
    /// Active buffs.
    pub buffs: Vec<Buff>,
    /// Lifetime deaths.
    pub deaths: u32,
    /// Lifetime kills.
    pub kills: u32,
    /// Matches won.
    pub wins: u32,
    /// Energy points.
    pub energy: u32,
    /// What the energy reminder delivered.
    pub regen: Regen,
}

/// One player. Its state is persisted on every change that matters (damage, death, buffs,
/// joining and leaving matches).
///
/// The methods a game calls are idempotent (entering the same match, a kill credited for the
/// same victim, the end of the same match), and a retried `take_damage` on a player who
/// already died reports [`DamageOutcome::AlreadyDead`]: a caller may retry a call whose
/// outcome is unknown (a silo died while it ran) without counting anything twice.
#[derive(Debug, Default)]
pub struct PlayerGrain;

/// The name of the periodic timer that counts buffs down.
const BUFF_TIMER: &str = "buff-tick";

/// How often buffs are counted down while a player has any.
pub const BUFF_TICK: Duration = Duration::from_secs(1);

/// The most energy a player has (and what a new player starts with).
pub const MAX_ENERGY: u32 = 10;

/// The energy entering a match costs (a player with less still plays, and has none left).
pub const MATCH_ENERGY: u32 = 2;

/// One energy point comes back every `ENERGY_REGEN` until the player is full.
pub const ENERGY_REGEN: Duration = Duration::from_secs(1);

/// The name of the durable reminder that regenerates energy: registered when a player spends
/// energy and is not regenerating yet, unregistered when full.
pub const ENERGY_REMINDER: &str = "energy";

#[grain(name = "player", state = PlayerState)]
impl PlayerGrain {
    /// Applies `amount` damage dealt by `source`. A shield absorbs first. When health reaches
    /// zero the player dies: `PlayerDied` is published with the state change, and the player's
    /// game is told (and counts the kill).
    pub async fn take_damage(
        &self,
        ctx: &GrainContext<Self>,
        amount: i32,
        source: String,
    ) -> Result<DamageOutcome> {
        if amount < 0 {
            return Err(CallError::rejected(
                ctx.id(),
                format!("negative damage {amount}"),
            ));
        }
        let (outcome, game) = {
            let mut s = ctx.state();
            if s.health <= 0 {
                return Ok(DamageOutcome::AlreadyDead);
            }
            let mut left = amount;
            let mut absorbed = 0;
            for buff in s.buffs.iter_mut().filter(|b| b.kind == BuffKind::Shield) {
                let take = left.min(buff.amount);
                buff.amount -= take;
                left -= take;
                absorbed += take;
            }
            s.buffs
                .retain(|b| b.kind != BuffKind::Shield || b.amount > 0);
            s.health = (s.health - left).max(0);
            if s.health > 0 {
                (
                    DamageOutcome::Survived {
                        health: s.health,
                        absorbed,
                    },
                    None,
                )
            } else {
                s.deaths += 1;
                s.buffs.clear();
                (DamageOutcome::Died, Some(s.game))
            }
        };
        if let Some(game) = game {
            let me = ctx.key().to_string();
            ctx.publish(&PlayerDied {
                player: me.clone(),
                killer: source.clone(),
                game,
            })?;
            if let Some(game) = game {
                let over = ctx
                    .grain::<GameGrain>(game)
                    .on_player_death(me, source)
                    .await?;
                if over {
                    // The game tells every other player; this one is in the call chain, so it
                    // leaves the match itself.
                    let mut s = ctx.state();
                    s.game = None;
                    s.credited.clear();
                }
            }
        }
        ctx.write_state().await?;
        Ok(outcome)
    }

    /// Restores `amount` health, up to the maximum; the dead cannot be healed.
    pub async fn heal(&self, ctx: &GrainContext<Self>, amount: i32) -> Result<i32> {
        let health = {
            let mut s = ctx.state();
            if s.health <= 0 {
                return Err(CallError::rejected(
                    ctx.id(),
                    "dead players cannot be healed; respawn first",
                ));
            }
            s.health = (s.health + amount.max(0)).min(MAX_HEALTH);
            s.health
        };
        ctx.write_state().await?;
        Ok(health)
    }

    /// Applies a buff; it expires once its `remaining` time has been counted down.
    pub async fn apply_buff(&self, ctx: &GrainContext<Self>, buff: Buff) -> Result<()> {
        let first = {
            let mut s = ctx.state();
            if s.health <= 0 {
                return Err(CallError::rejected(
                    ctx.id(),
                    "dead players cannot be buffed",
                ));
            }
            s.buffs.push(buff);
            s.buffs.len() == 1
        };
        if first {
            ctx.set_timer(BUFF_TIMER, BUFF_TICK, Some(BUFF_TICK));
        }
        ctx.write_state().await
    }

    /// Brings a dead player back with full health.
    pub async fn respawn(&self, ctx: &GrainContext<Self>) -> Result<()> {
        {
            let mut s = ctx.state();
            if s.health > 0 {
                return Err(CallError::rejected(ctx.id(), "player is alive"));
            }
            s.health = MAX_HEALTH;
        }
        ctx.write_state().await
    }

    /// Enters match `game` (called by the game grain). Returns false if the player is already
    /// in another match.
    pub async fn enter_game(&self, ctx: &GrainContext<Self>, game: i64) -> Result<bool> {
        {
            let mut s = ctx.state();
            match s.game {
                Some(current) if current != game => return Ok(false),
                Some(_) => return Ok(true),
                None => {
                    s.game = Some(game);
                    s.health = MAX_HEALTH;
                    s.buffs.clear();
                    s.credited.clear();
                    s.energy = s.energy.saturating_sub(MATCH_ENERGY);
                }
            }
        }
        // Registered on first use, with the energy spent (one commit). Registering again
        // while it runs would move its next tick, so only when it is not registered.
        let registered = ctx
            .reminders()
            .await?
            .iter()
            .any(|r| r.name == ENERGY_REMINDER);
        if !registered && ctx.state().energy < MAX_ENERGY {
            ctx.register_reminder(ENERGY_REMINDER, ENERGY_REGEN, ENERGY_REGEN)
                .await?;
        }
        ctx.write_state().await?;
        Ok(true)
    }

    /// Leaves match `game` (called by the game grain when the player leaves the lobby).
    pub async fn leave_game(&self, ctx: &GrainContext<Self>, game: i64) -> Result<()> {
        if ctx.state().game != Some(game) {
            return Ok(());
        }
        ctx.state().game = None;
        ctx.write_state().await
    }

    /// Credits the kill of `victim` in match `game` (called by the game grain). Idempotent: a
    /// second credit for the same victim in the same match counts nothing; a credit for a
    /// match the player is not in is ignored.
    pub async fn credit_kill(
        &self,
        ctx: &GrainContext<Self>,
        game: i64,
        victim: String,
    ) -> Result<()> {
        {
            let mut s = ctx.state();
            if s.game != Some(game) || s.credited.contains(&victim) {
                return Ok(());
            }
            s.kills += 1;
            s.credited.push(victim);
        }
        ctx.write_state().await
    }

    /// The end of match `game`: the player leaves it, and counts a win if `won`. Idempotent:
    /// the end of a match the player is no longer in changes nothing. The game waits for the
    /// reply, so a notice that did not arrive fails the game's call and is sent again.
    pub async fn match_ended(&self, ctx: &GrainContext<Self>, game: i64, won: bool) -> Result<()> {
        {
            let mut s = ctx.state();
            if s.game != Some(game) {
                return Ok(());
            }
            s.game = None;
            s.credited.clear();
            if won {
                s.wins += 1;
            }
        }
        ctx.write_state().await
    }

    /// The player's current status.
    #[read_only]
    pub async fn status(&self, ctx: &GrainContext<Self>) -> Result<PlayerStatus> {
        let s = ctx.state();
        Ok(PlayerStatus {
            health: s.health,
            alive: s.health > 0,
            game: s.game,
            buffs: s.buffs.clone(),
            deaths: s.deaths,
            kills: s.kills,
            wins: s.wins,
            energy: s.energy,
            regen: s.regen,
        })
    }

    /// The energy reminder's tick: one point for the tick and one for each period it missed
    /// (the cluster was down, or the silo firing it died), up to the maximum; full, the
    /// reminder is unregistered in the same commit. A tick for a due time already applied
    /// is counted as a duplicate and changes nothing else.
    #[on_reminder]
    async fn regenerate(
        &self,
        ctx: &GrainContext<Self>,
        name: &str,
        tick: ReminderTick,
    ) -> Result<()> {
        if name != ENERGY_REMINDER {
            return ctx.unregister_reminder(name).await;
        }
        let due_ms = unix_ms(tick.due);
        let full = {
            let mut s = ctx.state();
            if due_ms <= s.regen.last_due_ms {
                s.regen.duplicates += 1;
            } else {
                s.regen.last_due_ms = due_ms;
                s.regen.ticks += 1;
                s.regen.missed += tick.missed;
                let points = u32::try_from(tick.missed.saturating_add(1)).unwrap_or(u32::MAX);
                s.energy = s.energy.saturating_add(points).min(MAX_ENERGY);
            }
            s.energy >= MAX_ENERGY
        };
        if full {
            ctx.unregister_reminder(ENERGY_REMINDER).await?;
        }
        ctx.write_state().await
    }

    /// Counts buffs down by one tick and drops the expired ones; stops ticking when none is
    /// left.
    #[on_timer]
    async fn on_timer(&self, ctx: &GrainContext<Self>, name: &str) -> Result<()> {
        if name != BUFF_TIMER {
            return Ok(());
        }
        let none_left = {
            let mut s = ctx.state();
            for buff in &mut s.buffs {
                buff.remaining = buff.remaining.saturating_sub(BUFF_TICK);
            }
            s.buffs.retain(|b| !b.remaining.is_zero());
            s.buffs.is_empty()
        };
        if none_left {
            ctx.cancel_timer(BUFF_TIMER);
        }
        ctx.write_state().await
    }
}

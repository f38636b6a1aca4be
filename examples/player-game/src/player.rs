//! [`PlayerGrain`]: health, buffs, deaths and kills of one player, and its energy, which a
//! durable reminder regenerates.

use std::time::Duration;

use granary::provider::unix_ms;
use granary::{CallError, GrainContext, ReminderTick, Result, grain};
use player_game_api::{
    ATTACK_DAMAGE, Buff, BuffKind, DamageOutcome, MAX_HEALTH, PlayerStatus, Regen, can_attack,
};
use serde::{Deserialize, Serialize};

use crate::events::PlayerDied;
use crate::game::GameGrain;

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

/// One player: implements [`Player`](player_game_api::Player) (see there for what each
/// method promises). Its state is persisted on every change that matters (damage, death,
/// buffs, joining and leaving matches).
///
/// It is `reentrant` for [`attack`](player_game_api::PlayerRef::attack): a hit that kills ends
/// in the game crediting the attacker (and, when it ends the match, telling it so) while the
/// attacker's turn waits on that chain. Reentrancy admits only calls of the waiting turn's own
/// chain; other callers still wait their turn.
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

#[grain(implements = player_game_api::Player, state = PlayerState, reentrant)]
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

    /// Hits `target` for [`ATTACK_DAMAGE`] after checking, with the game, that both are alive
    /// in its running match; a hit survived is reported to the game (a kill reaches it through
    /// the victim, as any death does).
    pub async fn attack(&self, ctx: &GrainContext<Self>, target: String) -> Result<DamageOutcome> {
        let me = ctx.key().to_string();
        let Some(game_id) = ctx.state().game else {
            return Err(CallError::rejected(
                ctx.id(),
                "not in a match; queue for one first",
            ));
        };
        let game = ctx.grain::<GameGrain>(game_id);
        let info = game.info().await?;
        if !can_attack(&info, &me, &target) {
            return Err(CallError::rejected(
                ctx.id(),
                format!(
                    "{me} cannot attack {target} in match {game_id} ({:?}, alive: {:?})",
                    info.phase, info.alive
                ),
            ));
        }
        let outcome = ctx
            .grain::<PlayerGrain>(target.as_str())
            .take_damage(ATTACK_DAMAGE, me.clone())
            .await?;
        if let DamageOutcome::Survived { health, .. } = outcome {
            game.on_hit(me, target, health).await?;
        }
        Ok(outcome)
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

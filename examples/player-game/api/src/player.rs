//! [`Player`]: the interface of one player's grain, and the types its methods exchange.

use std::time::Duration;

use granary::{Result, grain_interface};
use serde::{Deserialize, Serialize};

use crate::game::GameInfo;

/// How much health a fresh or respawned player has.
pub const MAX_HEALTH: i32 = 100;

/// The damage one [`attack`](PlayerRef::attack) deals.
pub const ATTACK_DAMAGE: i32 = 35;

/// The request-context key naming the user whose session made a call: the example's silos let
/// a call to a player through only when it names that player (or comes from inside the
/// cluster). A front end sets it on each session's client: `client.with_context(USER, player)`.
pub const USER: &str = "user";

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
    /// How long it has left to run (counted down in ticks of a second).
    pub remaining: Duration,
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

/// The result of [`PlayerRef::take_damage`] and [`PlayerRef::attack`].
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

/// One player: health, buffs, deaths and kills, and energy that a durable reminder
/// regenerates.
///
/// The methods a game calls are idempotent (entering the same match, a kill credited for the
/// same victim, the end of the same match), and a retried `take_damage` on a player who
/// already died reports [`DamageOutcome::AlreadyDead`]: a caller may retry a call whose
/// outcome is unknown (a silo died while it ran) without counting anything twice.
#[grain_interface(name = "player")]
pub trait Player {
    /// Applies `amount` damage dealt by `source`. A shield absorbs first. When health reaches
    /// zero the player dies: `PlayerDied` is published with the state change, and the player's
    /// game is told (and counts the kill).
    async fn take_damage(&self, amount: i32, source: String) -> Result<DamageOutcome>;
    /// Restores `amount` health, up to the maximum; the dead cannot be healed.
    async fn heal(&self, amount: i32) -> Result<i32>;
    /// Applies a buff; it expires once its `remaining` time has been counted down.
    async fn apply_buff(&self, buff: Buff) -> Result<()>;
    /// Brings a dead player back with full health.
    async fn respawn(&self) -> Result<()>;
    /// Enters match `game` (called by the game grain). Returns false if the player is already
    /// in another match.
    async fn enter_game(&self, game: i64) -> Result<bool>;
    /// Leaves match `game` (called by the game grain when the player leaves the lobby).
    async fn leave_game(&self, game: i64) -> Result<()>;
    /// Credits the kill of `victim` in match `game` (called by the game grain). Idempotent: a
    /// second credit for the same victim in the same match counts nothing; a credit for a
    /// match the player is not in is ignored.
    async fn credit_kill(&self, game: i64, victim: String) -> Result<()>;
    /// The end of match `game`: the player leaves it, and counts a win if `won`. Idempotent:
    /// the end of a match the player is no longer in changes nothing.
    async fn match_ended(&self, game: i64, won: bool) -> Result<()>;
    /// The player's current status.
    #[read_only]
    async fn status(&self) -> Result<PlayerStatus>;
    /// The player (called from its own session) hits `target`, another living player of its
    /// running match, for [`ATTACK_DAMAGE`]; returns what the hit did. The match's watchers
    /// are told. Fails with `CallError::Rejected` when the player is dead or in no running
    /// match, or `target` is not a living opponent in it.
    async fn attack(&self, target: String) -> Result<DamageOutcome>;
}

/// Whether `target` is a living opponent of `attacker` in `info`'s running match: the check
/// [`PlayerRef::attack`] makes (and a front end may make first, to answer at once).
#[must_use]
pub fn can_attack(info: &GameInfo, attacker: &str, target: &str) -> bool {
    info.phase == crate::MatchPhase::Running
        && attacker != target
        && info.alive.iter().any(|p| p == attacker)
        && info.alive.iter().any(|p| p == target)
}

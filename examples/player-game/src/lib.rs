//! The example game: [`PlayerGrain`] and [`GameGrain`], and the domain events they publish.
//! Their interfaces (`Player`, `Game`, `Matchmaker`), the `MatchWatcher` observer and the types
//! they exchange live in the interface crate `player-game-api`, which a front end links
//! instead of this one (the WebSocket front end `player-game-frontend` does); this crate
//! implements them and re-exports the types.
//!
//! A match lives in a game grain (integer key). Players (string keys) join it in the lobby, the
//! match starts, players damage each other, die (the player notifies its game and publishes
//! `PlayerDied`), and the match ends when one player is left standing (`MatchEnded`).
//! Entering a match costs energy, which a durable reminder regenerates, one point a second,
//! while the player is offline too.
//!
//! Calls between the two grains are arranged so that no call chain reenters a waiting grain:
//! the player calls its game when it dies, and the game tells every other player about the end
//! of the match (the dying player learns it from the reply). Every cross-grain step is
//! idempotent, so a caller may retry a call whose outcome is unknown after a silo died, and
//! nothing is counted twice: the demo kills a silo mid-run and reconciles.
//!
//! Players queue into matches through [`MatchmakerGrain`], a stateless worker, and
//! [`PlayerAuth`], an incoming call filter on every silo of the example, lets a call to a player
//! through only from that player's session (the request context's [`USER`]) or from inside the
//! cluster. [`host`] sets up a silo builder with all of it.

mod auth;
mod events;
mod game;
mod matchmaker;
mod player;

pub use auth::{PlayerAuth, host};

pub use events::{MatchCreated, MatchEnded, MatchStarted, PlayerDied};
pub use game::{GameGrain, GameState};
pub use matchmaker::MatchmakerGrain;
pub use player::{
    BUFF_TICK, ENERGY_REGEN, ENERGY_REMINDER, MATCH_ENERGY, MAX_ENERGY, PlayerGrain, PlayerState,
};
/// The interfaces these grains implement, and the types they exchange (from
/// `player-game-api`, re-exported so that the example's code and tests name them here).
pub use player_game_api::{
    ATTACK_DAMAGE, Buff, BuffKind, DamageOutcome, GameInfo, GameRef, JoinOutcome, MAX_HEALTH,
    MatchPhase, MatchResult, MatchView, MatchWatcher, MatchWatcherRef, MatchmakerRef, PlayerRef,
    PlayerStatus, Regen, USER, WATCH_LEASE,
};

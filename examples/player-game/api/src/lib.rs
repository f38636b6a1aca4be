//! The Player/Game example's callable surface, apart from its grain logic: the grain
//! interfaces [`Player`], [`Game`] and [`Matchmaker`] (with their references [`PlayerRef`],
//! [`GameRef`] and [`MatchmakerRef`]), the observer [`MatchWatcher`] through which a game
//! pushes to its players' screens, and the types they exchange.
//!
//! A front end depends on this crate alone (the example's WebSocket front end,
//! `player-game-frontend`, does): `client.grain::<PlayerRef>("alice")` calls the player grain
//! that the example's grains crate (`example-player-game`) implements with
//! `#[grain(implements = player_game_api::Player)]`. The wire is the same as before the split:
//! method ids are the hash of the method names.

mod game;
mod matchmaker;
mod player;
mod watcher;

pub use game::{Game, GameInfo, GameMock, GameRef, JoinOutcome, MatchPhase, MatchResult};
pub use matchmaker::{Matchmaker, MatchmakerMock, MatchmakerRef};
pub use player::{
    ATTACK_DAMAGE, Buff, BuffKind, DamageOutcome, MAX_HEALTH, Player, PlayerMock, PlayerRef,
    PlayerStatus, Regen, USER, can_attack,
};
pub use watcher::{MatchView, MatchWatcher, MatchWatcherMock, MatchWatcherRef, WATCH_LEASE};

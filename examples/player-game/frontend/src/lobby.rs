//! [`Lobby`]: how the front end fills two-player matches through the matchmaker.

use std::sync::atomic::{AtomicI64, Ordering};

use granary::{CallError, ClusterClient};
use player_game_api::{GameRef, MatchPhase, MatchmakerRef, PlayerRef};
use tokio::sync::Mutex;

/// The matchmaker's key the front end queues through (a stateless worker: any key works, each
/// silo serves it locally).
const MATCHMAKER: &str = "lobby";

/// The front end's open match: players queue into it through the matchmaker, and the second
/// one starts it. Queueing is serialized in the front end (a lock held over the few calls it
/// takes), so that two players queueing at once land in the same match.
#[derive(Debug)]
pub(crate) struct Lobby {
    open: Mutex<Option<i64>>,
    next: AtomicI64,
}

impl Lobby {
    /// A lobby whose matches take ids from `first` on.
    pub(crate) fn new(first: i64) -> Self {
        Self {
            open: Mutex::new(None),
            next: AtomicI64::new(first),
        }
    }

    /// Queues `player` (whose session `client` is) and returns the match it is in: the one it
    /// is already in (a page that queues again after reconnecting), else the open match (created
    /// when there is none, started once it has its two players).
    pub(crate) async fn queue(
        &self,
        client: &ClusterClient,
        player: &str,
    ) -> Result<i64, CallError> {
        if let Some(game) = client.grain::<PlayerRef>(player).status().await?.game {
            return Ok(game);
        }
        let mut open = self.open.lock().await;
        // At most twice: the open match may have been filled or started meanwhile (by another
        // front end's player), then a new one is opened.
        for _ in 0..2 {
            let game = match *open {
                Some(game) => game,
                None => {
                    let game = self.next.fetch_add(1, Ordering::Relaxed);
                    client.grain::<GameRef>(game).create(2).await?;
                    *open = Some(game);
                    game
                }
            };
            let matchmaker = client.grain::<MatchmakerRef>(MATCHMAKER);
            match matchmaker.queue(player.to_owned(), vec![game]).await {
                Ok(joined) => {
                    let info = client.grain::<GameRef>(joined).info().await?;
                    if info.phase == MatchPhase::Lobby && info.players.len() >= 2 {
                        client.grain::<GameRef>(joined).start().await?;
                        *open = None;
                    }
                    return Ok(joined);
                }
                Err(err @ CallError::Rejected { .. }) => {
                    let info = client.grain::<GameRef>(game).info().await?;
                    if info.phase == MatchPhase::Lobby && info.players.len() < 2 {
                        // The match had room: the player cannot join (in another match).
                        return Err(err);
                    }
                    *open = None;
                }
                Err(err) => return Err(err),
            }
        }
        Err(CallError::rejected(
            &granary::GrainId::new("matchmaker", MATCHMAKER),
            format!("no match had room for {player}; queue again"),
        ))
    }
}

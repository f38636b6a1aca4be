//! One browser's WebSocket session: logs in with a token, queues, attacks, and forwards the
//! pushes of its match (made to its observer, a [`Screen`]) to the socket through a bounded
//! [`Outbox`].
//!
//! A push never waits for the browser: the screen puts the frame in the outbox without
//! waiting, and a writer task drains it into the socket. A browser that stops reading fills the
//! socket, then the outbox; the next frame that finds it full disconnects the session (logged),
//! and the match's later pushes to its observer, dropped with the session, fail with
//! `ObserverGone` and remove it from the match's watchers (or its lease ends).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_ws::{Message, MessageStream, Session};
use granary::{CallError, ClusterClient, ObserverHandle, Result as CallResult};
use player_game_api::{GameRef, MatchView, MatchWatcher, MatchWatcherRef, PlayerRef, USER};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::protocol::{Reply, Request, parse};
use crate::server::Shared;

/// The frames waiting for one browser: bounded; a frame that finds it full marks the session
/// overflowed (it is then disconnected), never waits.
#[derive(Debug, Clone)]
pub(crate) struct Outbox {
    frames: mpsc::Sender<String>,
    overflowed: CancellationToken,
}

impl Outbox {
    /// Queues `reply` without waiting; a full queue marks the session overflowed, a closed one
    /// (the session ended) drops it.
    pub(crate) fn send(&self, reply: &Reply) {
        match self.frames.try_send(reply.to_json()) {
            Ok(()) | Err(TrySendError::Closed(_)) => {}
            Err(TrySendError::Full(_)) => self.overflowed.cancel(),
        }
    }
}

/// The session's observer object: what its match pushes goes to the outbox (and is kept as
/// the session's latest view, which `attack` picks the opponent from).
#[derive(Debug)]
struct Screen {
    outbox: Outbox,
    latest: Arc<Mutex<Option<MatchView>>>,
}

/// Keeps `view` as the latest if it is newer than what `latest` holds; whether it was.
fn keep_newer(latest: &Mutex<Option<MatchView>>, view: &MatchView) -> bool {
    let mut latest = latest
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let newer = latest
        .as_ref()
        .is_none_or(|old| old.game != view.game || old.seq <= view.seq);
    if newer {
        *latest = Some(view.clone());
    }
    newer
}

impl MatchWatcher for Screen {
    async fn on_update(&self, view: MatchView) -> CallResult<()> {
        if keep_newer(&self.latest, &view) {
            self.outbox.send(&Reply::Update { view });
        }
        Ok(())
    }
}

/// A logged-in session: its player, the client that calls as that player, the observer its
/// match pushes to, and the match it watches.
struct Player {
    name: String,
    client: ClusterClient,
    screen: ObserverHandle<MatchWatcherRef>,
    game: Option<i64>,
}

/// Runs a session until the browser closes it, the socket fails, or its outbox overflows;
/// then drops its observer (later pushes find it gone).
pub(crate) async fn run(shared: Arc<Shared>, session: Session, mut stream: MessageStream) {
    let (frames, queued) = mpsc::channel(shared.config.outbox);
    let outbox = Outbox {
        frames,
        overflowed: CancellationToken::new(),
    };
    let stop = CancellationToken::new();
    let writer = actix_web::rt::spawn(write(session.clone(), queued, stop.clone()));
    let latest = Arc::new(Mutex::new(None));
    let mut player: Option<Player> = None;
    let mut home = shared.client.observer_gateway();
    let mut renew = tokio::time::interval(shared.config.renew);
    renew.reset();
    let overflowed = loop {
        tokio::select! {
            () = outbox.overflowed.cancelled() => break true,
            message = stream.recv() => match message {
                Some(Ok(Message::Text(text))) => {
                    let reply = match parse(&text) {
                        Ok(request) => {
                            handle(&shared, &outbox, &latest, &mut player, request).await
                        }
                        Err(why) => Err(why),
                    };
                    if let Err(why) = reply {
                        outbox.send(&Reply::error(why));
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    outbox.send(&Reply::error("binary frames are not read: send JSON text"));
                }
                Some(Ok(Message::Ping(bytes))) => pong(&session, &bytes).await,
                Some(Ok(Message::Close(_))) | None => break false,
                Some(Ok(_)) => {}
                Some(Err(err)) => {
                    debug!(cause = %err, "a browser's socket failed");
                    break false;
                }
            },
            _ = renew.tick() => resubscribe(&outbox, &latest, player.as_ref()).await,
            changed = home.changed() => {
                if changed.is_err() {
                    break false;
                }
                // The client failed over to another gateway: the observer's reference names
                // it now; subscribe again with it.
                resubscribe(&outbox, &latest, player.as_ref()).await;
            }
        }
    };
    let name = player.as_ref().map_or("", |p| p.name.as_str()).to_owned();
    if overflowed {
        warn!(
            player = %name,
            queue = shared.config.outbox,
            "disconnecting a browser that does not read: its outgoing queue is full"
        );
        shared.slow_disconnects.send_modify(|n| *n += 1);
    }
    stop.cancel();
    if let Some(p) = player.take() {
        shared.forget(&p.name, &p.screen.reference());
    }
    let _ = writer.await;
    if !overflowed {
        // A close frame, if the socket still takes one; a browser that does not read it
        // holds nobody up.
        let _ = tokio::time::timeout(Duration::from_secs(1), session.close(None)).await;
    }
    debug!(player = %name, "session ended");
}

/// Answers a ping, waiting a second at most: a browser that takes no pong is one that does
/// not read, which its outbox deals with.
async fn pong(session: &Session, bytes: &[u8]) {
    let mut session = session.clone();
    let _ = tokio::time::timeout(Duration::from_secs(1), session.pong(bytes)).await;
}

/// Drains `queued` into the socket until `stop`; a socket that takes no more holds only this
/// task (its queue then overflows and the session ends).
async fn write(mut session: Session, mut queued: mpsc::Receiver<String>, stop: CancellationToken) {
    loop {
        let frame = tokio::select! {
            () = stop.cancelled() => return,
            frame = queued.recv() => match frame {
                Some(frame) => frame,
                None => return,
            },
        };
        tokio::select! {
            () = stop.cancelled() => return,
            sent = session.text(frame) => if sent.is_err() {
                return;
            },
        }
    }
}

/// Carries out one request; `Err` is the error frame's message.
async fn handle(
    shared: &Arc<Shared>,
    outbox: &Outbox,
    latest: &Arc<Mutex<Option<MatchView>>>,
    player: &mut Option<Player>,
    request: Request,
) -> Result<(), String> {
    let failed = |err: CallError| err.to_string();
    match request {
        Request::Login { token } => {
            if let Some(p) = player {
                return Err(format!("already logged in as {}", p.name));
            }
            let Some(name) = shared.config.tokens.get(&token).cloned() else {
                return Err("unknown token: log in with a token the front end was given".into());
            };
            let client = shared.client.clone().with_context(USER, name.as_str());
            let screen = client.observe(MatchWatcherRef::object(Screen {
                outbox: outbox.clone(),
                latest: latest.clone(),
            }));
            shared.remember(&name, screen.reference());
            info!(player = %name, "logged in");
            outbox.send(&Reply::Welcome {
                player: name.clone(),
            });
            let status = client.grain::<PlayerRef>(name.as_str()).status().await;
            let me = player.insert(Player {
                name,
                client,
                screen,
                game: None,
            });
            // A page that reconnects during its match is subscribed to it again.
            if let Some(game) = status.map_err(failed)?.game {
                me.game = Some(game);
                watch(outbox, latest, me).await.map_err(failed)?;
            }
            Ok(())
        }
        Request::Queue => {
            let p = logged_in(player)?;
            let game = shared
                .lobby
                .queue(&p.client, &p.name)
                .await
                .map_err(failed)?;
            p.game = Some(game);
            watch(outbox, latest, p).await.map_err(failed)
        }
        Request::Attack { target } => {
            let p = logged_in(player)?;
            let target = match target {
                Some(target) => target,
                None => opponent(latest, &p.name)
                    .ok_or("no opponent to attack: queue for a match and wait for it to start")?,
            };
            p.client
                .grain::<PlayerRef>(p.name.as_str())
                .attack(target)
                .await
                .map(drop)
                .map_err(failed)
        }
    }
}

fn logged_in(player: &mut Option<Player>) -> Result<&mut Player, String> {
    player
        .as_mut()
        .ok_or_else(|| "log in first: send {\"type\":\"login\",\"token\":\"..\"}".to_owned())
}

/// The first living player of the latest view other than `me`.
fn opponent(latest: &Mutex<Option<MatchView>>, me: &str) -> Option<String> {
    let latest = latest
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    latest.as_ref()?.alive.iter().find(|p| *p != me).cloned()
}

/// Subscribes the session's observer to its match (a new subscription or a renewal) and sends
/// the match as it is now.
async fn watch(
    outbox: &Outbox,
    latest: &Mutex<Option<MatchView>>,
    player: &Player,
) -> Result<(), CallError> {
    let Some(game) = player.game else {
        return Ok(());
    };
    let view = player
        .client
        .grain::<GameRef>(game)
        .watch(player.screen.reference())
        .await?;
    if keep_newer(latest, &view) {
        outbox.send(&Reply::Update { view });
    }
    Ok(())
}

/// Renews the session's subscription (the lease would end otherwise), logging a failure (the
/// next renewal tries again, well within the lease).
async fn resubscribe(outbox: &Outbox, latest: &Mutex<Option<MatchView>>, player: Option<&Player>) {
    let Some(player) = player else { return };
    if let Err(err) = watch(outbox, latest, player).await {
        warn!(player = %player.name, cause = %err, "renewing a match subscription failed");
    }
}

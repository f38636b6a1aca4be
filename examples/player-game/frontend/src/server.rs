//! [`Frontend`]: the actix-web server (the page at `/`, the WebSocket at `/ws`) and what its
//! sessions share.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use granary::{ClusterClient, TypedRef};
use player_game_api::{MatchWatcherRef, WATCH_LEASE};
use tokio::sync::watch;

use crate::lobby::Lobby;
use crate::session;

/// The page, embedded: it loads nothing else (no CDN), so it works offline.
const PAGE: &str = include_str!("page.html");

/// How a [`Frontend`] runs.
#[derive(Debug, Clone)]
pub struct FrontendConfig {
    /// The players' tokens: token → player. A session logs in with one and calls as that
    /// player (the request context's `USER`, which the silos' authorization filter checks).
    pub tokens: HashMap<String, String>,
    /// How many frames may wait for one browser; one more disconnects it (default 64).
    pub outbox: usize,
    /// How often a session renews its match subscription (default a third of
    /// `WATCH_LEASE`).
    pub renew: Duration,
    /// The largest frame a browser may send, in bytes (default 4 KiB).
    pub max_frame: usize,
    /// The id of the first match the front end opens; the next ones count up (default: the
    /// start time in ms × 1000, so that front ends started at different times do not meet).
    pub first_game: i64,
    /// actix-web worker threads (default 1).
    pub workers: usize,
}

impl Default for FrontendConfig {
    fn default() -> Self {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0));
        Self {
            tokens: HashMap::new(),
            outbox: 64,
            renew: WATCH_LEASE / 3,
            max_frame: 4096,
            first_game: now_ms.saturating_mul(1000),
            workers: 1,
        }
    }
}

impl FrontendConfig {
    /// The same configuration, with `token` logging in as `player`.
    #[must_use]
    pub fn token(mut self, token: impl Into<String>, player: impl Into<String>) -> Self {
        self.tokens.insert(token.into(), player.into());
        self
    }
}

/// What every session of a front end shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) client: ClusterClient,
    pub(crate) config: FrontendConfig,
    pub(crate) lobby: Lobby,
    /// How many browsers were disconnected for not reading.
    pub(crate) slow_disconnects: watch::Sender<u64>,
    /// The observer of each logged-in player's latest session.
    screens: Mutex<HashMap<String, MatchWatcherRef>>,
}

impl Shared {
    pub(crate) fn remember(&self, player: &str, screen: MatchWatcherRef) {
        self.lock_screens().insert(player.to_owned(), screen);
    }

    /// Forgets `player`'s screen if it is still `screen` (not a newer session's).
    pub(crate) fn forget(&self, player: &str, screen: &MatchWatcherRef) {
        let mut screens = self.lock_screens();
        if screens
            .get(player)
            .is_some_and(|s| s.grain_ref().id() == screen.grain_ref().id())
        {
            screens.remove(player);
        }
    }

    fn lock_screens(&self) -> std::sync::MutexGuard<'_, HashMap<String, MatchWatcherRef>> {
        self.screens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The WebSocket front end: serves the page and the players' sessions over a
/// [`ClusterClient`] (see the crate's docs).
#[derive(Debug)]
pub struct Frontend {
    shared: Arc<Shared>,
    addr: SocketAddr,
    handle: ServerHandle,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Frontend {
    /// Starts serving on `listener` (a bound, listening socket; `127.0.0.1:0` in tests) with
    /// `client` as the cluster client every session calls through. Must be called on a Tokio
    /// runtime, which runs the server until [`stop`](Self::stop).
    ///
    /// # Errors
    /// When the listener cannot be served (its address is unreadable).
    pub fn start(
        client: ClusterClient,
        config: FrontendConfig,
        listener: std::net::TcpListener,
    ) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let workers = config.workers.max(1);
        let max_frame = config.max_frame;
        let shared = Arc::new(Shared {
            client,
            lobby: Lobby::new(config.first_game),
            config,
            slow_disconnects: watch::channel(0).0,
            screens: Mutex::new(HashMap::new()),
        });
        let data = web::Data::from(shared.clone());
        let server = HttpServer::new(move || {
            App::new()
                    .app_data(data.clone())
                    .route(
                        "/",
                        web::get().to(|| async {
                            HttpResponse::Ok()
                                .content_type("text/html; charset=utf-8")
                                .body(PAGE)
                        }),
                    )
                    .route(
                        "/ws",
                        web::get().to(
                            move |req: HttpRequest,
                                  body: web::Payload,
                                  shared: web::Data<Shared>| async move {
                                let (response, session, stream) = actix_ws::handle(&req, body)?;
                                let stream = stream.max_frame_size(max_frame);
                                actix_web::rt::spawn(session::run(
                                    shared.into_inner(),
                                    session,
                                    stream,
                                ));
                                Ok::<_, actix_web::Error>(response)
                            },
                        ),
                    )
        })
        .workers(workers)
        .disable_signals()
        .shutdown_timeout(5)
        .listen(listener)?
        .run();
        let handle = server.handle();
        Ok(Self {
            shared,
            addr,
            handle,
            server: tokio::spawn(server),
        })
    }

    /// The address it serves on: the page is `http://{addr}/`, the socket `ws://{addr}/ws`.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The observer reference of `player`'s open session, if it has one: what its match
    /// pushes to (a tool or a test may push to it too).
    #[must_use]
    pub fn screen(&self, player: &str) -> Option<MatchWatcherRef> {
        self.shared.lock_screens().get(player).cloned()
    }

    /// How many browsers were disconnected because they did not read their frames, watched.
    #[must_use]
    pub fn slow_disconnects(&self) -> watch::Receiver<u64> {
        self.shared.slow_disconnects.subscribe()
    }

    /// Stops serving: closes the sessions and waits for the server to end.
    pub async fn stop(self) {
        self.handle.stop(true).await;
        let _ = self.server.await;
    }
}

//! The Player/Game example's WebSocket front end on actix-web: players log in from a browser
//! page with a token, queue for a two-player match through the matchmaker grain, attack, and
//! see their match pushed by its game grain, to the end and its winner.
//!
//! It is a [`ClusterClient`](granary::ClusterClient) over the interface crate
//! `player-game-api` alone: it links no grain logic (a test checks its dependency tree).
//!
//! - [`Frontend::start`] serves the embedded page at `/` (no CDN: it works offline) and the
//!   sessions at `/ws`.
//! - A session ([`protocol`]: JSON text frames) logs in with a token; every call it makes
//!   carries the player as the request context's `USER`, which the silos' authorization
//!   filter checks. It serves an observer (a `MatchWatcher`) that its match pushes to, and
//!   subscribes it with `GameRef::watch`, renewing the subscription well within its lease and
//!   again after the client failed over to another gateway; a page that reconnects logs in
//!   again and is subscribed again.
//! - Back-pressure: each session has a bounded outgoing queue; a push never waits for the
//!   browser, and a browser that stops reading is disconnected when its queue overflows
//!   (logged). A frame that does not parse gets an error frame, and the socket stays.
//!
//! `docs/front-end.md` describes the pattern and how to run it.

mod lobby;
pub mod protocol;
mod server;
mod session;

pub use server::{Frontend, FrontendConfig};

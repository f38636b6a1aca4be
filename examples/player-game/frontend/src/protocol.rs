//! The JSON messages the page and the front end exchange over the WebSocket: [`Request`] from
//! the page, [`Reply`] to it. Every text frame holds one message, tagged by `"type"`.

use player_game_api::MatchView;
use serde::{Deserialize, Serialize};

/// A message from the page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// Logs the session in as the player the token belongs to. A session that reconnects logs
    /// in again and is shown its match (and subscribed to it) if it is in one.
    Login {
        /// The player's token.
        token: String,
    },
    /// Queues the player for a two-player match through the matchmaker.
    Queue,
    /// Hits `target` (the opponent when left out).
    Attack {
        /// Whom to hit.
        #[serde(default)]
        target: Option<String>,
    },
}

/// A message to the page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    /// The session is logged in as `player`.
    Welcome {
        /// The player.
        player: String,
    },
    /// The player's match as it is now: pushed by the match's grain through the session's
    /// observer, or the answer to a login or a queue.
    Update {
        /// The match.
        view: MatchView,
    },
    /// A request failed; the socket stays open.
    Error {
        /// What went wrong and what to do.
        message: String,
    },
}

impl Reply {
    /// An error frame saying `message`.
    pub fn error(message: impl Into<String>) -> Self {
        Self::Error {
            message: message.into(),
        }
    }

    /// The frame's JSON text.
    #[must_use]
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|err| {
            // Only a map with non-string keys fails to serialize; none of ours has one.
            format!(r#"{{"type":"error","message":"cannot encode a reply: {err}"}}"#)
        })
    }
}

/// Parses a text frame from the page; the error says what was wrong and what is expected.
///
/// # Errors
/// When `text` is not one of the [`Request`] messages in JSON.
pub fn parse(text: &str) -> Result<Request, String> {
    serde_json::from_str(text).map_err(|err| {
        format!(
            "cannot read the message ({err}): send JSON such as \
             {{\"type\":\"login\",\"token\":\"..\"}}, {{\"type\":\"queue\"}} or \
             {{\"type\":\"attack\"}}"
        )
    })
}

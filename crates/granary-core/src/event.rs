//! Domain events: what grains publish with [`GrainContext::publish`](crate::GrainContext::publish).

use crate::message::TraceId;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A domain event type (`PlayerDied`, `MatchEnded`, ...).
///
/// The payload is stored and delivered as JSON so that consumers in any language can read it;
/// `TYPE_NAME` is the stable name consumers and sinks route on.
pub trait Event: Serialize + DeserializeOwned + Send + 'static {
    /// The event's stable type name, e.g. `"player.died"`.
    const TYPE_NAME: &'static str;
}

/// An event as published by a turn: its type name and JSON payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedEvent {
    /// The event's [`Event::TYPE_NAME`].
    pub type_name: String,
    /// The event encoded as JSON.
    pub payload: Vec<u8>,
    /// The trace of the turn that published it.
    #[serde(default)]
    pub trace: Option<TraceId>,
}

impl PublishedEvent {
    /// Encodes an event.
    ///
    /// # Errors
    /// When the event's `Serialize` implementation fails (for instance a map with non-string
    /// keys, which JSON cannot represent).
    pub fn encode<E: Event>(event: &E) -> Result<Self, serde_json::Error> {
        Ok(Self {
            type_name: E::TYPE_NAME.to_owned(),
            payload: serde_json::to_vec(event)?,
            trace: crate::turn::current_trace(),
        })
    }

    /// Decodes the event as `E`, or `None` if it is of another type.
    ///
    /// # Errors
    /// When the payload is not valid JSON for `E`.
    pub fn decode<E: Event>(&self) -> Option<Result<E, serde_json::Error>> {
        (self.type_name == E::TYPE_NAME).then(|| serde_json::from_slice(&self.payload))
    }
}

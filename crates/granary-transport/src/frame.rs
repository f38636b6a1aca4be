//! The frames two silos exchange, and their encoding on a connection.
//!
//! A frame on the wire is a 4-byte big-endian length followed by that many bytes: one [`Frame`]
//! encoded with the wire codec (bincode with a size limit). The length is checked against the
//! connection's cap before anything is allocated: [`HANDSHAKE_FRAME_LIMIT`] until the peer has
//! proven it holds the cluster secret, the configured frame limit after.

use granary_core::SiloId;
use serde::{Deserialize, Serialize};
use tokio_util::codec::LengthDelimitedCodec;

/// The largest frame a peer may send before the handshake completed.
pub const HANDSHAKE_FRAME_LIMIT: usize = 1024;

/// The protocol version this build speaks; a peer with another is refused.
pub const PROTOCOL_VERSION: u16 = 1;

/// One message between two silos.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Frame {
    /// First frame of each side: who it is and the challenge for the other side.
    Hello {
        /// [`PROTOCOL_VERSION`] of the sender.
        version: u16,
        /// The sender's cluster id.
        cluster: String,
        /// The sender.
        silo: SiloId,
        /// The challenge the other side must sign.
        nonce: [u8; 32],
    },
    /// The answer to the other side's challenge: an HMAC over both nonces and identities.
    Proof {
        /// HMAC-SHA256.
        mac: [u8; 32],
    },
    /// A request expecting a response with the same id.
    Request {
        /// Correlates the response.
        id: u64,
        /// Time the caller still waits, in microseconds.
        timeout_us: u64,
        /// The payload (for silos: an encoded call envelope).
        body: Vec<u8>,
    },
    /// A message expecting no response.
    OneWay {
        /// The payload.
        body: Vec<u8>,
    },
    /// The response to request `id`.
    Response {
        /// The request's id.
        id: u64,
        /// The payload.
        body: Vec<u8>,
    },
    /// Request `id` got an answer that cannot be sent (too large); the caller fails at once.
    Refused {
        /// The request's id.
        id: u64,
        /// Why.
        reason: String,
    },
    /// The caller of request `id` gave up: stop working on it, send nothing.
    Cancel {
        /// The request's id.
        id: u64,
    },
}

/// The length-delimited codec with a frame cap of `limit` bytes.
pub(crate) fn codec(limit: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_type::<u32>()
        .max_frame_length(limit)
        .new_codec()
}

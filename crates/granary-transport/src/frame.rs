//! The frames two silos exchange, and their encoding on a connection.
//!
//! A frame on the wire is a 4-byte big-endian length followed by that many bytes. The length is
//! checked against the connection's cap before anything is allocated: [`HANDSHAKE_FRAME_LIMIT`]
//! until the peer has proven it holds the cluster secret, the configured frame limit after.
//!
//! - **Handshake frames** ([`Hello`](Handshake::Hello), [`Proof`](Handshake::Proof)) are one
//!   [`Handshake`] encoded with the wire codec (bincode with a size limit).
//! - **Frames after the handshake** have a fixed header written by hand, so that a message is
//!   encoded straight into the connection's write buffer and its body is handed to the handler
//!   as a slice of the read buffer, without a copy: one tag byte, then the fields below as
//!   little-endian integers, then the body (the rest of the frame).
//!
//! | tag | frame | fields | body |
//! |---|---|---|---|
//! | 2 | `Request` | id `u64`, caller's time left in µs `u64` | the request |
//! | 3 | `OneWay` | | the message |
//! | 4 | `Response` | id `u64` | the answer |
//! | 5 | `Refused` | id `u64` | why the answer cannot be sent (UTF-8) |
//! | 6 | `Cancel` | id `u64` | (none) |

use bytes::{Buf, Bytes};
use granary_core::SiloId;
use serde::{Deserialize, Serialize};
use tokio_util::codec::LengthDelimitedCodec;

/// The largest frame a peer may send before the handshake completed.
pub const HANDSHAKE_FRAME_LIMIT: usize = 1024;

/// The protocol version this build speaks; a peer with another is refused. Version 2: frames
/// after the handshake have a fixed header instead of a bincode encoding. Version 3: a silo's
/// reply to a call names the silo that served it in one byte when that is itself. Version 4:
/// a call's chain carries its request context (one byte when empty), a call error may be
/// `ObserverGone`, and gateways send calls to their clients' observers.
pub const PROTOCOL_VERSION: u16 = 4;

/// The frames of the handshake (tags 0 and 1 of the frame table).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Handshake {
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
}

/// Tag of a request expecting a response with the same id.
pub(crate) const REQUEST: u8 = 2;
/// Tag of a message expecting no response.
pub(crate) const ONE_WAY: u8 = 3;
/// Tag of the response to a request.
pub(crate) const RESPONSE: u8 = 4;
/// Tag of "request `id` got an answer that cannot be sent (too large)": the caller fails at once.
pub(crate) const REFUSED: u8 = 5;
/// Tag of "the caller of request `id` gave up: stop working on it, send nothing".
pub(crate) const CANCEL: u8 = 6;

/// One frame received after the handshake; bodies are slices of the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame {
    /// A request expecting a response with the same id.
    Request {
        /// Correlates the response.
        id: u64,
        /// Time the caller still waits, in microseconds.
        timeout_us: u64,
        /// The payload (for silos: an encoded cluster message).
        body: Bytes,
    },
    /// A message expecting no response.
    OneWay {
        /// The payload.
        body: Bytes,
    },
    /// The response to request `id`.
    Response {
        /// The request's id.
        id: u64,
        /// The payload.
        body: Bytes,
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

/// The header of a frame to send: what [`Frame`] holds but the body.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Header {
    Request { id: u64, timeout_us: u64 },
    OneWay,
    Response { id: u64 },
    Refused { id: u64 },
    Cancel { id: u64 },
}

impl Header {
    /// Appends the tag and fields to `out`.
    pub(crate) fn write(self, out: &mut Vec<u8>) {
        match self {
            Self::Request { id, timeout_us } => {
                out.push(REQUEST);
                out.extend_from_slice(&id.to_le_bytes());
                out.extend_from_slice(&timeout_us.to_le_bytes());
            }
            Self::OneWay => out.push(ONE_WAY),
            Self::Response { id } => {
                out.push(RESPONSE);
                out.extend_from_slice(&id.to_le_bytes());
            }
            Self::Refused { id } => {
                out.push(REFUSED);
                out.extend_from_slice(&id.to_le_bytes());
            }
            Self::Cancel { id } => {
                out.push(CANCEL);
                out.extend_from_slice(&id.to_le_bytes());
            }
        }
    }
}

/// Decodes one frame received after the handshake (the bytes after the length prefix).
///
/// # Errors
/// What is wrong with it: empty, truncated, a handshake frame, an unknown tag, a reason that
/// is not UTF-8, bytes after a `Cancel`.
pub(crate) fn decode(mut bytes: Bytes) -> Result<Frame, String> {
    if bytes.is_empty() {
        return Err("empty frame".into());
    }
    let tag = bytes.get_u8();
    match tag {
        REQUEST => {
            let id = field(&mut bytes, "Request")?;
            let timeout_us = field(&mut bytes, "Request")?;
            Ok(Frame::Request {
                id,
                timeout_us,
                body: bytes,
            })
        }
        ONE_WAY => Ok(Frame::OneWay { body: bytes }),
        RESPONSE => Ok(Frame::Response {
            id: field(&mut bytes, "Response")?,
            body: bytes,
        }),
        REFUSED => {
            let id = field(&mut bytes, "Refused")?;
            let reason = String::from_utf8(bytes.to_vec())
                .map_err(|_| "a Refused frame whose reason is not UTF-8".to_owned())?;
            Ok(Frame::Refused { id, reason })
        }
        CANCEL => {
            let id = field(&mut bytes, "Cancel")?;
            if !bytes.is_empty() {
                return Err(format!("{} bytes after a Cancel frame", bytes.len()));
            }
            Ok(Frame::Cancel { id })
        }
        0 => Err("unexpected Hello after the handshake".into()),
        1 => Err("unexpected Proof after the handshake".into()),
        other => Err(format!("unknown frame type {other}")),
    }
}

/// The next `u64` field of a `frame` frame.
fn field(bytes: &mut Bytes, frame: &str) -> Result<u64, String> {
    if bytes.len() < 8 {
        return Err(format!("truncated {frame} frame"));
    }
    Ok(bytes.get_u64_le())
}

/// The length-delimited codec with a frame cap of `limit` bytes (the handshake's framing).
pub(crate) fn codec(limit: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_type::<u32>()
        .max_frame_length(limit)
        .new_codec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(header: Header, body: &[u8]) -> Bytes {
        let mut out = Vec::new();
        header.write(&mut out);
        out.extend_from_slice(body);
        Bytes::from(out)
    }

    #[test]
    fn frames_round_trip() {
        let cases = [
            (
                Header::Request {
                    id: 7,
                    timeout_us: u64::MAX,
                },
                Frame::Request {
                    id: 7,
                    timeout_us: u64::MAX,
                    body: Bytes::from_static(b"call"),
                },
            ),
            (
                Header::OneWay,
                Frame::OneWay {
                    body: Bytes::from_static(b"call"),
                },
            ),
            (
                Header::Response { id: 1 << 40 },
                Frame::Response {
                    id: 1 << 40,
                    body: Bytes::from_static(b"call"),
                },
            ),
            (
                Header::Refused { id: 3 },
                Frame::Refused {
                    id: 3,
                    reason: "call".into(),
                },
            ),
        ];
        for (header, frame) in cases {
            assert_eq!(decode(encoded(header, b"call")), Ok(frame));
        }
        assert_eq!(
            decode(encoded(Header::Cancel { id: 9 }, b"")),
            Ok(Frame::Cancel { id: 9 })
        );
    }

    #[test]
    fn malformed_frames_are_errors_that_say_what_is_wrong() {
        let truncated = encoded(Header::Response { id: 1 }, b"").slice(..5);
        for (bytes, says) in [
            (Bytes::new(), "empty"),
            (truncated, "truncated Response"),
            (
                Bytes::from_static(&[REQUEST, 1, 0, 0, 0, 0, 0, 0, 0, 1]),
                "truncated Request",
            ),
            (encoded(Header::Cancel { id: 1 }, b"x"), "after a Cancel"),
            (encoded(Header::Refused { id: 1 }, &[0xff]), "not UTF-8"),
            (Bytes::from_static(&[0]), "unexpected Hello"),
            (Bytes::from_static(&[1]), "unexpected Proof"),
            (Bytes::from_static(&[0xc1, 0xff]), "unknown frame type 193"),
        ] {
            let err = decode(bytes).unwrap_err();
            assert!(err.contains(says), "{err:?} should say {says:?}");
        }
    }
}

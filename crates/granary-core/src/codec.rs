//! The wire codec: bincode 2 with a hard size limit on every decode.
//!
//! Everything that crosses a process boundary (call envelopes, arguments, replies, errors) is
//! encoded here and nowhere else, so that a second codec could replace bincode (which
//! RUSTSEC-2025-0141 marks unmaintained) in one place. Every decode sets `with_limit`: without
//! it a crafted length prefix makes bincode allocate what the input claims and abort the process.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The largest encoded message (envelope, argument list or reply) Granary accepts: 4 MiB.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// The first capacity of an encoding's buffer.
const SMALL_MESSAGE: usize = 64;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_MESSAGE_BYTES>()
}

/// Why a value could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The encoded value is larger than [`MAX_MESSAGE_BYTES`]; send less data per call.
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The size of the encoded value, or a lower bound of it.
        size: usize,
        /// The limit that was exceeded.
        limit: usize,
    },
    /// The value could not be encoded (a serde implementation refused it).
    #[error("cannot encode value: {0}")]
    Encode(String),
    /// The bytes are not a valid encoding of the expected type: the peer runs another version
    /// of the grain interface, or the bytes are corrupt.
    #[error("cannot decode {type_name}: {reason}")]
    Decode {
        /// The Rust type that was expected.
        type_name: &'static str,
        /// What bincode reported.
        reason: String,
    },
}

/// Encodes a value with the wire codec.
///
/// # Errors
/// [`CodecError::TooLarge`] when the result would exceed [`MAX_MESSAGE_BYTES`],
/// [`CodecError::Encode`] when the value's `Serialize` implementation fails.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    // Most messages (arguments, replies) are small: one allocation instead of a few doublings.
    let mut bytes = Vec::with_capacity(SMALL_MESSAGE);
    encode_into(value, &mut bytes)?;
    Ok(bytes)
}

/// Appends the wire encoding of a value to `out` and returns its length: what the transport
/// uses to encode a message straight into a connection's write buffer, without a buffer of
/// its own. On error `out` is left as it was.
///
/// # Errors
/// As [`encode`].
pub fn encode_into<T: Serialize + ?Sized>(
    value: &T,
    out: &mut Vec<u8>,
) -> Result<usize, CodecError> {
    let start = out.len();
    let result = bincode::serde::encode_into_writer(value, Append(out), config());
    let size = out.len() - start;
    let error = match result {
        Ok(()) if size <= MAX_MESSAGE_BYTES => return Ok(size),
        Ok(()) => CodecError::TooLarge {
            size,
            limit: MAX_MESSAGE_BYTES,
        },
        Err(bincode::error::EncodeError::Other(_) | bincode::error::EncodeError::UnexpectedEnd) => {
            CodecError::TooLarge {
                size: MAX_MESSAGE_BYTES + 1,
                limit: MAX_MESSAGE_BYTES,
            }
        }
        Err(other) => CodecError::Encode(other.to_string()),
    };
    out.truncate(start);
    Err(error)
}

/// bincode's writer that appends to a `Vec`.
struct Append<'a>(&'a mut Vec<u8>);

impl bincode::enc::write::Writer for Append<'_> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }
}

/// Decodes a value with the wire codec, refusing input larger than [`MAX_MESSAGE_BYTES`] and
/// any length prefix that claims more than that. Trailing bytes are an error.
///
/// # Errors
/// [`CodecError::TooLarge`] for oversized input, [`CodecError::Decode`] for anything malformed.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    decode_borrowed(bytes)
}

/// As [`decode`], for a value that borrows from `bytes` (`&str` and `&[u8]` fields): what the
/// receiving side of the transport uses to read a message without copying its strings.
///
/// # Errors
/// As [`decode`].
pub fn decode_borrowed<'de, T: serde::Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, CodecError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(CodecError::TooLarge {
            size: bytes.len(),
            limit: MAX_MESSAGE_BYTES,
        });
    }
    let decode_err = |reason: String| CodecError::Decode {
        type_name: std::any::type_name::<T>(),
        reason,
    };
    let (value, read) =
        bincode::serde::borrow_decode_from_slice(bytes, config()).map_err(|e| match e {
            bincode::error::DecodeError::LimitExceeded => CodecError::TooLarge {
                size: bytes.len(),
                limit: MAX_MESSAGE_BYTES,
            },
            other => decode_err(other.to_string()),
        })?;
    if read != bytes.len() {
        return Err(decode_err(format!("{} trailing bytes", bytes.len() - read)));
    }
    Ok(value)
}

#[cfg(test)]
mod tests;

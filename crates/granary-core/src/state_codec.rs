//! The format of persisted grain state: a checked envelope around named MessagePack.
//!
//! Not the wire codec. Stored state must stay readable after a grain type adds a field with
//! `#[serde(default)]` or removes one, and only a self-describing, named encoding does that
//! (`rmp-serde` in struct-map mode). Every blob is wrapped in an envelope, because a binary
//! codec decodes a corrupted blob into wrong values without an error more often than not:
//!
//! | bytes | field |
//! |-------|-------|
//! | 0..4  | magic `GRNS` |
//! | 4     | envelope format version ([`FORMAT_VERSION`]) |
//! | 5     | codec id ([`CODEC_MSGPACK_NAMED`]) |
//! | 6..10 | the grain type's state schema version, little-endian `u32` |
//! | 10..14| CRC-32 (IEEE) of the payload, little-endian |
//! | 14..  | payload |
//!
//! A grain type declares its schema version ([`Grain::STATE_VERSION`]) and upgrade steps
//! ([`Grain::upgrade_state`]). Loading a blob of an older version runs the steps one version at
//! a time; the next write stores the current version. A blob that fails any check is reported as
//! a [`StateError`] and is never replaced by default state.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::grain::Grain;

/// The envelope's first four bytes.
pub const MAGIC: [u8; 4] = *b"GRNS";
/// The envelope format this build writes and reads.
pub const FORMAT_VERSION: u8 = 1;
/// Codec id of named MessagePack (`rmp-serde` struct-map mode).
pub const CODEC_MSGPACK_NAMED: u8 = 1;
/// Length of the envelope header.
pub const HEADER_LEN: usize = 14;

/// Why a stored state blob could not be read. The blob is left as it is: fix the data, or
/// deploy a build that knows its format or schema version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum StateError {
    /// The blob is shorter than the envelope header.
    #[error("blob of {len} bytes is shorter than the {HEADER_LEN}-byte state envelope")]
    Truncated {
        /// The blob's length.
        len: usize,
    },
    /// The blob does not start with the envelope magic: not written by Granary, or damaged.
    #[error("blob does not start with the state envelope magic (not Granary state, or damaged)")]
    BadMagic,
    /// The envelope format is unknown to this build (written by a newer Granary).
    #[error("unknown state envelope format {0}; this build reads format {FORMAT_VERSION}")]
    UnknownFormat(u8),
    /// The payload codec is unknown to this build.
    #[error("unknown state codec id {0}; this build reads codec {CODEC_MSGPACK_NAMED}")]
    UnknownCodec(u8),
    /// The payload does not match its checksum: the bytes were damaged.
    #[error("state payload checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum {
        /// The CRC-32 in the envelope.
        stored: u32,
        /// The CRC-32 of the payload as found.
        computed: u32,
    },
    /// The blob was written by a newer schema version of the grain type than this build knows.
    #[error(
        "state has schema version {stored}, newer than the {known} this build knows: deploy the newer grain code"
    )]
    NewerSchema {
        /// The version in the envelope.
        stored: u32,
        /// The grain type's current version in this build.
        known: u32,
    },
    /// An upgrade step failed.
    #[error("upgrading state from schema version {from} failed: {reason}")]
    Upgrade {
        /// The version the step started from.
        from: u32,
        /// What the step reported.
        reason: String,
    },
    /// The payload is not a valid encoding of the state type.
    #[error("state payload (schema version {schema}) does not decode: {reason}")]
    Payload {
        /// The schema version the payload was decoded as.
        schema: u32,
        /// The codec's message.
        reason: String,
    },
    /// The state could not be serialized.
    #[error("state does not serialize: {0}")]
    Serialize(String),
}

/// The payload of a stored state at some schema version, handed to upgrade steps.
///
/// An upgrade step decodes it as the old shape and encodes the next one:
///
/// ```
/// # use granary_core::state_codec::StateBlob;
/// # #[derive(serde::Serialize, serde::Deserialize)] struct V1 { hp: i32 }
/// # #[derive(serde::Serialize, serde::Deserialize)] struct V2 { health: i64 }
/// fn upgrade(from: u32, blob: &StateBlob) -> Result<StateBlob, String> {
///     match from {
///         1 => {
///             let old: V1 = blob.decode().map_err(|e| e.to_string())?;
///             StateBlob::encode(&V2 { health: i64::from(old.hp) }).map_err(|e| e.to_string())
///         }
///         _ => Err(format!("no upgrade step from version {from}")),
///     }
/// }
/// # let v1 = StateBlob::encode(&V1 { hp: 7 }).unwrap();
/// # let v2: V2 = upgrade(1, &v1).unwrap().decode().unwrap();
/// # assert_eq!(v2.health, 7);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateBlob {
    payload: Vec<u8>,
}

impl StateBlob {
    /// Encodes `value` as named MessagePack.
    ///
    /// # Errors
    /// [`StateError::Serialize`] if `value`'s `Serialize` implementation fails.
    pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Self, StateError> {
        rmp_serde::to_vec_named(value)
            .map(|payload| Self { payload })
            .map_err(|e| StateError::Serialize(e.to_string()))
    }

    /// Decodes the payload as `T`.
    ///
    /// # Errors
    /// [`StateError::Payload`] (schema 0) if the payload is not a valid `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, StateError> {
        rmp_serde::from_slice(&self.payload).map_err(|e| StateError::Payload {
            schema: 0,
            reason: e.to_string(),
        })
    }

    /// The raw payload bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.payload
    }
}

/// Wraps `payload` in an envelope of `schema` version.
#[must_use]
pub fn seal(schema: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC);
    out.push(FORMAT_VERSION);
    out.push(CODEC_MSGPACK_NAMED);
    out.extend_from_slice(&schema.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Checks an envelope and returns its schema version and payload.
///
/// # Errors
/// The [`StateError`] naming the check that failed.
pub fn open(blob: &[u8]) -> Result<(u32, &[u8]), StateError> {
    let Some((header, payload)) = blob.split_at_checked(HEADER_LEN) else {
        return Err(StateError::Truncated { len: blob.len() });
    };
    if header[..4] != MAGIC {
        return Err(StateError::BadMagic);
    }
    if header[4] != FORMAT_VERSION {
        return Err(StateError::UnknownFormat(header[4]));
    }
    if header[5] != CODEC_MSGPACK_NAMED {
        return Err(StateError::UnknownCodec(header[5]));
    }
    let schema = u32::from_le_bytes([header[6], header[7], header[8], header[9]]);
    let stored = u32::from_le_bytes([header[10], header[11], header[12], header[13]]);
    let computed = crc32fast::hash(payload);
    if stored != computed {
        return Err(StateError::Checksum { stored, computed });
    }
    Ok((schema, payload))
}

/// Encodes `state` of grain type `G` in an envelope of `G::STATE_VERSION`.
///
/// # Errors
/// [`StateError::Serialize`] if the state's `Serialize` implementation fails.
pub fn encode<G: Grain>(state: &G::State) -> Result<Vec<u8>, StateError> {
    let payload =
        rmp_serde::to_vec_named(state).map_err(|e| StateError::Serialize(e.to_string()))?;
    Ok(seal(G::STATE_VERSION, &payload))
}

/// Decodes a stored state of grain type `G`, running its upgrade steps if the blob has an older
/// schema version.
///
/// # Errors
/// A [`StateError`]: a failed envelope check, a newer schema version, a failed upgrade step or
/// a payload that is not a valid `G::State`.
pub fn decode<G: Grain>(blob: &[u8]) -> Result<G::State, StateError> {
    let (mut schema, payload) = open(blob)?;
    let known = G::STATE_VERSION;
    if schema > known {
        return Err(StateError::NewerSchema {
            stored: schema,
            known,
        });
    }
    if schema == known {
        return decode_payload(schema, payload);
    }
    let mut step = StateBlob {
        payload: payload.to_vec(),
    };
    while schema < known {
        step = G::upgrade_state(schema, &step).map_err(|reason| StateError::Upgrade {
            from: schema,
            reason,
        })?;
        schema += 1;
    }
    decode_payload(schema, &step.payload)
}

fn decode_payload<S: DeserializeOwned>(schema: u32, payload: &[u8]) -> Result<S, StateError> {
    rmp_serde::from_slice(payload).map_err(|e| StateError::Payload {
        schema,
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests;

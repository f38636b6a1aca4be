//! The codec of persisted grain state: named MessagePack (`rmp-serde` struct-map mode).
//!
//! Not the wire codec: stored state must stay readable after a grain type adds a field with
//! `#[serde(default)]` or removes one, and only a self-describing, named encoding does that.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::StorageError;

/// Encodes a grain state for storage.
///
/// # Errors
/// [`StorageError::Serialize`] if the state's `Serialize` implementation fails.
pub fn encode<S: Serialize + ?Sized>(state: &S) -> Result<Vec<u8>, StorageError> {
    rmp_serde::to_vec_named(state).map_err(|e| StorageError::Serialize(e.to_string()))
}

/// Decodes a stored grain state.
///
/// # Errors
/// [`StorageError::Corrupt`] if the bytes are not a valid encoding of `S`.
pub fn decode<S: DeserializeOwned>(bytes: &[u8]) -> Result<S, StorageError> {
    rmp_serde::from_slice(bytes).map_err(|e| StorageError::Corrupt(e.to_string()))
}

#[cfg(test)]
mod tests;

//! The grain directory: which activation on which silo a grain has.

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::error::StorageError;
use crate::id::{ActivationId, GrainId, SiloId};

/// Where one activation of a grain lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GrainAddress {
    /// The grain.
    pub grain: GrainId,
    /// The silo hosting the activation.
    pub silo: SiloId,
    /// The activation.
    pub activation: ActivationId,
}

/// The grain directory: at most one registered activation per grain. Entries are created by
/// [`StateStore::claim`](crate::provider::StateStore::claim), which claims and loads in one
/// step; the store's fence checks the entry on every commit.
pub trait GrainDirectory: Send + Sync + 'static {
    /// The registered activation of `grain`, if any.
    ///
    /// # Errors
    /// [`StorageError::Unavailable`] if the directory cannot be reached.
    fn lookup(&self, grain: &GrainId) -> BoxFuture<'_, Result<Option<GrainAddress>, StorageError>>;

    /// Removes the entry of `address.grain` if it still equals `address`.
    ///
    /// # Errors
    /// [`StorageError::Unavailable`] if the directory cannot be reached.
    fn unregister(&self, address: &GrainAddress) -> BoxFuture<'_, Result<(), StorageError>>;
}

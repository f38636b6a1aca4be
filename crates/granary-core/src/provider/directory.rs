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

/// The grain directory: at most one registered activation per grain, changed only by
/// compare-and-set. Registering is the activation's claim on the grain; the state store's
/// fence checks it on every commit.
pub trait GrainDirectory: Send + Sync + 'static {
    /// Registers `address` if the grain has no entry, or if its entry equals `replace` (a
    /// stale entry the caller knows to be dead). Returns the entry that holds afterwards: the
    /// caller's own address if it won, the existing one otherwise.
    ///
    /// # Errors
    /// [`StorageError::Unavailable`] if the directory cannot be reached.
    fn register(
        &self,
        address: GrainAddress,
        replace: Option<GrainAddress>,
    ) -> BoxFuture<'_, Result<GrainAddress, StorageError>>;

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

//! [`Client`]: calls grains from plain tokio code.

use std::fmt;
use std::sync::Arc;

use granary_core::{GrainInterface, GrainKey, Invoker, typed_ref};

/// A handle that creates grain references, for code outside any grain (a game front-end task,
/// a test). Cheap to clone.
#[derive(Clone)]
pub struct Client {
    invoker: Arc<dyn Invoker>,
}

impl Client {
    pub(crate) fn new(invoker: Arc<dyn Invoker>) -> Self {
        Self { invoker }
    }

    /// A reference to the grain of type `G` with `key`. The grain always exists: the first call
    /// activates it. `G` is a grain type (`PlayerGrain`) or, where only a grain interface is
    /// linked, the interface's reference (`PlayerRef`): both give the same reference.
    pub fn grain<G: GrainInterface>(&self, key: impl Into<GrainKey>) -> G::Ref {
        typed_ref::<G>(key, self.invoker.clone())
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

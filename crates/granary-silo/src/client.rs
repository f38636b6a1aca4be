//! [`Client`]: calls grains from plain tokio code.

use std::fmt;
use std::sync::Arc;

use granary_core::{
    GrainId, GrainInterface, GrainKey, GrainRef, Invoker, ObserverInterface, ObserverObject,
    RequestContext,
};

use crate::observers::{ObserverHandle, ObserverTable};

/// A handle that creates grain references, for code outside any grain (a game front-end task,
/// a test), and serves observer objects for grains to call. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    invoker: Arc<dyn Invoker>,
    context: RequestContext,
    observers: Arc<ObserverTable>,
    /// Names this client in its observers' references.
    name: Arc<str>,
}

impl Client {
    pub(crate) fn new(
        invoker: Arc<dyn Invoker>,
        observers: Arc<ObserverTable>,
        name: Arc<str>,
    ) -> Self {
        Self {
            invoker,
            context: RequestContext::new(),
            observers,
            name,
        }
    }

    /// Serves `object` (made by the generated `MatchWatcherRef::object(..)`) until the
    /// returned handle is dropped; the handle's [`reference`](ObserverHandle::reference) is
    /// what grains call (pass it to a subscribe method). One-way calls queue for the object
    /// (at most [`OBSERVER_QUEUE`](crate::observers::OBSERVER_QUEUE), then refused with
    /// `QueueFull`); requests run it at once, within the caller's deadline.
    pub fn observe<I: ObserverInterface>(&self, object: ObserverObject<I>) -> ObserverHandle<I> {
        self.observers
            .register(&self.name, object, self.invoker.clone())
    }

    /// A reference to the grain of type `G` with `key`. The grain always exists: the first call
    /// activates it. `G` is a grain type (`PlayerGrain`) or, where only a grain interface is
    /// linked, the interface's reference (`PlayerRef`): both give the same reference.
    pub fn grain<G: GrainInterface>(&self, key: impl Into<GrainKey>) -> G::Ref {
        let reference = GrainRef::new(GrainId::new(G::TYPE_NAME, key), self.invoker.clone());
        G::Ref::from(reference.with_request_context(&self.context))
    }

    /// The same client, setting `key` to `value` in the request context of every call made
    /// through its references (a session's user id, say): see
    /// [`RequestContext`](granary_core::RequestContext).
    #[must_use]
    pub fn with_context(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.context.insert(key, value);
        self
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

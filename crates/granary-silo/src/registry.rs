//! The grain type registry: type name → how to create an activation of that type.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use granary_core::{ActivationHost, ActivationId, Grain, GrainId, IdleAfter, MethodId};

use crate::activation::{Activation, ActivationEntry};
use crate::shared::Shared;
use crate::workers::{MakeGrain, WorkerPool};

/// Creates activations of one grain type.
pub(crate) trait GrainFactory: Send + Sync + 'static {
    /// A new activation in the `Activating` phase; the caller inserts it and starts it.
    /// `host` is what its grain context calls (timers, deactivation, the store).
    fn create(
        &self,
        id: GrainId,
        shared: &Arc<Shared>,
        host: Arc<dyn ActivationHost>,
    ) -> Arc<dyn ActivationEntry>;

    /// The name of the type's method `id`.
    fn method_name(&self, id: MethodId) -> Option<&'static str>;

    /// For a stateless worker type, the most activations of one key this silo runs side by
    /// side; `None` for an ordinary grain type.
    fn stateless_workers(&self) -> Option<usize>;

    /// Sets the most activations per key of a stateless worker type. Returns false for an
    /// ordinary grain type.
    fn set_stateless_workers(&self, max: usize) -> bool;
}

struct TypedFactory<G: Grain> {
    make: MakeGrain<G>,
    /// The most workers per key of a stateless worker type (0 for an ordinary grain type).
    workers: AtomicUsize,
}

impl<G: Grain> GrainFactory for TypedFactory<G> {
    fn create(
        &self,
        id: GrainId,
        shared: &Arc<Shared>,
        host: Arc<dyn ActivationHost>,
    ) -> Arc<dyn ActivationEntry> {
        if G::STATELESS_WORKER.is_some() {
            let max = self.workers.load(Ordering::Relaxed);
            return WorkerPool::new(id, max, shared, host, self.make.clone());
        }
        let grain = (self.make)(&id);
        Activation::new(grain, id, ActivationId::new(), shared, host)
    }

    fn method_name(&self, id: MethodId) -> Option<&'static str> {
        G::method(id).map(|m| m.name)
    }

    fn stateless_workers(&self) -> Option<usize> {
        G::STATELESS_WORKER.map(|_| self.workers.load(Ordering::Relaxed))
    }

    fn set_stateless_workers(&self, max: usize) -> bool {
        if G::STATELESS_WORKER.is_none() {
            return false;
        }
        self.workers.store(max, Ordering::Relaxed);
        true
    }
}

/// Grain types known to a silo, by type name.
#[derive(Default, Clone)]
pub(crate) struct Registry {
    types: HashMap<&'static str, Arc<dyn GrainFactory>>,
    /// How long each type's activations may stay idle (`G::IDLE_AFTER` unless overridden).
    idle: HashMap<&'static str, IdleAfter>,
    /// The role each type asks for (`G::ROLE`), if any.
    roles: HashMap<&'static str, &'static str>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.types.keys()).finish()
    }
}

impl Registry {
    /// Registers `G`, created for each activation by `make`. Returns false if the type name is
    /// taken.
    pub(crate) fn register<G: Grain>(
        &mut self,
        make: impl Fn(&GrainId) -> G + Send + Sync + 'static,
    ) -> bool {
        if self.types.contains_key(G::TYPE_NAME) {
            return false;
        }
        let factory = TypedFactory::<G> {
            make: Arc::new(make),
            workers: AtomicUsize::new(
                G::STATELESS_WORKER.map_or(0, granary_core::StatelessWorker::max_activations),
            ),
        };
        self.types.insert(G::TYPE_NAME, Arc::new(factory));
        self.idle.insert(G::TYPE_NAME, G::IDLE_AFTER);
        if let Some(role) = G::ROLE {
            self.roles.insert(G::TYPE_NAME, role);
        }
        true
    }

    /// Overrides how long activations of `type_name` may stay idle. Returns false if the type
    /// is not registered.
    pub(crate) fn set_idle_after(&mut self, type_name: &str, after: IdleAfter) -> bool {
        match self.idle.get_mut(type_name) {
            Some(slot) => {
                *slot = after;
                true
            }
            None => false,
        }
    }

    /// Each registered type's idle collection policy, sorted by type name.
    pub(crate) fn idle_policies(&self) -> Vec<(&'static str, IdleAfter)> {
        let mut policies: Vec<_> = self.idle.iter().map(|(n, a)| (*n, *a)).collect();
        policies.sort_unstable_by_key(|(name, _)| *name);
        policies
    }

    /// The static name of the registered type `type_name`, and the name of its method `id`.
    pub(crate) fn static_names(
        &self,
        type_name: &str,
        id: MethodId,
    ) -> Option<(&'static str, Option<&'static str>)> {
        let (name, factory) = self.types.get_key_value(type_name)?;
        Some((*name, factory.method_name(id)))
    }

    /// The name of method `id` of grain type `type_name`.
    pub(crate) fn method_name(&self, type_name: &str, id: MethodId) -> Option<&'static str> {
        self.types.get(type_name)?.method_name(id)
    }

    /// Sets the most activations per key of the stateless worker type `type_name`. Returns
    /// false if it is not a registered stateless worker type.
    pub(crate) fn set_stateless_workers(&self, type_name: &str, max: usize) -> bool {
        self.types
            .get(type_name)
            .is_some_and(|factory| factory.set_stateless_workers(max))
    }

    /// Whether `type_name` is a registered stateless worker type.
    pub(crate) fn is_stateless(&self, type_name: &str) -> bool {
        self.types
            .get(type_name)
            .is_some_and(|factory| factory.stateless_workers().is_some())
    }

    pub(crate) fn get(&self, type_name: &str) -> Option<&Arc<dyn GrainFactory>> {
        self.types.get(type_name)
    }

    /// Keeps only the types named in `hosted`; returns the first name that is not registered.
    pub(crate) fn retain(&mut self, hosted: &[&'static str]) -> Result<(), &'static str> {
        if let Some(missing) = hosted.iter().find(|n| !self.types.contains_key(*n)) {
            return Err(missing);
        }
        self.types.retain(|name, _| hosted.contains(name));
        self.idle.retain(|name, _| hosted.contains(name));
        self.roles.retain(|name, _| hosted.contains(name));
        Ok(())
    }

    /// The role each registered type asks for with `#[grain(role = "...")]`.
    pub(crate) fn roles(&self) -> impl Iterator<Item = (&'static str, &'static str)> + '_ {
        self.roles.iter().map(|(t, r)| (*t, *r))
    }

    /// The registered type names, sorted.
    pub(crate) fn type_names(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self.types.keys().copied().collect();
        names.sort_unstable();
        names
    }
}

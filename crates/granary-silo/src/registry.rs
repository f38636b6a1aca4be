//! The grain type registry: type name → how to create an activation of that type.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use granary_core::{ActivationHost, ActivationId, Grain, GrainId, IdleAfter, MethodId};

use crate::activation::{Activation, ActivationEntry};
use crate::shared::Shared;

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
}

struct TypedFactory<G, F> {
    make: F,
    _grain: std::marker::PhantomData<fn() -> G>,
}

impl<G: Grain, F: Fn(&GrainId) -> G + Send + Sync + 'static> GrainFactory for TypedFactory<G, F> {
    fn create(
        &self,
        id: GrainId,
        shared: &Arc<Shared>,
        host: Arc<dyn ActivationHost>,
    ) -> Arc<dyn ActivationEntry> {
        let grain = (self.make)(&id);
        Activation::new(grain, id, ActivationId::new(), shared, host)
    }

    fn method_name(&self, id: MethodId) -> Option<&'static str> {
        G::method(id).map(|m| m.name)
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
        let factory = TypedFactory {
            make,
            _grain: std::marker::PhantomData,
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

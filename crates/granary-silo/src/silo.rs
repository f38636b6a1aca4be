//! [`Silo`] and [`SiloBuilder`]: start a silo, call into it, shut it down.

use std::sync::Arc;

use granary_core::provider::{
    GrainDirectory, MembershipEntry, MembershipTable, SiloStatus, StateStore,
};
use granary_core::{
    Clock, Grain, GrainId, IdleAfter, Invoker, MethodId, SiloId, StorageError, SystemClock,
};
use granary_core::{Event, GrainInterface};
use granary_events::RelayBuilder;

use crate::catalog::Catalog;
use crate::client::Client;
use crate::cluster::{Cluster, ClusterConfig, ClusterHost};
use crate::collector;
use crate::config::SiloConfig;
use crate::events::SiloEvents;
use crate::filter::{CallFilter, FilterList};
use crate::invoker::{SiloInvoker, dispatch_wire};
use crate::memory::{MemoryMembership, MemoryStore};
use crate::metrics::Census;
use crate::registry::Registry;
use crate::reminders;
use crate::router::Router;
use crate::shared::Shared;
use crate::subscriptions::{Subscription, SubscriptionList};

/// Why a silo could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// Two registered grain types share a type name; give one of them another `name`.
    #[error("grain type name {0:?} is registered twice")]
    DuplicateGrainType(&'static str),
    /// The membership table could not be updated; check the membership provider.
    #[error("cannot join the membership table: {0}")]
    Membership(#[source] StorageError),
    /// The cluster transport could not listen on its address; choose a free one.
    #[error("cannot listen for other silos: {0}")]
    Listen(#[source] std::io::Error),
    /// [`SiloBuilder::idle_after`] names a grain type that is not registered; register it
    /// (before or after) or drop the override.
    #[error("idle_after is set for grain type {0:?}, which is not registered")]
    IdleAfterUnregistered(&'static str),
    /// A grain type's idle time is zero: its activations would be collected between any two
    /// calls. Give a positive duration, or `IdleAfter::Never`.
    #[error("grain type {0:?} has an idle time of zero")]
    ZeroIdleAfter(&'static str),
    /// [`SiloBuilder::hosts`] names a grain type that is not registered; register it (before
    /// or after) or drop it from the hosted types.
    #[error("the silo is to host grain type {0:?}, which is not registered")]
    HostsUnregistered(&'static str),
    /// [`SiloBuilder::stateless_workers`] gives a stateless worker type a maximum of zero
    /// activations per key: no call could ever run. Give at least 1.
    #[error("grain type {0:?} is given at most 0 stateless workers per key; give at least 1")]
    ZeroStatelessWorkers(&'static str),
    /// [`SiloBuilder::stateless_workers`] names a grain type that is not a registered
    /// stateless worker type (`#[grain(stateless_worker)]`); register it, or drop the setting.
    #[error(
        "stateless_workers is set for grain type {0:?}, which is not a registered stateless worker type"
    )]
    NotStatelessWorker(&'static str),
}

/// Why a shutdown was not clean. The silo is stopped either way.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShutdownError {
    /// Some activations did not finish deactivating within `shutdown_timeout`; their unsaved
    /// changes are lost (what they committed is safe).
    #[error("{0} activations did not deactivate within the shutdown timeout")]
    Timeout(usize),
    /// The membership table could not be told that the silo left; the row is left behind.
    #[error("cannot leave the membership table")]
    Membership(#[source] StorageError),
}

/// Configures and starts a [`Silo`].
pub struct SiloBuilder {
    config: SiloConfig,
    registry: Registry,
    duplicate: Option<&'static str>,
    store: Option<(Arc<dyn StateStore>, Arc<dyn GrainDirectory>)>,
    membership: Option<Arc<dyn MembershipTable>>,
    incoming: FilterList,
    outgoing: FilterList,
    cluster: Option<ClusterConfig>,
    idle_overrides: Vec<(&'static str, IdleAfter)>,
    worker_overrides: Vec<(&'static str, usize)>,
    clock: Arc<dyn Clock>,
    hosts: Vec<&'static str>,
    roles: Vec<String>,
    subscriptions: SubscriptionList,
    tls: Option<granary_transport::TlsConfig>,
}

impl std::fmt::Debug for SiloBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SiloBuilder")
            .field("config", &self.config)
            .field("types", &self.registry)
            .finish_non_exhaustive()
    }
}

impl Default for SiloBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl SiloBuilder {
    /// A builder with the default configuration and in-memory providers.
    #[must_use]
    pub fn new() -> Self {
        Self {
            config: SiloConfig::default(),
            registry: Registry::default(),
            duplicate: None,
            store: None,
            membership: None,
            incoming: FilterList::default(),
            outgoing: FilterList::default(),
            cluster: None,
            idle_overrides: Vec::new(),
            worker_overrides: Vec::new(),
            clock: Arc::new(SystemClock),
            hosts: Vec::new(),
            roles: Vec::new(),
            subscriptions: SubscriptionList::default(),
            tls: None,
        }
    }

    /// Replaces the configuration.
    #[must_use]
    pub fn config(mut self, config: SiloConfig) -> Self {
        self.config = config;
        self
    }

    /// Registers grain type `G`; each activation starts from `G::default()`.
    #[must_use]
    pub fn register<G: Grain + Default>(self) -> Self {
        self.register_with::<G>(|_| G::default())
    }

    /// Registers grain type `G`, created for each activation by `make` (to hand grains shared
    /// services or configuration).
    #[must_use]
    pub fn register_with<G: Grain>(
        mut self,
        make: impl Fn(&GrainId) -> G + Send + Sync + 'static,
    ) -> Self {
        if !self.registry.register::<G>(make) {
            self.duplicate = Some(G::TYPE_NAME);
        }
        self
    }

    /// Sets how long an activation of grain type `G` may go without calls before the silo
    /// deactivates it, overriding both the silo's `idle_timeout` and the type's
    /// `#[grain(idle_after = "...")]`: a [`Duration`](std::time::Duration), or
    /// [`IdleAfter::Never`] for grains that must stay active until they ask to go
    /// ([`deactivate_on_idle`](granary_core::GrainContext::deactivate_on_idle)), are deactivated
    /// with [`Silo::deactivate`], or the silo shuts down. Timers do not count as calls.
    ///
    /// `G` must be registered too (before or after); [`start`](Self::start) fails otherwise.
    #[must_use]
    pub fn idle_after<G: Grain>(mut self, after: impl Into<IdleAfter>) -> Self {
        self.idle_overrides.push((G::TYPE_NAME, after.into()));
        self
    }

    /// Lets this silo run at most `max` activations side by side of each key of the stateless
    /// worker type `G` (`#[grain(stateless_worker)]`), instead of what the type says (one per
    /// core by default).
    ///
    /// `G` must be a registered stateless worker type (registered before or after) and `max`
    /// at least 1; [`start`](Self::start) fails otherwise
    /// ([`StartError::NotStatelessWorker`], [`StartError::ZeroStatelessWorkers`]).
    #[must_use]
    pub fn stateless_workers<G: Grain>(mut self, max: usize) -> Self {
        self.worker_overrides.push((G::TYPE_NAME, max));
        self
    }

    /// Hosts grain type `G` (which must be registered too): once this is called, the silo
    /// hosts only the types named this way, not every registered one. By default a silo hosts
    /// all its registered types. The hosted types are written in the silo's membership row,
    /// and placement puts a new activation only on a silo that hosts its type; a call for a
    /// type no active silo hosts fails with [`CallError::NoHost`](granary_core::CallError::NoHost).
    #[must_use]
    pub fn hosts<G: Grain>(self) -> Self {
        self.hosts_type(G::TYPE_NAME)
    }

    /// As [`hosts`](Self::hosts), by type name (one of [`grain_types`](Self::grain_types)):
    /// for tools that read the hosted types from their settings.
    #[must_use]
    pub fn hosts_type(mut self, type_name: &'static str) -> Self {
        if !self.hosts.contains(&type_name) {
            self.hosts.push(type_name);
        }
        self
    }

    /// Gives the silo role `role` (e.g. `"sim"`), written in its membership row: grain types
    /// that ask for the role ([`ClusterConfig::require_role`]) are placed only on silos that
    /// have it. The same as [`ClusterConfig::role`].
    #[must_use]
    pub fn role(mut self, role: impl Into<String>) -> Self {
        self.roles.push(role.into());
        self
    }

    /// Uses `clock` for the wall time grains read with
    /// [`GrainContext::now`](granary_core::GrainContext::now). Default: [`SystemClock`]. Tests
    /// give a virtual clock (the test kit's `TestSilo` does) to move time forward.
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The names of the grain types registered so far, sorted (tools that host a silo use it
    /// to tell an unknown type from a known one).
    #[must_use]
    pub fn grain_types(&self) -> Vec<&'static str> {
        self.registry.type_names()
    }

    /// Uses `storage` as state store and grain directory (they are one provider: the directory
    /// entry is the fence every commit checks). Default: a fresh [`MemoryStore`].
    #[must_use]
    pub fn storage<S: StateStore + GrainDirectory>(mut self, storage: Arc<S>) -> Self {
        self.store = Some((storage.clone(), storage));
        self
    }

    /// Runs the silo as a member of a cluster: it listens on `config.listen` for the other
    /// silos, registers its address in the membership table, and calls grains hosted on other
    /// silos over the transport. The silos of one cluster share the state store (the grain
    /// directory) and the membership table: give all of them the same Redis providers.
    #[must_use]
    pub fn cluster(mut self, config: ClusterConfig) -> Self {
        self.cluster = Some(config);
        self
    }

    /// Runs the links of the silo's cluster (given with [`cluster`](Self::cluster), before or
    /// after) over TLS: to the other silos and to clients. It replaces the configuration's
    /// [`ClusterConfig::tls`]. A silo that is not in a cluster has no links: there it has no
    /// effect.
    #[must_use]
    pub fn tls(mut self, tls: granary_transport::TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Uses `membership` as the membership table. Default: a fresh [`MemoryMembership`].
    #[must_use]
    pub fn membership(mut self, membership: Arc<dyn MembershipTable>) -> Self {
        self.membership = Some(membership);
        self
    }

    /// Calls `observer` for every call the silo dispatches, with the grain, the method and
    /// whether the call arrived encoded (for metrics and tests). Keep it cheap: it runs on the
    /// call path. It is an incoming filter that only looks (in registration order with the
    /// others, see [`incoming_filter`](Self::incoming_filter)); timer ticks do not reach it.
    #[must_use]
    pub fn observe_calls(
        mut self,
        observer: impl Fn(&GrainId, MethodId, bool) + Send + Sync + 'static,
    ) -> Self {
        self.incoming.observe(Arc::new(observer));
        self
    }

    /// Adds an incoming call filter: it runs on this silo around every turn of a call,
    /// one-way call, timer tick and reminder tick, whichever path the call took (see
    /// [`CallFilter`]). Filters run in the order they were added; their `after` hooks in the
    /// reverse order.
    #[must_use]
    pub fn incoming_filter(mut self, filter: impl CallFilter) -> Self {
        self.incoming.push(filter);
        self
    }

    /// Adds an outgoing call filter: it runs before every call the silo's grains and its
    /// [`Client`] make is sent (the runtime's reminder ticks excepted), and may add to the
    /// call's request context. Filters run in the order they were added; their `after` hooks
    /// in the reverse order.
    #[must_use]
    pub fn outgoing_filter(mut self, filter: impl CallFilter) -> Self {
        self.outgoing.push(filter);
        self
    }

    /// Subscribes grain type (or interface) `G` to events of type `E`: each committed event,
    /// wherever it was published, is delivered to the grain its [`Subscription`]'s key
    /// function chooses, by the event relay of the silo that owns the event's outbox shard
    /// (so register the same subscriptions on every silo; the relay gets them from
    /// [`Silo::deliver_subscriptions`]). See the `subscriptions` section of
    /// `docs/writing-grains.md`.
    #[must_use]
    pub fn subscribe<E: Event, G: GrainInterface>(
        mut self,
        subscription: Subscription<E, G>,
    ) -> Self {
        self.subscriptions.add(subscription);
        self
    }

    /// Starts the silo on the current tokio runtime: joins the membership table, starts idle
    /// collection and opens for calls.
    ///
    /// # Errors
    /// [`StartError`] when the configuration is inconsistent or membership cannot be joined.
    pub async fn start(mut self) -> Result<Silo, StartError> {
        if let Some(name) = self.duplicate {
            return Err(StartError::DuplicateGrainType(name));
        }
        for (name, after) in std::mem::take(&mut self.idle_overrides) {
            if !self.registry.set_idle_after(name, after) {
                return Err(StartError::IdleAfterUnregistered(name));
            }
        }
        for (name, max) in std::mem::take(&mut self.worker_overrides) {
            if max == 0 {
                return Err(StartError::ZeroStatelessWorkers(name));
            }
            if !self.registry.set_stateless_workers(name, max) {
                return Err(StartError::NotStatelessWorker(name));
            }
        }
        if !self.hosts.is_empty() {
            self.registry
                .retain(&self.hosts)
                .map_err(StartError::HostsUnregistered)?;
        }
        let zero = self
            .registry
            .idle_policies()
            .into_iter()
            .find(|(_, after)| *after == IdleAfter::After(std::time::Duration::ZERO));
        if let Some((name, _)) = zero {
            return Err(StartError::ZeroIdleAfter(name));
        }
        let (store, directory) = self.store.unwrap_or_else(|| {
            let memory = Arc::new(MemoryStore::new());
            (memory.clone(), memory)
        });
        let membership = self
            .membership
            .unwrap_or_else(|| Arc::new(MemoryMembership::new()));
        let silo_id = SiloId::generate(self.config.name.clone());
        let shared = Arc::new(Shared::new(
            silo_id.clone(),
            self.config,
            store,
            directory,
            (self.incoming.build(), self.outgoing.build()),
            self.clock,
        ));
        let cluster = self.cluster.map(|mut config| {
            if let Some(tls) = self.tls {
                config.tls = Some(tls);
            }
            for role in &self.roles {
                if !config.roles.contains(role) {
                    config.roles.push(role.clone());
                }
            }
            // `#[grain(role = "...")]`, unless the configuration names another role.
            for (grain_type, role) in self.registry.roles() {
                config
                    .role_by_type
                    .entry(grain_type.to_owned())
                    .or_insert_with(|| role.to_owned());
            }
            config
        });
        if let Some(config) = &cluster {
            // A type that asks for a role this silo lacks is not hosted here, whatever is
            // registered: the membership row says so, and no silo places it here.
            let eligible: Vec<&'static str> = self
                .registry
                .type_names()
                .into_iter()
                .filter(|t| {
                    config
                        .role_by_type
                        .get(*t)
                        .is_none_or(|role| config.roles.contains(role))
                })
                .collect();
            self.registry
                .retain(&eligible)
                .map_err(StartError::HostsUnregistered)?;
        }
        let profile = Profile {
            hosts: self
                .registry
                .type_names()
                .into_iter()
                .map(str::to_owned)
                .collect(),
            roles: cluster.as_ref().map_or(self.roles, |c| c.roles.clone()),
        };
        let catalog = Catalog::new(shared.clone(), self.registry);
        let cluster = match cluster {
            Some(config) => Some(
                Cluster::bind(config, shared.clone(), membership.clone())
                    .await
                    .map_err(StartError::Listen)?,
            ),
            None => None,
        };
        let router = match &cluster {
            Some(cluster) => Router::clustered(shared.clone(), catalog, cluster.clone()),
            None => Router::alone(shared.clone(), catalog),
        };
        let silo_invoker = Arc::new(SiloInvoker::new(router.clone()));
        let invoker: Arc<dyn Invoker> = silo_invoker.clone();
        shared.set_invoker(Arc::downgrade(&invoker));
        let mut address = String::new();
        if let Some(cluster) = &cluster {
            let host: Arc<dyn ClusterHost> = silo_invoker;
            cluster.set_host(Arc::downgrade(&host));
            address = cluster.address().to_string();
            set_status(
                &*membership,
                &silo_id,
                &address,
                &profile,
                SiloStatus::Joining,
            )
            .await
            .map_err(StartError::Membership)?;
            // The lease runs from here: heartbeats while joining too.
            shared.spawn(cluster.clone().lease_loop(shared.shutdown().clone()));
            cluster.refresh().await.map_err(StartError::Membership)?;
            cluster.join().await;
        }
        set_status(
            &*membership,
            &silo_id,
            &address,
            &profile,
            SiloStatus::Active,
        )
        .await
        .map_err(StartError::Membership)?;
        if let Some(cluster) = cluster {
            cluster.refresh().await.map_err(StartError::Membership)?;
            shared.spawn(cluster.clone().refresh_loop(shared.shutdown().clone()));
            shared.spawn(cluster.probe_loop(shared.shutdown().clone()));
        }
        shared.spawn(collector::run(router.clone()));
        shared.spawn(reminders::run(router.clone(), shard_owner(&router)));
        tracing::info!(silo = %silo_id, "silo started");
        Ok(Silo {
            router,
            invoker,
            membership,
            address,
            profile,
            subscriptions: self.subscriptions,
        })
    }
}

/// What a silo's membership row says it hosts and is.
#[derive(Debug, Clone)]
struct Profile {
    /// The grain types it hosts, sorted.
    hosts: Vec<String>,
    /// Its roles.
    roles: Vec<String>,
}

/// Writes `status` into the silo's membership row, retrying compare-and-set conflicts.
async fn set_status(
    table: &dyn MembershipTable,
    silo: &SiloId,
    address: &str,
    profile: &Profile,
    status: SiloStatus,
) -> Result<(), StorageError> {
    loop {
        let snapshot = table.read().await?;
        let current = snapshot.entries.iter().find(|e| e.silo == *silo);
        if current.is_some_and(|e| e.status == SiloStatus::Dead) && status != SiloStatus::Dead {
            // Dead is final: a silo declared dead never serves again under this generation.
            return Err(StorageError::Fenced(format!(
                "silo {silo} was declared dead; dead is final"
            )));
        }
        let entry = MembershipEntry {
            suspicions: current.map(|e| e.suspicions.clone()).unwrap_or_default(),
            hosts: Some(profile.hosts.clone()),
            roles: profile.roles.clone(),
            ..MembershipEntry::new(silo.clone(), address, status)
        };
        match table.upsert(entry, snapshot.version).await {
            Ok(_) => return Ok(()),
            Err(StorageError::Conflict { .. }) => {}
            Err(err) => return Err(err),
        }
    }
}

/// A running silo: hosts activations of the registered grain types.
///
/// Dropping a silo cancels its background work without waiting; call
/// [`shutdown`](Self::shutdown) to deactivate grains (which persists what they save in
/// `on_deactivate`) within a bounded time.
pub struct Silo {
    router: Arc<Router>,
    invoker: Arc<dyn Invoker>,
    membership: Arc<dyn MembershipTable>,
    /// The transport address in a cluster; empty otherwise.
    address: String,
    /// The hosted types and roles its membership row shows.
    profile: Profile,
    /// What [`deliver_subscriptions`](Self::deliver_subscriptions) adds to a relay.
    subscriptions: SubscriptionList,
}

impl std::fmt::Debug for Silo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Silo")
            .field("router", &self.router)
            .finish_non_exhaustive()
    }
}

impl Silo {
    /// A builder with defaults.
    #[must_use]
    pub fn builder() -> SiloBuilder {
        SiloBuilder::new()
    }

    /// This silo's id.
    #[must_use]
    pub fn id(&self) -> &SiloId {
        self.router.shared().silo()
    }

    /// The active silos of the cluster as this silo last read the membership table (itself
    /// alone outside a cluster).
    #[must_use]
    pub fn members(&self) -> Vec<SiloId> {
        self.router.members()
    }

    /// Each silo's activation count as its last heartbeat said (empty outside a cluster).
    #[must_use]
    pub fn member_loads(&self) -> Vec<(SiloId, u64)> {
        self.router.member_loads()
    }

    /// Whether this silo owns outbox shard `shard`, for the event relay: each shard is owned by
    /// one active silo (rendezvous hashing over the members this silo last read), so that the
    /// relays of a cluster share the shards. Ownership moves when membership changes; the new
    /// owner may deliver an event the old one had not acknowledged yet (same id), never lose
    /// one. Outside a cluster the silo owns every shard.
    #[must_use]
    pub fn shard_owner(&self) -> Arc<dyn Fn(u32) -> bool + Send + Sync> {
        shard_owner(&self.router)
    }

    /// A handle on this silo's metrics (Prometheus text), for an HTTP endpoint.
    #[must_use]
    pub fn metrics(&self) -> crate::SiloMetrics {
        let source: std::sync::Weak<Router> = Arc::downgrade(&self.router);
        let source: std::sync::Weak<dyn Census> = source;
        crate::SiloMetrics { source }
    }

    /// A handle on this silo's readiness (in its own view: not shutting down, and in a
    /// cluster `Active` in the membership table with its lease holding), for a health endpoint.
    #[must_use]
    pub fn health(&self) -> crate::SiloHealth {
        let source: std::sync::Weak<Router> = Arc::downgrade(&self.router);
        let source: std::sync::Weak<dyn crate::health::Standing> = source;
        crate::SiloHealth { source }
    }

    /// The switch that simulates network partitions in tests: frames to and from the silos
    /// it cuts are dropped on this silo's links (see `granary_transport::Faults`). `None`
    /// outside a cluster. Not for production use.
    #[doc(hidden)]
    #[must_use]
    pub fn transport_faults(&self) -> Option<granary_transport::Faults> {
        self.router.transport_faults()
    }

    /// Where other silos reach this one (in a cluster).
    #[must_use]
    pub fn address(&self) -> Option<std::net::SocketAddr> {
        self.router.address()
    }

    /// A client whose references call grains through this silo.
    #[must_use]
    pub fn client(&self) -> Client {
        let observers = self.router.shared().observers();
        Client::new(
            self.invoker.clone(),
            observers.clone(),
            observers.client_name(),
        )
    }

    /// Adds this silo's subscriptions ([`SiloBuilder::subscribe`]) to `relay`: one sink,
    /// named `grains`, that calls the subscribed grains through this silo, for every
    /// subscribed event type, beside the type's other sinks. Give it the relay of this silo's
    /// shards (`relay.owner(silo.shard_owner())`); without subscriptions it returns `relay`
    /// as it is.
    #[must_use]
    pub fn deliver_subscriptions(&self, relay: RelayBuilder) -> RelayBuilder {
        self.subscriptions.attach(self.client(), relay)
    }

    /// Subscribes to the silo's life-cycle events (only events after this call).
    #[must_use]
    pub fn events(&self) -> SiloEvents {
        SiloEvents::new(self.router.shared().subscribe())
    }

    /// How many activations the silo holds now (activating, active or deactivating), every
    /// activation of a stateless worker key counted.
    #[must_use]
    pub fn activation_count(&self) -> usize {
        self.router.catalog().len()
    }

    /// Whether `grain` has an activation on this silo now (for a stateless worker key: at
    /// least one).
    #[must_use]
    pub fn is_active(&self, grain: &GrainId) -> bool {
        self.router.catalog().contains(grain)
    }

    /// Asks the activation of `grain` on this silo, if there is one, to deactivate once no turn
    /// of it runs (running `on_deactivate`), whatever its type's idle time, `Never` included.
    /// Calls that arrive meanwhile wait and reach the next activation, which loads the
    /// committed state. Returns whether there was an activation to ask; await
    /// [`SiloEvent::Deactivated`](crate::SiloEvent::Deactivated) (reason
    /// [`Requested`](crate::DeactivationReason::Requested)) to know it is done. For a stateless
    /// worker key, every one of its activations here is asked (one event each).
    pub fn deactivate(&self, grain: &GrainId) -> bool {
        match self.router.catalog().get(grain) {
            Some(entry) => {
                entry.request_deactivation(crate::events::DeactivationReason::Requested);
                true
            }
            None => false,
        }
    }

    /// Dispatches a call that arrived in wire form (an encoded [`Envelope`](granary_core::Envelope))
    /// and returns the encoded `Result<Vec<u8>, CallError>` reply. Malformed input yields an
    /// encoded error, never a panic.
    pub async fn dispatch_wire(&self, envelope: &[u8]) -> Vec<u8> {
        dispatch_wire(&self.router, envelope).await
    }

    /// Stops the silo, leaving the cluster gracefully: marks it `ShuttingDown` in the
    /// membership table (the others stop placing grains on it and take over its relay and
    /// reminder shards at their next read; calls it receives for grains not active on it are
    /// placed on them), admits no new activations, deactivates every grain (running
    /// `on_deactivate`, which may persist, and releasing its directory claim so that the next
    /// call activates it elsewhere at once), stops timers and background tasks, closes its
    /// links once the calls it took are answered (refusing new ones with the retryable
    /// [`CallError::ShuttingDown`](granary_core::CallError::ShuttingDown)), and marks its row
    /// `Dead`, all within `shutdown_timeout`.
    ///
    /// # Errors
    /// [`ShutdownError`] when something did not finish in time or membership was unreachable;
    /// the silo is stopped either way.
    pub async fn shutdown(self) -> Result<(), ShutdownError> {
        let (shared, catalog) = (self.router.shared(), self.router.catalog());
        let deadline = granary_core::deadline_in(shared.config().shutdown_timeout);
        catalog.stop_accepting();
        let _ = set_status(
            &*self.membership,
            shared.silo(),
            &self.address,
            &self.profile,
            SiloStatus::ShuttingDown,
        )
        .await;
        // Its own view without itself at once: calls it routes from here on are placed on the
        // others, and it owns no relay or reminder shard (the others take them over when they
        // read the table, within `membership_refresh`).
        self.router.refresh_members().await;
        let left = catalog
            .deactivate_all(shared.config().shutdown_timeout)
            .await;
        shared.shutdown().cancel();
        shared.tracker().close();
        let drained = tokio::time::timeout_at(deadline, shared.tracker().wait())
            .await
            .is_ok();
        // Closed before the row says Dead: the others and the clients cut their links to a
        // dead silo at once, which would fail the calls it is still answering.
        self.router.close_transport(deadline).await;
        let membership = set_status(
            &*self.membership,
            shared.silo(),
            &self.address,
            &self.profile,
            SiloStatus::Dead,
        )
        .await;
        tracing::info!(silo = %shared.silo(), left, drained, "silo stopped");
        if left > 0 {
            return Err(ShutdownError::Timeout(left));
        }
        membership.map_err(ShutdownError::Membership)
    }
}

impl Drop for Silo {
    fn drop(&mut self) {
        self.router.catalog().stop_accepting();
        self.router.shared().shutdown().cancel();
    }
}

/// Whether the silo of `router` owns a shard (see [`Silo::shard_owner`]).
fn shard_owner(router: &Arc<Router>) -> Arc<dyn Fn(u32) -> bool + Send + Sync> {
    let router = Arc::downgrade(router);
    Arc::new(move |shard| {
        let Some(router) = router.upgrade() else {
            return false;
        };
        // Alone, the members are this silo: it owns every shard.
        let members = router.members();
        let owner = members.iter().max_by_key(|silo| rendezvous(silo, shard));
        owner.is_none_or(|owner| owner == router.shared().silo())
    })
}

/// The rendezvous weight of `silo` for `shard`: FNV-1a over the silo's name, generation and
/// the shard, then mixed; the same on every machine.
fn rendezvous(silo: &SiloId, shard: u32) -> u64 {
    use std::hash::Hasher as _;
    let mut fnv = granary_core::FnvHasher::default();
    fnv.write(silo.name().as_bytes());
    fnv.write(&silo.generation().to_le_bytes());
    fnv.write(&shard.to_le_bytes());
    let mut hash = fnv.finish();
    // FNV alone mixes its last bytes poorly, and silos of one cluster differ little (names,
    // generations close in time): finish with the MurmurHash3 mixer.
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^ (hash >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendezvous_weights_stay_what_earlier_versions_computed() {
        // Silos of two versions share the outbox and reminder shards during a rolling
        // restart: they must agree on each shard's owner.
        let silo = SiloId::new("s0", 1_796_128_000_000);
        assert_eq!(rendezvous(&silo, 7), 0xf75e8bbd6f746c60);
    }

    #[test]
    fn rendezvous_spreads_shards_evenly_over_similar_silos() {
        // Names and generations as a cluster started in one go has them.
        let silos: Vec<SiloId> = (0..3)
            .map(|i| SiloId::new(format!("s{i}"), 1_796_128_000_000 + i))
            .collect();
        let mut owned = [0; 3];
        for shard in 0..3_000 {
            let owner = (0..3)
                .max_by_key(|&i| rendezvous(&silos[i], shard))
                .unwrap();
            owned[owner] += 1;
        }
        assert!(owned.iter().all(|&n| (850..1150).contains(&n)), "{owned:?}");
    }
}

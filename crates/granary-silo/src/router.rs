//! [`Router`]: the one place where a silo decides where a request goes, and delivers it.
//!
//! Every route asks [`Router::destination`]: a new call made through this silo (the
//! invoker), a request that arrived from elsewhere or that an activation handed back (it is
//! routed again), and the forwarding of a request whose grain another silo owns. The answer is
//! a [`Destination`]: this silo, another silo, or next to a co-location partner. A silo alone
//! and a member of a cluster are the two [`Topology`] variants behind the same methods; the
//! call path matches the variant, it never checks for an optional cluster.

use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::future::BoxFuture;

use granary_core::provider::StateStore;
use granary_core::{ActivationHost, ActivationId, CallError, GrainId, Invoker, SiloId};

use crate::activation::Routed;
use crate::catalog::Catalog;
use crate::cluster::Cluster;
use crate::events::DeactivationReason;
use crate::health::{NotReady, Standing};
use crate::metrics::{Census, Metrics};
use crate::request::Request;
use crate::shared::{Home, OwnerState, Shared};

/// Where a request goes.
#[derive(Debug)]
pub(crate) enum Destination<'a> {
    /// This silo: the grain is active here, or is to be activated here.
    Local,
    /// Another silo of the cluster.
    Remote(&'a Arc<Cluster>, SiloId),
    /// Wherever this other grain (its co-location partner) is active, which the directory
    /// tells; this silo if it is active nowhere.
    NextTo(&'a Arc<Cluster>, GrainId),
    /// Nowhere: no active silo hosts the grain's type ([`CallError::NoHost`]).
    Nowhere(CallError),
}

/// Where a request comes from, which decides how far the router may look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A new call made through this silo: placement and co-location apply.
    Call,
    /// A request already placed on this silo (it arrived from another silo or a client, or a
    /// closing activation handed it back): only a known owner elsewhere takes it away.
    Placed,
}

/// How the silo routes: alone, or as a member of a cluster.
enum Topology {
    /// The only silo on its store: every grain lives here.
    Alone,
    /// A member of a cluster: the directory cache, co-location and placement decide.
    Cluster(Arc<Cluster>),
}

/// Routes the requests of one silo and owns its catalog.
pub(crate) struct Router {
    shared: Arc<Shared>,
    catalog: Catalog,
    topology: Topology,
    /// This router, for the activations it creates (their context calls it).
    me: Weak<Router>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("silo", self.shared.silo())
            .field("clustered", &matches!(self.topology, Topology::Cluster(_)))
            .field("catalog", &self.catalog)
            .finish_non_exhaustive()
    }
}

impl Router {
    /// The router of a silo alone on its store.
    pub(crate) fn alone(shared: Arc<Shared>, catalog: Catalog) -> Arc<Self> {
        Self::new(shared, catalog, Topology::Alone)
    }

    /// The router of a member of a cluster.
    pub(crate) fn clustered(
        shared: Arc<Shared>,
        catalog: Catalog,
        cluster: Arc<Cluster>,
    ) -> Arc<Self> {
        Self::new(shared, catalog, Topology::Cluster(cluster))
    }

    /// The cluster this silo is a member of, if any.
    pub(crate) fn cluster(&self) -> Option<&Arc<Cluster>> {
        match &self.topology {
            Topology::Alone => None,
            Topology::Cluster(cluster) => Some(cluster),
        }
    }

    fn new(shared: Arc<Shared>, catalog: Catalog, topology: Topology) -> Arc<Self> {
        let router = Arc::new_cyclic(|me| Self {
            shared,
            catalog,
            topology,
            me: me.clone(),
        });
        let home: Weak<dyn Home> = router.me.clone();
        router.shared.set_home(home);
        router
    }

    /// The silo's services.
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The silo's activations.
    pub(crate) fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Where a request for `grain` goes. Alone, always here. In a cluster: here if the grain
    /// is active here, or if it is a stateless worker whose type this silo hosts (a stateless
    /// worker is served by the silo that receives the call); where the directory cache says it
    /// lives; then, for a new call (or a
    /// request placed here although this silo does not host the type), to its co-location
    /// partner's silo (new calls only) or where its type's placement puts it, among the silos
    /// that host the type.
    pub(crate) fn destination(&self, grain: &GrainId, origin: Origin) -> Destination<'_> {
        let Topology::Cluster(cluster) = &self.topology else {
            return Destination::Local;
        };
        if self.catalog.contains(grain) {
            return Destination::Local;
        }
        let type_name = grain.type_name();
        if self.catalog.is_stateless(type_name) && cluster.has_role_for(type_name) {
            return Destination::Local;
        }
        if let Some(owner) = cluster.cached_elsewhere(grain) {
            return Destination::Remote(cluster, owner);
        }
        // A silo shutting down creates no activation: its calls are placed on the others.
        let hosted_here = self.catalog.accepting()
            && self.catalog.hosts_type(grain.type_name())
            && cluster.has_role_for(grain.type_name());
        if origin == Origin::Placed && hosted_here {
            return Destination::Local;
        }
        // A request placed on a silo that does not host its type (a client's gateway) is
        // placed again, on a silo that does.
        if let Some(partner) = cluster.partner_of(grain).filter(|_| origin == Origin::Call) {
            if self.catalog.contains(&partner) {
                return Destination::Local;
            }
            return match cluster.cached_elsewhere(&partner) {
                Some(owner) => Destination::Remote(cluster, owner),
                None => Destination::NextTo(cluster, partner),
            };
        }
        let local_load = self.catalog.len() as u64;
        match cluster.place(grain, local_load, hosted_here) {
            Ok(None) => Destination::Local,
            Ok(Some(to)) => Destination::Remote(cluster, to),
            // Shutting down, with no other silo to place it on: refused as retryable.
            Err(_) if !self.catalog.accepting() => Destination::Nowhere(CallError::ShuttingDown),
            Err(err) => Destination::Nowhere(err),
        }
    }

    /// Whether this silo may serve calls now. Alone, always; in a cluster, while its lease
    /// holds (a silo that cannot renew its heartbeat must not answer from memory).
    fn serving(&self) -> Result<(), CallError> {
        match &self.topology {
            Topology::Alone => Ok(()),
            Topology::Cluster(cluster) => cluster.serving(),
        }
    }

    /// Delivers `req`, placed on this silo, to its grain's activation, creating it if there is
    /// none (or forwarding it to the silo known to own the grain); a request handed back by a
    /// closing activation is routed again, a bounded number of times.
    pub(crate) fn route(self: &Arc<Self>, req: Request) {
        match self.route_with(req, false) {
            Routed::Delivered => {}
            Routed::Turn(turn) => self.shared.spawn(async move {
                turn.await;
            }),
            // Not reached: only a caller that routes inline gives a request an inline reply,
            // and such a caller waits on the channel.
            Routed::Wait(rx) => drop(rx),
        }
    }

    /// As [`route`](Self::route); with `inline`, a turn admitted at once is handed back for the
    /// caller to run in its own task (no spawn, no thread hop). A request with an
    /// [inline](crate::request::ReplyTx::Inline) reply that is not handed back gets a channel,
    /// whose receiver is (`Routed::Wait`).
    pub(crate) fn route_with(self: &Arc<Self>, mut req: Request, inline: bool) -> Routed {
        if let Err(err) = self.serving() {
            // Its lease ran out: no reads from memory that may be stale.
            let rx = req.channel();
            req.fail(err);
            return Routed::waiting(rx);
        }
        loop {
            let (entry, created) = match self.catalog.get(&req.target) {
                Some(entry) => (entry, false),
                None => match self.destination(&req.target, Origin::Placed) {
                    Destination::Remote(cluster, owner) => {
                        // Known to live on another silo: forward instead of activating here.
                        let rx = req.channel();
                        self.forward(cluster, req, owner);
                        return Routed::waiting(rx);
                    }
                    Destination::Nowhere(err) => {
                        let rx = req.channel();
                        req.fail(err);
                        return Routed::waiting(rx);
                    }
                    Destination::Local | Destination::NextTo(..) => {
                        let host = || -> Arc<dyn ActivationHost> { self.clone() };
                        match self.catalog.activation_for(&req.target, host) {
                            Ok(found) => found,
                            Err(err) => {
                                let rx = req.channel();
                                req.fail(err);
                                return Routed::waiting(rx);
                            }
                        }
                    }
                },
            };
            let delivered = entry.clone().deliver(req, inline);
            if created {
                // Started only after the request that created it is queued in it: an activation
                // that fails at once still answers that request instead of bouncing it.
                entry.start();
            }
            match delivered {
                Ok(routed) => return routed,
                Err(back) => {
                    req = back;
                    req.attempts += 1;
                    if req.attempts > self.shared.config().max_reroutes {
                        let err = CallError::Unavailable {
                            grain: req.target.clone(),
                            attempts: req.attempts,
                        };
                        let rx = req.channel();
                        req.fail(err);
                        return Routed::waiting(rx);
                    }
                }
            }
        }
    }

    /// Forwards `req` to `to`, the silo that owns its grain.
    fn forward(&self, cluster: &Arc<Cluster>, req: Request, to: SiloId) {
        let method = match &req.kind {
            crate::request::RequestKind::Call { method, .. } => {
                self.catalog.method_name(req.target.type_name(), *method)
            }
            crate::request::RequestKind::Timer { .. } => None,
        };
        cluster.forward(req, method, to);
    }

    /// The active silos as this silo last read them (itself alone outside a cluster).
    pub(crate) fn members(&self) -> Vec<SiloId> {
        match &self.topology {
            Topology::Alone => vec![self.shared.silo().clone()],
            Topology::Cluster(cluster) => cluster.members(),
        }
    }

    /// Each silo's activation count as its last heartbeat said (empty outside a cluster).
    pub(crate) fn member_loads(&self) -> Vec<(SiloId, u64)> {
        match &self.topology {
            Topology::Alone => Vec::new(),
            Topology::Cluster(cluster) => cluster.loads(),
        }
    }

    /// Where other silos reach this one (in a cluster).
    pub(crate) fn address(&self) -> Option<SocketAddr> {
        match &self.topology {
            Topology::Alone => None,
            Topology::Cluster(cluster) => Some(cluster.address()),
        }
    }

    /// The transport's test fault switch (in a cluster).
    pub(crate) fn transport_faults(&self) -> Option<granary_transport::Faults> {
        match &self.topology {
            Topology::Alone => None,
            Topology::Cluster(cluster) => Some(cluster.faults()),
        }
    }

    /// Closes the transport (in a cluster), answering the calls already taken until
    /// `deadline` and refusing new ones with `ShuttingDown`.
    pub(crate) async fn close_transport(&self, deadline: tokio::time::Instant) {
        if let Topology::Cluster(cluster) = &self.topology {
            cluster.shutdown(deadline).await;
        }
    }

    /// Reads the membership table again (in a cluster), so that this silo's view holds what it
    /// just wrote there (its own `ShuttingDown`).
    pub(crate) async fn refresh_members(&self) {
        if let Topology::Cluster(cluster) = &self.topology
            && let Err(err) = cluster.refresh().await
        {
            tracing::warn!(cause = %err, "cannot read the membership table; keeping the last view");
        }
    }
}

impl Home for Router {
    fn remove(&self, grain: &GrainId, activation: ActivationId) {
        self.catalog.remove(grain, activation);
    }

    fn reroute(&self, req: Request) {
        match self.me.upgrade() {
            Some(me) => me.route(req),
            None => req.fail(CallError::ShuttingDown),
        }
    }

    fn owner_state<'a>(&'a self, owner: &'a SiloId) -> BoxFuture<'a, OwnerState> {
        match &self.topology {
            Topology::Alone => {
                // Alone there is one silo per store: an entry of an earlier generation of this
                // silo is a leftover of a process that crashed.
                let me = self.shared.silo();
                let state = if owner.name() == me.name() && owner.generation() < me.generation() {
                    OwnerState::Gone
                } else {
                    OwnerState::Foreign
                };
                Box::pin(futures::future::ready(state))
            }
            Topology::Cluster(cluster) => Box::pin(cluster.owner_state(owner)),
        }
    }

    fn hand_over(&self, grain: &GrainId, owner: &SiloId, requests: Vec<Request>) {
        match &self.topology {
            Topology::Cluster(cluster) => {
                cluster.learn(grain, owner);
                for req in requests {
                    self.forward(cluster, req, owner.clone());
                }
            }
            Topology::Alone => {
                // A silo alone never judges another silo alive (see `owner_state`).
                for req in requests {
                    req.fail(CallError::ActivationFailed {
                        grain: grain.clone(),
                        reason: format!("grain is owned by silo {owner}"),
                    });
                }
            }
        }
    }
}

impl ActivationHost for Router {
    fn invoker(&self) -> Arc<dyn Invoker> {
        self.shared.invoker()
    }

    fn store(&self) -> &dyn StateStore {
        &**self.shared.store()
    }

    fn set_timer(
        &self,
        grain: &GrainId,
        activation: ActivationId,
        name: &str,
        due: Duration,
        period: Option<Duration>,
    ) {
        if let Some(entry) = self.catalog.entry_of(grain, activation) {
            entry.set_timer(name, due, period);
        }
    }

    fn cancel_timer(&self, grain: &GrainId, activation: ActivationId, name: &str) {
        if let Some(entry) = self.catalog.entry_of(grain, activation) {
            entry.cancel_timer(name);
        }
    }

    fn deactivate(&self, grain: &GrainId, activation: ActivationId) {
        if let Some(entry) = self.catalog.entry_of(grain, activation) {
            entry.request_deactivation(DeactivationReason::Requested);
        }
    }

    fn max_event_size(&self) -> usize {
        self.shared.config().max_event_size
    }

    fn now(&self) -> std::time::SystemTime {
        self.shared.clock().now()
    }

    fn reminder_set(&self, grain: &GrainId, reminder: &granary_core::provider::Reminder) {
        self.shared
            .hint_reminder((grain.clone(), reminder.name.clone(), reminder.next_due_ms));
    }

    fn storage_conflict(&self, grain: &GrainId, activation: ActivationId) {
        self.shared.metrics().conflict();
        if let Some(entry) = self.catalog.entry_of(grain, activation) {
            entry.request_deactivation(DeactivationReason::StorageConflict);
        }
    }
}

impl Standing for Router {
    fn readiness(&self) -> Result<(), NotReady> {
        let in_cluster = match &self.topology {
            Topology::Alone => Ok(()),
            Topology::Cluster(cluster) => cluster.readiness(),
        };
        // A silo declared dead also stops accepting: say the cause, not the symptom.
        if in_cluster == Err(NotReady::DeclaredDead) {
            return in_cluster;
        }
        if !self.catalog.accepting() {
            return Err(NotReady::ShuttingDown);
        }
        in_cluster
    }
}

impl Census for Router {
    fn metrics(&self) -> &Metrics {
        self.shared.metrics()
    }

    fn activations_by_type(&self) -> Vec<(String, u64)> {
        self.catalog.activations_by_type()
    }

    fn queued(&self) -> usize {
        self.catalog.queued()
    }
}

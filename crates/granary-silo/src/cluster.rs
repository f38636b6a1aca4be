//! Cluster mode: silos that find each other in the membership table and call each other's
//! grains over the transport.
//!
//! A call for a grain that has no activation here goes where the directory cache says it
//! lives, or, for a grain not known to be active anywhere, where its type's [`Placement`]
//! puts it. The silo that receives it activates the grain; its claim (in the state store) is
//! the directory: if another live silo already owns the grain, the call is forwarded there (a
//! bounded number of times) and every silo on the way learns the location. Replies name the
//! silo that served the call, so callers cache it.

mod client;
mod clients;
mod detector;
mod lease;
mod placement;
mod verdict;
mod wire;

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use dashmap::DashMap;
use futures::FutureExt;
use futures::future::BoxFuture;
use granary_core::provider::{MembershipTable, SiloStatus};
use granary_core::{
    BuildGrainIdHasher, CallError, FnvHasher, GrainId, LogLimit, MethodId, Payload, SiloId,
    StorageError, codec,
};
use granary_transport::{
    Bytes, Encoded, Handler, TlsConfig, Transport, TransportConfig, TransportError,
};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use client::{ClientConfig, ClusterClient, ConnectError};
pub use placement::Placement;

use crate::events::SiloEvent;
use crate::health::NotReady;
use crate::request::{RemoteCall, Request, RequestKind};
use crate::shared::{OwnerState, Shared};
pub(crate) use clients::client_peer;
use lease::Lease;
use verdict::Liveness;
use wire::{CallOut, ClusterMessage, Outgoing, ReplyIn, Served, encode_reply};

/// How a silo joins a cluster.
#[derive(Clone)]
pub struct ClusterConfig {
    /// The cluster id: silos of other clusters are refused at the handshake.
    pub cluster: String,
    /// The shared cluster secret (at least 32 random bytes): silos without it are refused.
    pub secret: Vec<u8>,
    /// Where the silo's transport listens (`127.0.0.1:0`: a free loopback port).
    pub listen: SocketAddr,
    /// The address other silos dial, if not the one bound (behind NAT, in containers).
    pub advertise: Option<SocketAddr>,
    /// Placement of the grain types not in `placement_by_type`. Default `PreferLocal`.
    pub placement: Placement,
    /// Placement per grain type name.
    pub placement_by_type: HashMap<String, Placement>,
    /// Co-location per grain type name: a new activation of the type goes to the silo of the
    /// grain the function names (e.g. a match's players to their game's silo).
    pub colocate: HashMap<String, Colocate>,
    /// How often the silo reads the membership table. Default 1 s.
    pub membership_refresh: Duration,
    /// How many times a call may be forwarded towards its grain's owner. Default 3.
    pub max_forwards: u32,
    /// How often each silo probes every other active silo. Default 1 s.
    pub probe_interval: Duration,
    /// How long a probe may take. Default 1 s.
    pub probe_timeout: Duration,
    /// Probes a silo may miss in a row before this silo votes it dead. Default 3. (A newer
    /// generation of the silo answering at its address gets it voted dead at once.)
    ///
    /// With `probe_interval` and `probe_timeout` it also sets the silo's lease (see
    /// [`lease_window`](Self::lease_window)).
    pub missed_probes: u32,
    /// Votes that declare a silo dead (fewer only when fewer silos can vote: one suffices in a
    /// two-silo cluster). The voters are the active silos with fresh heartbeats; a suspected
    /// silo still counts as one. Default 2.
    pub votes_for_death: u32,
    /// How long a vote counts. Default 60 s.
    pub vote_expiry: Duration,
    /// This silo's roles (e.g. `"sim"`), written in its membership row. Default none.
    pub roles: Vec<String>,
    /// The role each grain type asks for, by type name: a new activation of the type goes
    /// only to an active silo that hosts the type and has the role. Types not listed go to any
    /// silo that hosts them.
    pub role_by_type: HashMap<String, String>,
    /// TLS on the silo's links, to other silos and to clients (default `None`: plain TCP). Every
    /// silo and client of the cluster needs it, or none. See [`TlsConfig`].
    pub tls: Option<TlsConfig>,
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("cluster", &self.cluster)
            .field("listen", &self.listen)
            .field("advertise", &self.advertise)
            .field("placement", &self.placement)
            .field("placement_by_type", &self.placement_by_type)
            .field("membership_refresh", &self.membership_refresh)
            .finish_non_exhaustive()
    }
}

impl ClusterConfig {
    /// The defaults for `cluster`, `secret` and `listen`.
    #[must_use]
    pub fn new(cluster: impl Into<String>, secret: impl Into<Vec<u8>>, listen: SocketAddr) -> Self {
        Self {
            cluster: cluster.into(),
            secret: secret.into(),
            listen,
            advertise: None,
            placement: Placement::default(),
            placement_by_type: HashMap::new(),
            colocate: HashMap::new(),
            membership_refresh: Duration::from_secs(1),
            max_forwards: 3,
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_secs(1),
            missed_probes: 3,
            votes_for_death: 2,
            vote_expiry: Duration::from_secs(60),
            roles: Vec::new(),
            role_by_type: HashMap::new(),
            tls: None,
        }
    }

    /// Runs the silo's links over TLS (see [`tls`](Self::tls)).
    #[must_use]
    pub fn with_tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The fast profile for tests and local demos: membership read every 100 ms, probes every
    /// 200 ms with a 200 ms timeout, dead after 2 missed probes: a crashed silo is declared dead
    /// within about a second. Production defaults ([`new`](Self::new)): 1 s, 1 s, 3 missed
    /// probes, about 4–5 s.
    #[must_use]
    pub fn test_profile(mut self) -> Self {
        self.membership_refresh = Duration::from_millis(100);
        self.probe_interval = Duration::from_millis(200);
        self.probe_timeout = Duration::from_millis(200);
        self.missed_probes = 2;
        self
    }

    /// Places grains of type `type_name` with `placement`.
    #[must_use]
    pub fn place(mut self, type_name: &str, placement: Placement) -> Self {
        self.placement_by_type
            .insert(type_name.to_owned(), placement);
        self
    }

    /// Gives this silo role `role` (written in its membership row): grain types that ask for
    /// the role (see [`require_role`](Self::require_role)) may be placed here.
    #[must_use]
    pub fn role(mut self, role: impl Into<String>) -> Self {
        let role = role.into();
        if !self.roles.contains(&role) {
            self.roles.push(role);
        }
        self
    }

    /// Places new activations of grain type `type_name` only on silos with role `role` (that
    /// also host the type). A silo with this requirement that registers the type but lacks the
    /// role does not host it (its membership row leaves the type out), so other silos place the
    /// type right even without the requirement; give it at least to every silo that registers
    /// the type.
    #[must_use]
    pub fn require_role(mut self, type_name: &str, role: impl Into<String>) -> Self {
        self.role_by_type.insert(type_name.to_owned(), role.into());
        self
    }

    /// Activates grains of type `type_name` on the silo of the grain `partner` names for them,
    /// when it is active somewhere (otherwise the type's placement applies).
    #[must_use]
    pub fn colocate(
        mut self,
        type_name: &str,
        partner: impl Fn(&GrainId) -> Option<GrainId> + Send + Sync + 'static,
    ) -> Self {
        self.colocate
            .insert(type_name.to_owned(), Arc::new(partner));
        self
    }

    /// How long a silo serves after its last successful heartbeat: `(missed_probes − 1) ×
    /// (probe_interval + probe_timeout) + probe_timeout / 2`, shorter than the earliest time
    /// the others can declare it dead (`missed_probes × probe_timeout + (missed_probes − 1) ×
    /// probe_interval`). 500 ms in the test profile, 4.5 s with the defaults.
    #[must_use]
    pub fn lease_window(&self) -> Duration {
        lease::window(self.missed_probes, self.probe_interval, self.probe_timeout)
    }

    fn placement_of(&self, type_name: &str) -> Placement {
        self.placement_by_type
            .get(type_name)
            .copied()
            .unwrap_or(self.placement)
    }
}

/// Names the grain a grain is co-located with.
pub(crate) type Colocate = Arc<dyn Fn(&GrainId) -> Option<GrainId> + Send + Sync>;

/// What the silo knows of the membership table.
#[derive(Debug, Default)]
struct View {
    /// The version of the table read.
    version: u64,
    /// Active silos, sorted: where new activations may go.
    active: Vec<SiloId>,
    /// Every row: status and transport address.
    rows: HashMap<SiloId, (SiloStatus, Option<SocketAddr>), BuildHasherDefault<FnvHasher>>,
    /// Activations per silo, from their last heartbeats.
    load: HashMap<SiloId, u64>,
    /// The hosted types (`None`: a silo that predates the list, taken to host all) and the
    /// roles of each active silo.
    profiles: HashMap<SiloId, (Option<Vec<String>>, Vec<String>)>,
}

/// What the cluster part asks of the silo above it: run the calls that arrive, and what the
/// heartbeat reports. Implemented by the invoker layer; the cluster holds it weakly.
pub(crate) trait ClusterHost: Send + Sync {
    /// Runs a call that arrived from another silo or a client, as the silo runs a local
    /// call; answers with the encoded reply (empty for a one-way call).
    fn dispatch(&self, call: RemoteCall) -> BoxFuture<'static, Result<Vec<u8>, CallError>>;
    /// The static name of the registered grain type `type_name` and the name of its method
    /// `method` (`None`: the type is not registered here).
    fn static_names(
        &self,
        type_name: &str,
        method: MethodId,
    ) -> Option<(&'static str, Option<&'static str>)>;
    /// Whether `grain` has an activation on this silo.
    fn hosts(&self, grain: &GrainId) -> bool;
    /// The activations per grain type, for the heartbeat.
    fn activations_by_type(&self) -> Vec<(String, u64)>;
    /// This silo was declared dead: admit no new activation and deactivate every one.
    fn stop(&self);
}

/// The answer to a [`ClusterMessage::Ping`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum ProbeReply {
    /// The probed silo is here.
    Here,
    /// Another silo answers at that address (a restarted process listening on its
    /// predecessor's address): the probed silo is not here, which counts as a missed probe.
    NotMe(SiloId),
}

/// A silo's view of the membership table, for clients: the active silos, and the dead ones
/// (dead is final: a client closes its links to them and fails the calls in flight there).
#[derive(Debug, Default, Serialize, Deserialize)]
struct MembersView {
    /// The table version the silo last read: the highest is the freshest view.
    version: u64,
    /// The active silos and their addresses.
    active: Vec<(SiloId, SocketAddr)>,
    /// The silos declared dead, and their addresses.
    dead: Vec<(SiloId, Option<SocketAddr>)>,
}

/// A silo's part of the cluster: its transport, its view of membership and its directory cache.
pub(crate) struct Cluster {
    me: SiloId,
    address: SocketAddr,
    transport: Transport,
    membership: Arc<dyn MembershipTable>,
    view: RwLock<Arc<View>>,
    cache: DashMap<GrainId, SiloId, BuildGrainIdHasher>,
    config: ClusterConfig,
    shared: Arc<Shared>,
    /// The silo above, set once after binding.
    host: OnceLock<Weak<dyn ClusterHost>>,
    /// Until when this silo may serve (renewed by its heartbeats).
    lease: Lease,
    /// When this silo last saw each other silo's heartbeat change.
    liveness: parking_lot::Mutex<Liveness>,
    /// The heartbeats written so far.
    beats: AtomicU64,
    /// Cancelled when this silo learns it was declared dead: its detector and lease stop.
    dead: CancellationToken,
    /// The calls from other silos and clients being answered, drained before the transport
    /// closes.
    in_flight: InFlight,
    /// Warnings of pushes dropped because a client does not keep up.
    dropped_pushes: LogLimit,
}

/// The calls that arrived and are not answered yet; once closing, new ones are refused.
#[derive(Debug, Default)]
struct InFlight {
    /// Calls being answered.
    count: AtomicUsize,
    /// Set by [`Cluster::shutdown`]: calls that arrive are refused with `ShuttingDown`.
    closing: AtomicBool,
    /// Notified when the count drops to zero.
    idle: tokio::sync::Notify,
    /// When closing began or, after that, the last call arrived (and was refused).
    last_arrival: parking_lot::Mutex<Option<Instant>>,
}

/// One call being answered; counted until dropped.
struct Answering(Arc<Cluster>);

impl Answering {
    /// Counts a call that arrived, unless the silo is closing its transport.
    fn start(cluster: Arc<Cluster>) -> Option<Self> {
        let in_flight = &cluster.in_flight;
        in_flight.count.fetch_add(1, Ordering::AcqRel);
        if in_flight.closing.load(Ordering::Acquire) {
            *in_flight.last_arrival.lock() = Some(Instant::now());
            // Checked after counting: the drain sees either this call or its refusal.
            drop(Self(cluster));
            return None;
        }
        Some(Self(cluster))
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        if self.0.in_flight.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.in_flight.idle.notify_waiters();
        }
    }
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("me", &self.me)
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Binds the transport; calls that arrive are dispatched to the host set with
    /// [`set_host`](Self::set_host) (answered `ShuttingDown` until then).
    pub(crate) async fn bind(
        config: ClusterConfig,
        shared: Arc<Shared>,
        membership: Arc<dyn MembershipTable>,
    ) -> std::io::Result<Arc<Self>> {
        let me = shared.silo().clone();
        let transport_config = TransportConfig {
            tls: config.tls.clone(),
            ..TransportConfig::new(&config.cluster, config.secret.clone(), me.clone())
        };
        let slot = Arc::new(OnceLock::new());
        let handler = Arc::new(Incoming {
            cluster: slot.clone(),
        });
        let transport = Transport::bind(transport_config, config.listen, handler).await?;
        let address = config.advertise.unwrap_or_else(|| transport.local_addr());
        // Stale after twice the time of a few missed probes (the window of the earlier
        // wall-clock rule), judged on this silo's clock.
        let stale_after = config.probe_interval * (config.missed_probes + 2) * 2;
        let cluster = Arc::new(Self {
            me,
            address,
            transport,
            membership,
            view: RwLock::new(Arc::default()),
            cache: DashMap::default(),
            lease: Lease::new(config.lease_window(), Instant::now()),
            liveness: parking_lot::Mutex::new(Liveness::new(stale_after)),
            beats: AtomicU64::new(0),
            dead: CancellationToken::new(),
            in_flight: InFlight::default(),
            dropped_pushes: LogLimit::new(crate::observers::DROPPED_LOG_INTERVAL),
            config,
            shared,
            host: OnceLock::new(),
        });
        let _ = slot.set(Arc::downgrade(&cluster));
        Ok(cluster)
    }

    /// Sets the silo that runs the calls that arrive, once.
    pub(crate) fn set_host(&self, host: Weak<dyn ClusterHost>) {
        if self.host.set(host).is_err() {
            tracing::error!("the cluster's host is set once; a second one is ignored");
        }
    }

    fn host(&self) -> Option<Arc<dyn ClusterHost>> {
        self.host.get().and_then(Weak::upgrade)
    }

    /// Whether the silo above is gone (its background loops stop).
    fn host_gone(&self) -> bool {
        self.host.get().is_none_or(|host| host.strong_count() == 0)
    }

    /// The address other silos reach this one at.
    pub(crate) fn address(&self) -> SocketAddr {
        self.address
    }

    /// The transport's test fault switch.
    pub(crate) fn faults(&self) -> granary_transport::Faults {
        self.transport.faults()
    }

    /// Reads the membership table into the view.
    pub(crate) async fn refresh(&self) -> Result<(), StorageError> {
        let snapshot = self.membership.read().await?;
        let mut view = View {
            version: snapshot.version,
            ..View::default()
        };
        match self.membership.heartbeats().await {
            Ok(beats) => {
                let mut liveness = self.liveness.lock();
                liveness.observe(beats.iter().map(|(s, b)| (s, b)), Instant::now());
                liveness.retain(&snapshot.entries);
                drop(liveness);
                view.load = beats
                    .into_iter()
                    .map(|(silo, beat)| (silo, beat.activations))
                    .collect();
            }
            Err(err) => tracing::debug!(cause = %err, "no heartbeats"),
        }
        for entry in snapshot.entries {
            if entry.status == SiloStatus::Active {
                view.active.push(entry.silo.clone());
                view.profiles.insert(
                    entry.silo.clone(),
                    (entry.hosts.clone(), entry.roles.clone()),
                );
            }
            if entry.status == SiloStatus::Dead && entry.silo != self.me {
                // Dead is final: its links close and its handshakes are refused.
                self.transport.refuse(&entry.silo);
            }
            view.rows
                .insert(entry.silo, (entry.status, entry.address.parse().ok()));
        }
        view.active
            .sort_by(|a, b| (a.name(), a.generation()).cmp(&(b.name(), b.generation())));
        let (changed, newly_dead) = {
            let mut current = self.view.write();
            if view.version < current.version {
                // Refreshes run concurrently (the periodic one, an owner check, the detector):
                // a read of an older table that finishes last must not take the view back,
                // e.g. make a silo declared dead meanwhile look active again.
                return Ok(());
            }
            let changed = current.active != view.active;
            let newly_dead = view.rows.get(&self.me).is_some_and(|(status, _)| {
                *status == SiloStatus::Dead
                    && current
                        .rows
                        .get(&self.me)
                        .is_some_and(|(s, _)| *s != SiloStatus::Dead)
            });
            *current = Arc::new(view);
            (changed.then(|| current.active.clone()), newly_dead)
        };
        // Calls in flight to another dead silo failed above, when its links closed with its
        // refusal (by silo id, not by address: a restarted process may already listen on the
        // dead one's address, and its links stay open).
        if newly_dead {
            self.declared_dead();
        }
        if let Some(active) = changed
            && !self.host_gone()
        {
            self.shared.metrics().membership_changed();
            tracing::info!(silo = %self.me, members = active.len(), "cluster membership changed");
            self.shared.emit(SiloEvent::MembersChanged(active));
        }
        Ok(())
    }

    /// This silo was declared dead: it stops serving, probing, voting and renewing its lease,
    /// and closes its links (dead is final).
    fn declared_dead(&self) {
        if self.dead.is_cancelled() {
            return;
        }
        self.dead.cancel();
        self.transport.close();
        tracing::error!(silo = %self.me, "this silo was declared dead by the cluster: it stops serving");
        if let Some(host) = self.host() {
            host.stop();
            self.shared.emit(SiloEvent::DeclaredDead);
        }
    }

    /// Whether this silo may serve calls now: its lease holds. If not, the retryable error a
    /// call fails with.
    pub(crate) fn serving(&self) -> Result<(), CallError> {
        if self.lease.holds(Instant::now()) {
            return Ok(());
        }
        Err(CallError::SiloUnavailable {
            silo: self.me.to_string(),
            reason: "the silo's membership lease ran out (it cannot reach the membership table); \
                     it serves again once it renews"
                .into(),
            outcome_unknown: false,
        })
    }

    /// Whether this silo is ready to serve, as far as the cluster part knows: not declared
    /// dead, its own row `Active` in the view it last read, and its lease holding.
    pub(crate) fn readiness(&self) -> Result<(), NotReady> {
        if self.dead.is_cancelled() {
            return Err(NotReady::DeclaredDead);
        }
        let status = self
            .view
            .read()
            .rows
            .get(&self.me)
            .map(|(status, _)| *status);
        match status {
            Some(SiloStatus::Active) => {}
            Some(SiloStatus::Dead) => return Err(NotReady::DeclaredDead),
            status => return Err(NotReady::NotActive { status }),
        }
        if self.lease.holds(Instant::now()) {
            Ok(())
        } else {
            Err(NotReady::LeaseExpired {
                window: self.lease.window(),
            })
        }
    }

    /// The lease ran out: calls are refused until it is renewed.
    fn lease_lapsed(&self) {
        tracing::warn!(silo = %self.me, window = ?self.lease.window(), "lease ran out: this silo stops serving until it renews its heartbeat");
        if !self.host_gone() {
            self.shared.emit(SiloEvent::LeaseExpired);
        }
    }

    /// The lease was renewed after it ran out: calls are admitted again.
    fn lease_renewed(&self) {
        tracing::info!(silo = %self.me, "lease renewed: this silo serves again");
        if !self.host_gone() {
            self.shared.emit(SiloEvent::LeaseRenewed);
        }
    }

    /// The active silos with their addresses.
    fn member_addresses(&self) -> Vec<(SiloId, SocketAddr)> {
        let view = self.view.read();
        view.active
            .iter()
            .filter_map(|s| Some((s.clone(), view.rows.get(s)?.1?)))
            .collect()
    }

    /// The view a client asks for: active and dead silos, and the table's version.
    fn members_view(&self) -> MembersView {
        let view = self.view.read();
        MembersView {
            version: view.version,
            active: view
                .active
                .iter()
                .filter_map(|s| Some((s.clone(), view.rows.get(s)?.1?)))
                .collect(),
            dead: view
                .rows
                .iter()
                .filter(|(_, (status, _))| *status == SiloStatus::Dead)
                .map(|(silo, (_, addr))| (silo.clone(), *addr))
                .collect(),
        }
    }

    /// The activation count of each silo, from the heartbeats this silo last read.
    pub(crate) fn loads(&self) -> Vec<(SiloId, u64)> {
        let view = self.view.read();
        let mut loads: Vec<_> = view.load.iter().map(|(s, n)| (s.clone(), *n)).collect();
        loads.sort_by(|a, b| (a.0.name(), a.0.generation()).cmp(&(b.0.name(), b.0.generation())));
        loads
    }

    /// The active silos, as this silo last read them.
    pub(crate) fn members(&self) -> Vec<SiloId> {
        self.view.read().active.clone()
    }

    /// Runs [`refresh`](Self::refresh) every `membership_refresh` until the silo stops.
    pub(crate) async fn refresh_loop(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.config.membership_refresh) => {}
                () = stop.cancelled() => return,
            }
            if let Err(err) = self.refresh().await {
                tracing::warn!(silo = %self.me, cause = %err, "cannot read the membership table; keeping the last view");
            }
        }
    }

    pub(crate) fn address_of(&self, silo: &SiloId) -> Option<SocketAddr> {
        let view = self.view.read();
        match view.rows.get(silo) {
            Some((
                SiloStatus::Active | SiloStatus::ShuttingDown | SiloStatus::Joining,
                address,
            )) => *address,
            _ => None,
        }
    }

    /// The grain a new activation of `grain` is co-located with, if its type has a partner.
    pub(crate) fn partner_of(&self, grain: &GrainId) -> Option<GrainId> {
        self.config
            .colocate
            .get(grain.type_name())
            .and_then(|partner| partner(grain))
    }

    /// Whether this silo has the role grain type `type_name` asks for (true if it asks none).
    pub(crate) fn has_role_for(&self, type_name: &str) -> bool {
        self.config
            .role_by_type
            .get(type_name)
            .is_none_or(|role| self.config.roles.contains(role))
    }

    /// Where the type's placement puts a new activation of `grain`, this silo holding
    /// `local_load` activations and able to host it if `hosted_here` (it hosts the type and
    /// has the role the type asks for): `Ok(None)` for this silo. Only active silos that host the type (and have the role the type asks for) are
    /// candidates.
    ///
    /// # Errors
    /// [`CallError::NoHost`] when no active silo hosts the type and this one does not either.
    pub(crate) fn place(
        &self,
        grain: &GrainId,
        local_load: u64,
        hosted_here: bool,
    ) -> Result<Option<SiloId>, CallError> {
        let view = self.view.read().clone();
        let type_name = grain.type_name();
        let placement = self.config.placement_of(type_name);
        let role = self.config.role_by_type.get(type_name);
        let eligible = |silo: &SiloId| {
            view.profiles.get(silo).is_some_and(|(hosts, roles)| {
                hosts
                    .as_ref()
                    .is_none_or(|types| types.iter().any(|t| t == type_name))
                    && role.is_none_or(|role| roles.contains(role))
            })
        };
        let here = hosted_here;
        let candidates: Vec<SiloId> = view
            .active
            .iter()
            .filter(|s| eligible(s) && (here || **s != self.me))
            .cloned()
            .collect();
        if candidates.is_empty() {
            // This silo before it is active in its own view (joining) still hosts what it can.
            return if here {
                Ok(None)
            } else {
                Err(CallError::NoHost {
                    grain_type: type_name.to_owned(),
                    role: role.cloned(),
                })
            };
        }
        let load = |silo: &SiloId| {
            if *silo == self.me {
                local_load
            } else {
                view.load.get(silo).copied().unwrap_or(0)
            }
        };
        // Prefer-local cannot keep a grain on a silo that does not host it: it falls back to
        // the hash, so every such silo sends a given grain to the same host.
        let placement = if !here && placement == Placement::PreferLocal {
            Placement::Hash
        } else {
            placement
        };
        let target = placement.pick(grain, &candidates, &self.me, load);
        Ok((*target != self.me).then(|| target.clone()))
    }

    /// The live silo other than this one where `partner` is active, from the directory.
    pub(crate) async fn locate(&self, partner: &GrainId) -> Option<SiloId> {
        let owner = self.shared.directory().lookup(partner).await.ok()??;
        if owner.silo == self.me || self.address_of(&owner.silo).is_none() {
            return None;
        }
        self.learn(partner, &owner.silo);
        Some(owner.silo)
    }

    /// The silo the cache says hosts `grain`, if it is another, live one.
    pub(crate) fn cached_elsewhere(&self, grain: &GrainId) -> Option<SiloId> {
        let owner = self.cache.get(grain)?.clone();
        if owner == self.me {
            return None;
        }
        let leaving = self
            .view
            .read()
            .rows
            .get(&owner)
            .is_some_and(|(status, _)| *status == SiloStatus::ShuttingDown);
        if leaving || self.address_of(&owner).is_none() {
            // A silo shutting down deactivates its grains: place the grain again (the
            // directory sends the call to the old activation while it still holds its claim).
            self.cache.remove(grain);
            return None;
        }
        Some(owner)
    }

    /// Remembers that `silo` hosts `grain`.
    pub(crate) fn learn(&self, grain: &GrainId, silo: &SiloId) {
        if self.cache.get(grain).is_some_and(|known| *known == *silo) {
            return;
        }
        if *silo == self.me {
            self.cache.remove(grain);
        } else {
            self.cache.insert(grain.clone(), silo.clone());
        }
    }

    /// Whether the owner of a claim is serving: from the view, or the table itself when the
    /// view does not know the silo yet.
    pub(crate) async fn owner_state(&self, silo: &SiloId) -> OwnerState {
        if self.address_of(silo).is_none()
            && let Err(err) = self.refresh().await
        {
            tracing::warn!(%silo, cause = %err, "cannot read membership to check a grain's owner");
            // Without the table, do not take a grain from a silo that may be alive.
            return OwnerState::Alive;
        }
        let view = self.view.read();
        match view.rows.get(silo) {
            Some((SiloStatus::Dead, _)) | None => OwnerState::Gone,
            Some(_) => OwnerState::Alive,
        }
    }

    /// Sends a call to `to` and waits for its reply. The call is encoded straight into the
    /// link's write buffer; the link is looked up once, and checked to lead to `to`: a process
    /// restarted on `to`'s address is another silo, and must not take the calls meant for its
    /// predecessor (they fail as unavailable until the predecessor is declared dead, which its
    /// successor's answers to probes bring about).
    pub(crate) async fn call(&self, to: &SiloId, call: &RemoteCall) -> Result<Payload, CallError> {
        let Some(addr) = self.address_of(to) else {
            self.cache.remove(&call.target);
            return Err(CallError::SiloUnavailable {
                silo: to.to_string(),
                reason: "not an active member of the cluster".into(),
                outcome_unknown: false,
            });
        };
        let (target, timeout) = (&call.target, call.timeout);
        if addr == self.address && *to != self.me {
            return Err(self.moved(to, &self.me, addr, target));
        }
        let sent = self
            .transport
            .request_to(
                to,
                addr,
                Encoded(&Outgoing::Call(CallOut::of(call))),
                timeout,
            )
            .await;
        match sent {
            Ok(reply) => {
                let reply = ReplyIn::decode(&reply)?;
                match &reply.host {
                    Served::Responder => self.learn(target, to),
                    Served::Other(host) => self.learn(target, host),
                    Served::Unknown => {}
                }
                if matches!(reply.result, Err(CallError::ShuttingDown)) {
                    // Its grains are moving: the next call places the grain again.
                    self.cache.remove(target);
                }
                reply.result.map(|bytes| Payload::Encoded(bytes.to_vec()))
            }
            Err(err) => Err(self.transport_error(to, target, &call.method_name, timeout, &err)),
        }
    }

    /// Sends a one-way call to `to` (checked as [`call`](Self::call) checks it).
    pub(crate) async fn send(&self, to: &SiloId, call: RemoteCall) -> Result<(), CallError> {
        let Some(addr) = self.address_of(to) else {
            return Err(CallError::SiloUnavailable {
                silo: to.to_string(),
                reason: "not an active member of the cluster".into(),
                outcome_unknown: false,
            });
        };
        let (target, timeout) = (&call.target, call.timeout);
        if addr == self.address && *to != self.me {
            return Err(self.moved(to, &self.me, addr, target));
        }
        self.transport
            .send_to(
                to,
                addr,
                Encoded(&Outgoing::Call(CallOut::of(&call))),
                timeout,
            )
            .await
            .map_err(|err| self.transport_error(to, target, &call.method_name, timeout, &err))
    }

    /// `there` listens at `to`'s address `addr` now: `to` is gone.
    fn moved(
        &self,
        to: &SiloId,
        there: &SiloId,
        addr: impl std::fmt::Display,
        grain: &GrainId,
    ) -> CallError {
        self.cache.remove(grain);
        CallError::SiloUnavailable {
            silo: to.to_string(),
            reason: format!(
                "{there} listens at {addr} now (a restarted process): {to} is gone and \
                 its grains are served again once the cluster declares it dead"
            ),
            outcome_unknown: false,
        }
    }

    fn transport_error(
        &self,
        to: &SiloId,
        grain: &GrainId,
        method: &str,
        timeout: Duration,
        err: &TransportError,
    ) -> CallError {
        match err {
            TransportError::Timeout { .. } => CallError::Timeout {
                grain: grain.clone(),
                method: method.to_owned(),
                timeout,
            },
            TransportError::OtherSilo { addr, silo } => self.moved(to, silo, addr, grain),
            TransportError::TooLarge { .. }
            | TransportError::Refused { .. }
            | TransportError::Encode { .. } => CallError::Codec {
                what: format!("call {method} on {grain}"),
                reason: err.to_string(),
            },
            TransportError::ConnectionLost { .. } => {
                self.cache.remove(grain);
                CallError::SiloUnavailable {
                    silo: to.to_string(),
                    reason: err.to_string(),
                    outcome_unknown: true,
                }
            }
            _ => {
                self.cache.remove(grain);
                CallError::SiloUnavailable {
                    silo: to.to_string(),
                    reason: err.to_string(),
                    outcome_unknown: false,
                }
            }
        }
    }

    /// Forwards a request that reached this silo to `to`, the grain's owner, answering it with
    /// the owner's reply. Timer ticks are never forwarded: they belong to a local activation.
    /// `method_name` names the call's method (`None`: unknown to this silo).
    pub(crate) fn forward(
        self: &Arc<Self>,
        req: Request,
        method_name: Option<&'static str>,
        to: SiloId,
    ) {
        self.shared.metrics().forwarded();
        if req.forwards >= self.config.max_forwards {
            let err = CallError::SiloUnavailable {
                silo: to.to_string(),
                reason: format!(
                    "the call was forwarded {} times without reaching {}",
                    req.forwards, req.target
                ),
                outcome_unknown: false,
            };
            return req.fail(err);
        }
        let Request {
            target,
            kind,
            chain,
            deadline,
            forwards,
            ..
        } = req;
        let RequestKind::Call {
            method,
            args,
            reply,
        } = kind
        else {
            return;
        };
        let method_name = method_name.unwrap_or("(unknown method)");
        let timeout = deadline.map_or(self.shared.config().call_timeout, |d| {
            d.saturating_duration_since(Instant::now())
        });
        let args = match args.into_bytes(method_name) {
            Ok(args) => args,
            Err(err) => {
                if let Some(reply) = reply {
                    let _ = reply.send(Err(err));
                }
                return;
            }
        };
        let call = RemoteCall {
            target,
            method,
            method_name: method_name.into(),
            args,
            timeout,
            chain,
            one_way: reply.is_none(),
            forwards: forwards + 1,
        };
        let cluster = self.clone();
        self.shared.spawn(async move {
            match reply {
                Some(reply) => {
                    let _ = reply.send(cluster.call(&to, &call).await);
                }
                None => {
                    if let Err(err) = cluster.send(&to, call).await {
                        tracing::warn!(%to, cause = %err, "forwarding a one-way call failed");
                    }
                }
            }
        });
    }

    /// Closes the transport: from now on calls that arrive are refused with
    /// [`CallError::ShuttingDown`] (not run: clients and silos try elsewhere); once the calls
    /// being answered are answered and none arrived for twice `membership_refresh` (since
    /// closing began: the others saw this silo leave and stopped sending to it), or at
    /// `deadline`, every link closes. A
    /// call cut by the close would fail with an unknown outcome; the drain and the quiet period
    /// are what spare the callers that.
    pub(crate) async fn shutdown(&self, deadline: Instant) {
        *self.in_flight.last_arrival.lock() = Some(Instant::now());
        self.in_flight.closing.store(true, Ordering::Release);
        let quiet = self.config.membership_refresh * 2;
        let drained = tokio::time::timeout_at(deadline, async {
            loop {
                let idle = self.in_flight.idle.notified();
                if self.in_flight.count.load(Ordering::Acquire) > 0 {
                    idle.await;
                    continue;
                }
                let since = (*self.in_flight.last_arrival.lock()).map_or(quiet, |at| at.elapsed());
                if since >= quiet {
                    break;
                }
                // Not quiet for `quiet` yet: a call may still be on its way.
                tokio::time::sleep(quiet - since).await;
            }
        })
        .await
        .is_ok();
        if !drained {
            let left = self.in_flight.count.load(Ordering::Acquire);
            tracing::warn!(silo = %self.me, left, "calls still being answered when the transport closed");
        }
        self.transport.shutdown().await;
    }
}

/// Calls that arrive from other silos.
struct Incoming {
    /// The silo's cluster part, set once it is built.
    cluster: Arc<OnceLock<Weak<Cluster>>>,
}

impl Incoming {
    /// The cluster part and the silo above it, if both are still there.
    fn live(&self) -> Option<(Arc<Cluster>, Arc<dyn ClusterHost>)> {
        let cluster = self.cluster.get()?.upgrade()?;
        let host = cluster.host()?;
        Some((cluster, host))
    }
}

impl Handler for Incoming {
    fn request(
        &self,
        from: &SiloId,
        body: Bytes,
        _timeout: Duration,
    ) -> BoxFuture<'static, Vec<u8>> {
        let live = self.live();
        let from = from.clone();
        async move {
            // Read in place: the call's strings and arguments are slices of `body`.
            let message = codec::decode_borrowed::<wire::Incoming<'_>>(&body);
            match (live, message) {
                (Some((cluster, host)), Ok(ClusterMessage::Call(call))) => {
                    let Some(_answering) = Answering::start(cluster.clone()) else {
                        return encode_reply(Err(&CallError::ShuttingDown), &Served::Unknown);
                    };
                    let call = call.into_call(|t, m| host.static_names(t, m));
                    dispatch_remote(&cluster, host, call).await
                }
                (Some((cluster, _)), Ok(ClusterMessage::Ping(target))) => {
                    let reply = if target == cluster.me {
                        ProbeReply::Here
                    } else {
                        ProbeReply::NotMe(cluster.me.clone())
                    };
                    codec::encode(&reply).unwrap_or_default()
                }
                (Some((cluster, _)), Ok(ClusterMessage::Members)) => {
                    codec::encode(&cluster.member_addresses()).unwrap_or_default()
                }
                (Some((cluster, _)), Ok(ClusterMessage::View)) => {
                    codec::encode(&cluster.members_view()).unwrap_or_default()
                }
                (Some((cluster, _)), Ok(ClusterMessage::ProbeBack { target, asker })) => {
                    // Only the silo asked probes back; the asker is the silo that asked.
                    let reached = target == cluster.me
                        && cluster.ping(&from, asker).await == detector::Probe::Answered;
                    vec![u8::from(reached)]
                }
                (_, Err(err)) => {
                    tracing::warn!(cause = %err, "malformed message from another silo");
                    let err = CallError::Codec {
                        what: "cluster message".into(),
                        reason: err.to_string(),
                    };
                    encode_reply(Err(&err), &Served::Unknown)
                }
                (None, Ok(_)) => encode_reply(Err(&CallError::ShuttingDown), &Served::Unknown),
            }
        }
        .boxed()
    }

    fn one_way(&self, _from: &SiloId, body: Bytes) {
        let Some((cluster, host)) = self.live() else {
            return;
        };
        match codec::decode_borrowed::<wire::Incoming<'_>>(&body) {
            Ok(ClusterMessage::Call(call)) => {
                let call = call.into_call(|t, m| host.static_names(t, m));
                let shared = cluster.shared.clone();
                shared.spawn(async move {
                    let _ = dispatch_remote(&cluster, host, call).await;
                });
            }
            Ok(other) => tracing::warn!(?other, "unexpected one-way cluster message"),
            Err(err) => tracing::warn!(cause = %err, "malformed message from another silo"),
        }
    }
}

/// Runs a call that arrived from another silo, and answers with its reply, naming the silo
/// that served it.
async fn dispatch_remote(
    cluster: &Cluster,
    host: Arc<dyn ClusterHost>,
    call: RemoteCall,
) -> Vec<u8> {
    let target = call.target.clone();
    let result = host.dispatch(call).await;
    let served = if host.hosts(&target) {
        Served::Responder
    } else {
        cluster
            .cache
            .get(&target)
            .map_or(Served::Unknown, |s| Served::Other(s.clone()))
    };
    encode_reply(result.as_deref(), &served)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unknown_messages_get_a_codec_error_and_other_answers_are_no_probe_answer() {
        let incoming = Incoming {
            cluster: Arc::new(OnceLock::new()),
        };
        let from = SiloId::new("a", 1);
        // A variant this build does not know (a silo of a later build), and garbage.
        for body in [vec![42, 0, 0, 0], vec![0xff; 3]] {
            let answer = incoming
                .request(&from, body.into(), Duration::from_secs(1))
                .await;
            let reply = ReplyIn::decode(&answer).expect("a reply, not a panic");
            assert!(
                matches!(reply.result, Err(CallError::Codec { .. })),
                "{reply:?}"
            );
        }
        // A silo shutting down answers a probe with an error, which is no "here".
        let ping = codec::encode(&Outgoing::Ping(from.clone())).expect("encodes");
        let answer = incoming
            .request(&from, ping.into(), Duration::from_secs(1))
            .await;
        assert!(codec::decode::<ProbeReply>(&answer).is_err());
        let here = codec::encode(&ProbeReply::Here).expect("encodes");
        assert_eq!(
            codec::decode::<ProbeReply>(&here).ok(),
            Some(ProbeReply::Here)
        );
    }
}

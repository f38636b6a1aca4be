//! [`ClusterClient`]: calls grains of a cluster from a process that hosts none (a game
//! front-end server), through silos acting as gateways.
//!
//! Every `refresh` the client asks each gateway it knows for its view of the membership table
//! (all at once, each answer awaited at most `refresh`). From the freshest view it takes the
//! active silos as its gateways; from every view, the silos declared dead. A dead gateway is
//! dropped from the list, and its links are closed and refused: the calls in flight through it
//! fail at once with [`CallError::SiloUnavailable`] (`outcome_unknown`: the call may have run
//! there), as calls between silos do, instead of waiting out their deadline. A gateway that
//! did not answer the last round (stopped, cut off, overloaded) is tried last by new calls
//! until it answers again, and so is a gateway that is not active (shutting down).
//!
//! A call every gateway refused without running it (a silo shutting down answers
//! [`CallError::ShuttingDown`]) is tried again after a short pause, transparently, until its
//! deadline: a rolling restart fails no call ([`ClusterClient::retries`] counts these rounds).
//! A call that may have run (a timeout, a link cut with the call in flight) is never retried.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::FutureExt;
use futures::future::{BoxFuture, join_all};
use granary_core::{
    CallError, Envelope, GrainId, GrainInterface, GrainKey, GrainRef, Invoker, ObserverAddress,
    ObserverInterface, ObserverObject, OutgoingCall, Payload, RequestContext, SiloId, codec,
};
use granary_transport::{Bytes, Handler, TlsConfig, Transport, TransportConfig, TransportError};
use parking_lot::RwLock;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::MembersView;
use super::wire::{CallOut, ClusterMessage, Incoming, Outgoing, ReplyIn, Served, encode_reply};
use crate::filter::{self, CallFilter, CallKind, FilterList, Filters};
use crate::observers::{ObserverHandle, ObserverTable};
use crate::request::RemoteCall;
use crate::retry::{Backoff, certainly_not_run};

/// How a [`ClusterClient`] reaches the cluster.
#[derive(Clone)]
pub struct ClientConfig {
    /// The cluster id.
    pub cluster: String,
    /// The cluster secret.
    pub secret: Vec<u8>,
    /// Silos to start from; the list is refreshed from the cluster's membership.
    pub gateways: Vec<SocketAddr>,
    /// Deadline of a call whose reference sets none. Default 30 s.
    pub call_timeout: Duration,
    /// How often the client asks its gateways for the membership (and how long it waits for
    /// each answer). A gateway declared dead is dropped, and the calls in flight through it
    /// fail, within about this after the cluster declared it dead. Default 1 s.
    pub refresh: Duration,
    /// Whether to learn gateways from the cluster's membership (default) or use only
    /// `gateways` (e.g. to pin a client to the silos of its own region). Either way the client
    /// learns which gateways were declared dead.
    pub discover: bool,
    /// TLS on the links to the gateways (default `None`: plain TCP), as the cluster's silos
    /// have it. A client needs its own certificate only when the silos are in mutual mode.
    pub tls: Option<TlsConfig>,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("cluster", &self.cluster)
            .field("gateways", &self.gateways)
            .finish_non_exhaustive()
    }
}

impl ClientConfig {
    /// The defaults for `cluster`, `secret` and the first `gateways`.
    #[must_use]
    pub fn new(
        cluster: impl Into<String>,
        secret: impl Into<Vec<u8>>,
        gateways: Vec<SocketAddr>,
    ) -> Self {
        Self {
            cluster: cluster.into(),
            secret: secret.into(),
            gateways,
            call_timeout: Duration::from_secs(30),
            refresh: Duration::from_secs(1),
            discover: true,
            tls: None,
        }
    }

    /// Reaches the gateways over TLS (see [`tls`](Self::tls)).
    #[must_use]
    pub fn with_tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }
}

/// Why a [`ClusterClient`] could not connect.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// No gateway answered; the message lists what each said. Check the addresses, the cluster
    /// id and the secret.
    #[error("no gateway of cluster {cluster:?} answered: {reasons}")]
    NoGateway {
        /// The cluster id.
        cluster: String,
        /// What each gateway said.
        reasons: String,
    },
    /// The client's own socket could not be opened.
    #[error("cannot open the client's socket: {0}")]
    Io(#[from] std::io::Error),
}

struct Inner {
    transport: Transport,
    gateways: RwLock<Vec<SocketAddr>>,
    /// The gateways that did not answer the last refresh: new calls try them last.
    silent: RwLock<Vec<SocketAddr>>,
    next: AtomicUsize,
    /// Rounds of gateways tried again after every gateway refused a call.
    retries: AtomicU64,
    config: ClientConfig,
    stop: CancellationToken,
    /// The client's transport id: what its observers' references name as the client.
    id: SiloId,
    /// The observer objects it serves (set once it knows its gateway).
    observers: Arc<OnceLock<Arc<ObserverTable>>>,
    /// The tasks that drain its observers' queues.
    tasks: TaskTracker,
    /// The gateway that holds its observers (changes when it fails over).
    home: watch::Sender<SiloId>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle is gone: close the client's connections.
        self.stop.cancel();
        self.transport.close();
    }
}

/// A client of a cluster: calls grains through gateway silos, spreading calls over them,
/// failing over to another gateway when one cannot be reached, and refreshing the gateway list
/// from the cluster's membership.
#[derive(Clone)]
pub struct ClusterClient {
    inner: Arc<Inner>,
    /// The outgoing filters added to this handle.
    filters: FilterList,
    /// What [`Self::grain`] references run: `filters`, built; `None` without any.
    outgoing: Option<Filters>,
    /// Set on the calls of every reference this handle makes.
    context: RequestContext,
}

impl std::fmt::Debug for ClusterClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterClient")
            .field("gateways", &*self.inner.gateways.read())
            .finish_non_exhaustive()
    }
}

/// What a client answers: the calls to its observers (through the gateway that holds its
/// connection); it hosts no grains.
struct ClientCalls {
    /// Set once the client knows its gateway.
    observers: Arc<OnceLock<Arc<ObserverTable>>>,
}

impl ClientCalls {
    /// The call in `body`, if it is one for an observer served here.
    fn observer_call(&self, body: &[u8]) -> Result<(Arc<ObserverTable>, RemoteCall), CallError> {
        let call = match codec::decode_borrowed::<Incoming<'_>>(body) {
            Ok(ClusterMessage::Call(call)) => call.into_call(|_, _| None),
            Ok(_) => {
                return Err(CallError::Rejected {
                    grain: granary_core::GrainId::new("client", 0),
                    reason: "a client answers only calls to its observers".into(),
                });
            }
            Err(err) => {
                return Err(CallError::Codec {
                    what: "message to a client".into(),
                    reason: err.to_string(),
                });
            }
        };
        match self.observers.get() {
            Some(table) if ObserverAddress::is_observer(&call.target) => Ok((table.clone(), call)),
            _ => Err(CallError::Rejected {
                grain: call.target,
                reason: "a client hosts no grains".into(),
            }),
        }
    }
}

impl Handler for ClientCalls {
    fn request(&self, _: &SiloId, body: Bytes, _: Duration) -> BoxFuture<'static, Vec<u8>> {
        let (table, call) = match self.observer_call(&body) {
            Ok(found) => found,
            Err(err) => {
                return futures::future::ready(encode_reply(Err(&err), &Served::Unknown)).boxed();
            }
        };
        let name = call.method_name.clone();
        let reply = table.invoke(
            call.target,
            call.method_name,
            call.method,
            Payload::Encoded(call.args),
            call.timeout,
        );
        async move {
            let result = match reply.await {
                Ok(reply) => reply.into_bytes(&name),
                Err(err) => Err(err),
            };
            encode_reply(result.as_deref(), &Served::Unknown)
        }
        .boxed()
    }

    fn one_way(&self, _: &SiloId, body: Bytes) {
        let pushed = self.observer_call(&body).and_then(|(table, call)| {
            table.send(call.target, call.method, Payload::Encoded(call.args))
        });
        if let Err(err) = pushed {
            tracing::debug!(cause = %err, "one-way message to the client not delivered");
        }
    }
}

impl ClusterClient {
    /// Connects through the first gateway that answers and learns the others from it.
    ///
    /// # Errors
    /// [`ConnectError::NoGateway`] if none answers.
    pub async fn connect(config: ClientConfig) -> Result<Self, ConnectError> {
        let id = SiloId::new(format!("client-{}", uuid_simple()), 0);
        let observers = Arc::new(OnceLock::new());
        let transport = Transport::bind(
            TransportConfig {
                tls: config.tls.clone(),
                ..TransportConfig::new(&config.cluster, config.secret.clone(), id.clone())
            },
            "127.0.0.1:0".parse().expect("a socket address"),
            Arc::new(ClientCalls {
                observers: observers.clone(),
            }),
        )
        .await?;
        let inner = Arc::new(Inner {
            transport,
            gateways: RwLock::new(config.gateways.clone()),
            silent: RwLock::new(Vec::new()),
            next: AtomicUsize::new(0),
            retries: AtomicU64::new(0),
            config,
            stop: CancellationToken::new(),
            id,
            observers,
            tasks: TaskTracker::new(),
            home: watch::Sender::new(SiloId::new("", 0)),
        });
        let mut reasons = Vec::new();
        for gateway in inner.config.gateways.clone() {
            match members(&inner, gateway).await {
                Ok(found) if !found.is_empty() => {
                    // The gateway that answered first holds the client's observers: their
                    // references name it, and it reaches them over this connection.
                    let home = match inner.transport.peer_id(gateway).await {
                        Ok(home) => home,
                        Err(err) => {
                            reasons.push(format!("{gateway}: {err}"));
                            continue;
                        }
                    };
                    inner.home.send_replace(home.clone());
                    let table = ObserverTable::new(home, inner.tasks.clone(), inner.stop.clone());
                    let _ = inner.observers.set(Arc::new(table));
                    if inner.config.discover {
                        *inner.gateways.write() = with_seeds(found, &inner.config.gateways);
                    }
                    // The client's one task, outside any silo: it ends when the client is
                    // closed or dropped.
                    tokio::spawn(refresh_loop(Arc::downgrade(&inner)));
                    return Ok(Self {
                        inner,
                        filters: FilterList::default(),
                        outgoing: None,
                        context: RequestContext::new(),
                    });
                }
                Ok(_) => reasons.push(format!("{gateway}: no active silo")),
                Err(err) => reasons.push(format!("{gateway}: {err}")),
            }
        }
        inner.transport.shutdown().await;
        Err(ConnectError::NoGateway {
            cluster: inner.config.cluster.clone(),
            reasons: reasons.join("; "),
        })
    }

    /// A reference to the grain of type `G` with `key`: a grain type (`PlayerGrain`) or a grain
    /// interface's reference (`PlayerRef`), so a front end needs only the interface crate.
    pub fn grain<G: GrainInterface>(&self, key: impl Into<GrainKey>) -> G::Ref {
        let invoker = Arc::new(ClientInvoker(self.inner.clone(), self.outgoing.clone()));
        let reference = GrainRef::new(GrainId::new(G::TYPE_NAME, key), invoker);
        G::Ref::from(reference.with_request_context(&self.context))
    }

    /// The same client (sharing its connections), setting `key` to `value` in the request
    /// context of every call made through its references (a session's user id, say): see
    /// [`RequestContext`](granary_core::RequestContext).
    #[must_use]
    pub fn with_context(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.context.insert(key, value);
        self
    }

    /// The same client (sharing its connections), running `filter` before every call made
    /// through its references is sent: it sees the call and may add to its request context or
    /// refuse it (see [`CallFilter`]). Filters run in the order they were added; their
    /// `after` hooks in the reverse order.
    #[must_use]
    pub fn outgoing_filter(mut self, filter: impl CallFilter) -> Self {
        self.filters.push(filter);
        self.outgoing = self.filters.build();
        self
    }

    /// How many times a call was tried again because every gateway refused it without running
    /// it (a silo shutting down, a grain moving): the retries the client made transparently,
    /// since it connected.
    #[must_use]
    pub fn retries(&self) -> u64 {
        self.inner.retries.load(Ordering::Relaxed)
    }

    /// Serves `object` (made by the generated `MatchWatcherRef::object(..)`) until the
    /// returned handle is dropped. Its reference names the gateway the client connected
    /// through first, which reaches the object over the client's connection; grains on any
    /// silo call it through that gateway. If the gateway dies, calls fail with `ObserverGone`:
    /// observe again (a new reference) and subscribe again.
    ///
    /// # Panics
    /// Never: `connect` succeeds only once it knows the gateway that holds the observers.
    pub fn observe<I: ObserverInterface>(&self, object: ObserverObject<I>) -> ObserverHandle<I> {
        let table = self
            .inner
            .observers
            .get()
            .expect("a connected client knows the gateway that holds its observers");
        table.register(
            self.inner.id.name(),
            object,
            Arc::new(ClientInvoker(self.inner.clone(), self.outgoing.clone())),
        )
    }

    /// The gateway that holds the client's observers, watched: it changes when that gateway
    /// leaves the cluster or dies and the client fails over to another active silo. The
    /// objects stay served; their handles' `reference()` then names the new gateway, and the
    /// client subscribes again with it (grains drop the old references when a push finds them
    /// gone, or at the end of their lease).
    #[must_use]
    pub fn observer_gateway(&self) -> watch::Receiver<SiloId> {
        self.inner.home.subscribe()
    }

    /// The gateways the client currently uses.
    #[must_use]
    pub fn gateways(&self) -> Vec<SocketAddr> {
        self.inner.gateways.read().clone()
    }

    /// Closes the client's connections.
    pub async fn close(&self) {
        self.inner.stop.cancel();
        self.inner.transport.shutdown().await;
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }
}

fn uuid_simple() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{now:x}-{}", std::process::id())
}

async fn members(inner: &Inner, gateway: SocketAddr) -> Result<Vec<SocketAddr>, TransportError> {
    let ask = codec::encode(&Outgoing::Members).unwrap_or_default();
    let reply = inner
        .transport
        .request(
            gateway,
            ask,
            inner.config.call_timeout.min(Duration::from_secs(5)),
        )
        .await?;
    let found: Vec<(SiloId, SocketAddr)> = codec::decode(&reply).unwrap_or_default();
    Ok(found.into_iter().map(|(_, addr)| addr).collect())
}

/// The active silos a gateway named, then the configured seeds it did not name (a seed may be
/// a silo that joined after that gateway last read the membership table).
fn with_seeds(mut found: Vec<SocketAddr>, seeds: &[SocketAddr]) -> Vec<SocketAddr> {
    for seed in seeds {
        if !found.contains(seed) {
            found.push(*seed);
        }
    }
    found
}

/// Refreshes the gateways until the client is closed or dropped.
async fn refresh_loop(inner: std::sync::Weak<Inner>) {
    loop {
        let Some((every, stop)) = inner.upgrade().map(|i| (i.config.refresh, i.stop.clone()))
        else {
            return;
        };
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stop.cancelled() => return,
        }
        let Some(inner) = inner.upgrade() else {
            return;
        };
        tokio::select! {
            () = refresh(&inner) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Asks every known gateway for its view at once; drops and refuses the dead gateways, and
/// (when discovering) takes the freshest view's active silos as the gateways.
async fn refresh(inner: &Inner) {
    let mut known = inner.gateways.read().clone();
    for seed in &inner.config.gateways {
        if !known.contains(seed) {
            known.push(*seed);
        }
    }
    let wait = inner.config.refresh.min(Duration::from_secs(5));
    let answers: Vec<Option<MembersView>> =
        join_all(known.iter().map(|gateway| view_of(inner, *gateway, wait))).await;
    let mut silent: Vec<SocketAddr> = known
        .iter()
        .zip(&answers)
        .filter(|(_, view)| view.is_none())
        .map(|(gateway, _)| *gateway)
        .collect();
    let views: Vec<MembersView> = answers.into_iter().flatten().collect();
    let Some(freshest) = views.iter().max_by_key(|v| v.version) else {
        *inner.silent.write() = silent;
        return;
    };
    let active: Vec<SocketAddr> = freshest.active.iter().map(|(_, addr)| *addr).collect();
    // A gateway that is not active (a seed shutting down, or restarting) is tried last.
    silent.extend(known.iter().filter(|g| !active.contains(g)));
    *inner.silent.write() = silent;
    // Dead is final, so every view's dead silos are dead (a view may just be older).
    let mut dead: HashMap<SiloId, Option<SocketAddr>> = HashMap::new();
    for view in &views {
        dead.extend(view.dead.iter().cloned());
    }
    for silo in dead.keys() {
        inner.transport.refuse(silo);
    }
    // An address is dead when a dead silo had it and no active silo has it now (a restarted
    // silo may listen on its predecessor's address).
    let dead_addrs: Vec<SocketAddr> = dead
        .values()
        .flatten()
        .filter(|addr| !active.contains(addr))
        .copied()
        .collect();
    fail_over(inner, &freshest.active).await;
    let mut gateways = inner.gateways.write();
    if inner.config.discover && !active.is_empty() {
        let seeds: Vec<SocketAddr> = inner
            .config
            .gateways
            .iter()
            .filter(|seed| !dead_addrs.contains(seed))
            .copied()
            .collect();
        *gateways = with_seeds(active, &seeds);
    } else if inner.config.discover {
        gateways.retain(|g| !dead_addrs.contains(g));
    }
}

/// Moves the client's observers to another active silo when their gateway is no longer
/// active (it left or was declared dead): the first of `active` that answers.
async fn fail_over(inner: &Inner, active: &[(SiloId, SocketAddr)]) {
    let Some(table) = inner.observers.get() else {
        return;
    };
    let home = table.gateway();
    if active.is_empty() || active.iter().any(|(silo, _)| *silo == home) {
        return;
    }
    for (silo, addr) in active {
        // Connects (the gateway reaches the client over this link) and checks who is there.
        if inner.transport.peer_id(*addr).await.ok().as_ref() == Some(silo) {
            tracing::info!(from = %home, to = %silo, "observers fail over to another gateway");
            table.set_gateway(silo.clone());
            inner.home.send_replace(silo.clone());
            return;
        }
    }
}

/// A gateway's view of the membership, if it answers within `wait`.
async fn view_of(inner: &Inner, gateway: SocketAddr, wait: Duration) -> Option<MembersView> {
    let ask = codec::encode(&Outgoing::View).ok()?;
    let reply = inner.transport.request(gateway, ask, wait).await.ok()?;
    codec::decode(&reply).ok()
}

/// The gateways a call tries, in order: those that answered the last refresh first, starting
/// at `start` in turn; the silent ones after them, as a last resort.
fn call_order(all: &[SocketAddr], silent: &[SocketAddr], start: usize) -> Vec<SocketAddr> {
    if silent.is_empty() {
        let n = all.len();
        return (0..n).map(|i| all[(start + i) % n]).collect();
    }
    let (answering, quiet): (Vec<SocketAddr>, Vec<SocketAddr>) =
        all.iter().partition(|g| !silent.contains(g));
    let (turn, rest) = if answering.is_empty() {
        (quiet, Vec::new())
    } else {
        (answering, quiet)
    };
    let n = turn.len();
    (0..n).map(|i| turn[(start + i) % n]).chain(rest).collect()
}

struct ClientInvoker(Arc<Inner>, Option<Filters>);

impl ClientInvoker {
    /// Sends `envelope` through the gateways, starting with the next in turn; moves on to
    /// another gateway when the call was certainly not run there: not sent (the gateway is
    /// unreachable), or refused with an error that says it did not run
    /// ([`certainly_not_run`]: a silo shutting down, a grain moving). When every gateway
    /// refused, it starts over after a short pause (reading the gateways again: the refresh may
    /// have learned new ones) until the call's deadline; then the last refusal is the error.
    async fn route(
        inner: Arc<Inner>,
        mut envelope: Envelope,
        one_way: bool,
    ) -> Result<Payload, CallError> {
        let mut backoff = Backoff::new(envelope.timeout);
        loop {
            let refused = match Self::route_once(&inner, &envelope, one_way).await {
                Ok(payload) => return Ok(payload),
                Err(Failed::Final(err)) => return Err(err),
                Err(Failed::Refused(err)) => err,
            };
            tracing::debug!(grain = %envelope.target, cause = %refused, "call refused by every gateway; retrying");
            if !backoff.pause(&inner.stop).await {
                return Err(refused);
            }
            inner.retries.fetch_add(1, Ordering::Relaxed);
            envelope.timeout = backoff.left();
        }
    }

    /// One round of [`route`](Self::route): each gateway in turn until one takes the call.
    /// [`Failed::Refused`] when a gateway answered with a refusal and none took the call;
    /// when no gateway could be reached at all, the failure is final (at once, as a client cut
    /// off from the cluster should learn).
    async fn route_once(
        inner: &Arc<Inner>,
        envelope: &Envelope,
        one_way: bool,
    ) -> Result<Payload, Failed> {
        let (target, method, timeout) = (
            envelope.target.clone(),
            envelope.method_name.clone(),
            envelope.timeout,
        );
        let bytes = codec::encode(&Outgoing::Call(CallOut::of_envelope(envelope)))
            .map_err(|e| CallError::Codec {
                what: format!("call {method} on {target}"),
                reason: e.to_string(),
            })
            .map_err(Failed::Final)?;
        let gateways = {
            let start = inner.next.fetch_add(1, Ordering::Relaxed);
            call_order(&inner.gateways.read(), &inner.silent.read(), start)
        };
        let mut refused = false;
        let mut last = CallError::SiloUnavailable {
            silo: "every gateway".into(),
            reason: "no gateway known".into(),
            outcome_unknown: false,
        };
        for gateway in gateways {
            let sent = if one_way {
                inner
                    .transport
                    .send(gateway, bytes.clone())
                    .await
                    .map(|()| None)
            } else {
                inner
                    .transport
                    .request(gateway, bytes.clone(), timeout)
                    .await
                    .map(Some)
            };
            match sent {
                Ok(None) => return Ok(Payload::Encoded(Vec::new())),
                Ok(Some(reply)) => {
                    let reply = ReplyIn::decode(&reply).map_err(Failed::Final)?;
                    match reply.result {
                        Ok(bytes) => return Ok(Payload::Encoded(bytes.to_vec())),
                        // Refused without running (the gateway, or the silo it forwarded
                        // to, is shutting down): another gateway may take it.
                        Err(err) if certainly_not_run(&err) => {
                            if matches!(err, CallError::ShuttingDown) {
                                // Until the refresh says otherwise, new calls try it last.
                                let mut silent = inner.silent.write();
                                if !silent.contains(&gateway) {
                                    silent.push(gateway);
                                }
                            }
                            refused = true;
                            last = err;
                        }
                        Err(err) => return Err(Failed::Final(err)),
                    }
                }
                Err(TransportError::Timeout { .. }) => {
                    return Err(Failed::Final(CallError::Timeout {
                        grain: target,
                        method,
                        timeout,
                    }));
                }
                Err(err @ TransportError::ConnectionLost { .. }) => {
                    return Err(Failed::Final(CallError::SiloUnavailable {
                        silo: gateway.to_string(),
                        reason: err.to_string(),
                        outcome_unknown: true,
                    }));
                }
                Err(err @ (TransportError::TooLarge { .. } | TransportError::Refused { .. })) => {
                    return Err(Failed::Final(CallError::Codec {
                        what: format!("call {method} on {target}"),
                        reason: err.to_string(),
                    }));
                }
                Err(err) if refused => {
                    tracing::debug!(%gateway, cause = %err, "gateway unreachable");
                }
                Err(err) => {
                    last = CallError::SiloUnavailable {
                        silo: "every gateway".into(),
                        reason: err.to_string(),
                        outcome_unknown: false,
                    };
                }
            }
        }
        Err(if refused {
            Failed::Refused(last)
        } else {
            Failed::Final(last)
        })
    }
}

/// How a round of gateways failed a call.
enum Failed {
    /// The error is the call's.
    Final(CallError),
    /// A gateway refused the call without running it: another round may succeed.
    Refused(CallError),
}

impl Invoker for ClientInvoker {
    fn invoke(&self, call: OutgoingCall) -> BoxFuture<'static, Result<Payload, CallError>> {
        let inner = self.0.clone();
        let timeout = call.timeout.unwrap_or(inner.config.call_timeout);
        let send = move |call| async move {
            let envelope = crate::request::envelope_of(call, timeout, false)?;
            Self::route(inner, envelope, false).await
        };
        match self.1.clone() {
            None => send(call).boxed(),
            Some(filters) => filter::outgoing(filters, call, CallKind::Call, send).boxed(),
        }
    }

    fn send(&self, call: OutgoingCall) -> BoxFuture<'static, Result<(), CallError>> {
        let inner = self.0.clone();
        let timeout = inner.config.call_timeout;
        let send = move |call| async move {
            let envelope = crate::request::envelope_of(call, timeout, true)?;
            Self::route(inner, envelope, true).await.map(drop)
        };
        match self.1.clone() {
            None => send(call).boxed(),
            Some(filters) => filter::outgoing(filters, call, CallKind::OneWay, send).boxed(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_client_answers_what_is_no_observer_call_with_a_clear_error() {
        let calls = ClientCalls {
            observers: Arc::new(OnceLock::new()),
        };
        let from = SiloId::new("gateway", 1);
        let answer = |body: Vec<u8>| {
            let calls = &calls;
            let from = &from;
            async move {
                let reply = calls
                    .request(from, Bytes::from(body), Duration::from_secs(1))
                    .await;
                ReplyIn::decode(&reply).map(|r| r.result.map(<[u8]>::to_vec))
            }
        };
        // Garbage, and a message kind from a later build: a codec error that says so.
        for body in [vec![0xff; 3], vec![42, 0, 0, 0]] {
            let err = answer(body).await.unwrap().unwrap_err();
            assert!(
                matches!(&err, CallError::Codec { what, .. } if what == "message to a client"),
                "{err:?}"
            );
        }
        // A message a silo would answer: refused by name.
        let members = codec::encode(&Outgoing::Members).unwrap();
        let err = answer(members).await.unwrap().unwrap_err();
        assert!(
            matches!(&err, CallError::Rejected { reason, .. } if reason.contains("observers")),
            "{err:?}"
        );
        // A one-way message of any kind is dropped, never a panic.
        calls.one_way(&from, Bytes::from(vec![0xff; 3]));
    }

    #[test]
    fn calls_take_the_answering_gateways_in_turn_and_the_silent_ones_last() {
        let g: Vec<SocketAddr> = (1..=3)
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
            .collect();
        assert_eq!(call_order(&g, &[], 4), vec![g[1], g[2], g[0]]);
        assert_eq!(call_order(&g, &[g[1]], 0), vec![g[0], g[2], g[1]]);
        assert_eq!(call_order(&g, &[g[1]], 1), vec![g[2], g[0], g[1]]);
        // All silent: in turn anyway.
        assert_eq!(call_order(&g, &g, 2), vec![g[2], g[0], g[1]]);
        assert!(call_order(&[], &[], 7).is_empty());
    }
}

//! [`Transport`]: a silo's listener and its links to the other silos.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use granary_core::{LogLimit, SiloId, deadline_in};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::TransportError;
use crate::faults::Faults;
use crate::frame::{HANDSHAKE_FRAME_LIMIT, codec};
use crate::handshake::{self, Identity};
#[cfg(doc)]
use crate::link::Encoded;
use crate::link::{Body, Handler, Link, LinkConfig};
use crate::stream::Stream;
use crate::tls::TlsConfig;

/// How a [`Transport`] identifies itself and sizes its links.
#[derive(Clone)]
pub struct TransportConfig {
    /// The cluster id; a peer of another cluster is refused.
    pub cluster: String,
    /// The shared cluster secret; a peer that cannot prove it holds it is refused. Use at least
    /// 32 random bytes.
    pub secret: Vec<u8>,
    /// This silo.
    pub silo: SiloId,
    /// The largest frame sent or accepted after the handshake (default: the wire codec's limit
    /// plus room for the frame header).
    pub frame_limit: usize,
    /// Frames waiting to be written per link before senders wait (default 4,096).
    pub send_queue: usize,
    /// Deadline of the handshake (default 5 s).
    pub handshake_timeout: Duration,
    /// Deadline of one connection attempt (default 1 s).
    pub connect_timeout: Duration,
    /// First wait after a failed connection attempt; it doubles with each failure (default
    /// 50 ms).
    pub backoff_min: Duration,
    /// Longest wait between connection attempts (default 2 s).
    pub backoff_max: Duration,
    /// Accepted connections that may be in their handshake at once (default 64). A connection
    /// accepted beyond it is closed at once, so that peers which connect and never prove
    /// anything (a port scan, a flood) cannot hold a socket and a task each until their
    /// `handshake_timeout`. Authenticated links do not count.
    pub max_pending_handshakes: usize,
    /// At most one warning per this interval about refused connections (over
    /// `max_pending_handshakes`, or a failed handshake); the next one says how many were not
    /// logged (default 10 s).
    pub refusal_log_interval: Duration,
    /// TLS on every link, dialed and accepted (default `None`: plain TCP). The peers must all
    /// have it, or all not. The TLS handshake shares `handshake_timeout` with the cluster
    /// handshake, which still runs inside it.
    pub tls: Option<TlsConfig>,
}

impl std::fmt::Debug for TransportConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransportConfig")
            .field("cluster", &self.cluster)
            .field("silo", &self.silo)
            .field("frame_limit", &self.frame_limit)
            .field("send_queue", &self.send_queue)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl TransportConfig {
    /// The defaults for `cluster`, `secret` and `silo`.
    #[must_use]
    pub fn new(cluster: impl Into<String>, secret: impl Into<Vec<u8>>, silo: SiloId) -> Self {
        Self {
            cluster: cluster.into(),
            secret: secret.into(),
            silo,
            frame_limit: granary_core::codec::MAX_MESSAGE_BYTES + 1024,
            send_queue: 4_096,
            handshake_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            max_pending_handshakes: 64,
            refusal_log_interval: Duration::from_secs(10),
            tls: None,
        }
    }
}

/// The state of the link to one peer address.
#[derive(Debug, Default)]
struct Peer {
    link: Option<Arc<Link>>,
    failures: u32,
    retry_at: Option<Instant>,
    last_error: Option<TransportError>,
}

struct Inner {
    identity: Identity,
    config: TransportConfig,
    link_config: LinkConfig,
    handler: Arc<dyn Handler>,
    peers: parking_lot::Mutex<HashMap<SocketAddr, Arc<tokio::sync::Mutex<Peer>>>>,
    /// The open links, for the common case: a request to a peer already connected takes a
    /// read lock and no await.
    open: parking_lot::RwLock<HashMap<SocketAddr, Arc<Link>>>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    local_addr: SocketAddr,
    /// Silos refused at the handshake (declared dead): links with them are closed.
    refused: parking_lot::RwLock<HashSet<SiloId>>,
    /// Every link started, dialed or accepted (closed ones are pruned as links start).
    links: parking_lot::Mutex<Vec<Weak<Link>>>,
    /// The newest link with each peer, dialed or accepted: how a gateway reaches a client that
    /// connected to it (pruned as links start).
    by_peer: parking_lot::RwLock<HashMap<SiloId, Weak<Link>>>,
    /// Permits of the connections in their handshake.
    pending: Arc<Semaphore>,
    /// Rate limit of the refusal warnings.
    refusals: LogLimit,
}

impl Inner {
    fn is_refused(&self, silo: &SiloId) -> bool {
        self.refused.read().contains(silo)
    }

    /// Starts the link of an authenticated connection and registers it.
    fn start_link(
        &self,
        wire: Framed<Stream, tokio_util::codec::LengthDelimitedCodec>,
        peer: SiloId,
        addr: String,
    ) -> Arc<Link> {
        let link = Link::start(
            wire,
            peer,
            addr,
            self.handler.clone(),
            &self.link_config,
            &self.tracker,
            &self.shutdown,
        );
        let mut links = self.links.lock();
        links.retain(|l| l.upgrade().is_some_and(|l| l.is_open()));
        links.push(Arc::downgrade(&link));
        drop(links);
        let mut by_peer = self.by_peer.write();
        by_peer.retain(|_, l| l.upgrade().is_some_and(|l| l.is_open()));
        by_peer.insert(link.peer().clone(), Arc::downgrade(&link));
        drop(by_peer);
        // A refusal that raced this handshake: the link does not survive it.
        if self.is_refused(link.peer()) {
            link.close("refused: the peer silo was declared dead");
        }
        link
    }
}

/// A silo's transport: accepts authenticated links from other silos and dials them, one link
/// per peer address, reconnecting with backoff.
#[derive(Clone)]
pub struct Transport {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("silo", &self.inner.identity.silo)
            .field("local_addr", &self.inner.local_addr)
            .finish_non_exhaustive()
    }
}

impl Transport {
    /// Listens on `addr` and serves the requests of authenticated peers with `handler`.
    ///
    /// # Errors
    /// The I/O error if `addr` cannot be bound.
    pub async fn bind(
        config: TransportConfig,
        addr: SocketAddr,
        handler: Arc<dyn Handler>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let (config_pending, config_interval) =
            (config.max_pending_handshakes, config.refusal_log_interval);
        let inner = Arc::new(Inner {
            identity: Identity {
                cluster: config.cluster.clone(),
                silo: config.silo.clone(),
                secret: config.secret.clone().into(),
            },
            link_config: LinkConfig {
                frame_limit: config.frame_limit,
                send_queue: config.send_queue,
                faults: Faults::default(),
            },
            config,
            handler,
            peers: parking_lot::Mutex::new(HashMap::new()),
            open: parking_lot::RwLock::new(HashMap::new()),
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            local_addr,
            refused: parking_lot::RwLock::new(HashSet::new()),
            links: parking_lot::Mutex::new(Vec::new()),
            by_peer: parking_lot::RwLock::new(HashMap::new()),
            pending: Arc::new(Semaphore::new(config_pending.min(Semaphore::MAX_PERMITS))),
            refusals: LogLimit::new(config_interval),
        });
        inner.tracker.spawn(accept_loop(listener, inner.clone()));
        Ok(Self { inner })
    }

    /// The address the transport listens on.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// Sends `body` to the silo at `addr` and waits for its answer, at most `timeout`. The body
    /// is bytes, or a value written with the wire codec straight into the link ([`Encoded`]).
    ///
    /// # Errors
    /// A [`TransportError`]: the peer unreachable or refusing the handshake, the link lost with
    /// the request in flight, no answer in time, or `body` over the frame limit.
    pub async fn request<B: Body + Send>(
        &self,
        addr: SocketAddr,
        body: B,
        timeout: Duration,
    ) -> Result<Bytes, TransportError> {
        // `timeout` may be anything a caller or the wire said (`Duration::MAX`): too long for
        // `Instant` arithmetic means no deadline in practice.
        let deadline = deadline_in(timeout);
        let link = self.link_by(addr, deadline, timeout).await?;
        let left = deadline.saturating_duration_since(Instant::now());
        link.request(&body, left).await
    }

    /// As [`request`](Self::request), to the silo `silo` only: if the silo listening at `addr`
    /// (as its handshake named it) is another one (a process restarted on `silo`'s address),
    /// nothing is sent. One link lookup for both the check and the request.
    ///
    /// # Errors
    /// As [`request`](Self::request); [`TransportError::OtherSilo`] when another silo listens
    /// at `addr`.
    pub async fn request_to<B: Body + Send>(
        &self,
        silo: &SiloId,
        addr: SocketAddr,
        body: B,
        timeout: Duration,
    ) -> Result<Bytes, TransportError> {
        let deadline = deadline_in(timeout);
        let link = self.link_by(addr, deadline, timeout).await?;
        check_peer(&link, silo, addr)?;
        let left = deadline.saturating_duration_since(Instant::now());
        link.request(&body, left).await
    }

    /// Sends `body` to the silo at `addr`, expecting no answer.
    ///
    /// # Errors
    /// As [`request`](Self::request), but for the answer.
    pub async fn send<B: Body + Send>(
        &self,
        addr: SocketAddr,
        body: B,
    ) -> Result<(), TransportError> {
        self.link(addr).await?.one_way(&body).await
    }

    /// As [`send`](Self::send), to the silo `silo` only (see [`request_to`](Self::request_to)),
    /// connecting within `timeout`.
    ///
    /// # Errors
    /// As [`send`](Self::send); [`TransportError::OtherSilo`] when another silo listens at
    /// `addr`.
    pub async fn send_to<B: Body + Send>(
        &self,
        silo: &SiloId,
        addr: SocketAddr,
        body: B,
        timeout: Duration,
    ) -> Result<(), TransportError> {
        let link = self.link_by(addr, deadline_in(timeout), timeout).await?;
        check_peer(&link, silo, addr)?;
        link.one_way(&body).await
    }

    /// Sends `body` to the peer `peer` over the link it opened or accepted, if one is open (a
    /// gateway answering its client over the client's own connection), and waits for the
    /// answer, at most `timeout`. Never dials.
    ///
    /// # Errors
    /// [`TransportError::NotConnected`] when no link with `peer` is open; otherwise as
    /// [`request`](Self::request).
    pub async fn request_peer<B: Body + Send>(
        &self,
        peer: &SiloId,
        body: B,
        timeout: Duration,
    ) -> Result<Bytes, TransportError> {
        self.peer_link(peer)?.request(&body, timeout).await
    }

    /// Sends a one-way `body` to `peer` over an open link without waiting: written from this
    /// task at once when the link is idle, or left to its writer task.
    ///
    /// # Errors
    /// `Backlogged` when `max_waiting` frames for the peer already wait to be written (the
    /// peer does not read); as [`request_peer`](Self::request_peer) otherwise.
    pub fn try_send_peer<B: Body + ?Sized>(
        &self,
        peer: &SiloId,
        body: &B,
        max_waiting: usize,
    ) -> Result<(), TransportError> {
        self.peer_link(peer)?.try_one_way(body, max_waiting)
    }

    /// Whether a link with `peer` is open.
    #[must_use]
    pub fn is_connected(&self, peer: &SiloId) -> bool {
        self.peer_link(peer).is_ok()
    }

    /// The open link with `peer`.
    fn peer_link(&self, peer: &SiloId) -> Result<Arc<Link>, TransportError> {
        if self.inner.shutdown.is_cancelled() {
            return Err(TransportError::Closed);
        }
        self.inner
            .by_peer
            .read()
            .get(peer)
            .and_then(Weak::upgrade)
            .filter(|l| l.is_open())
            .ok_or_else(|| TransportError::NotConnected {
                peer: peer.to_string(),
            })
    }

    /// The silo at `addr`, as its handshake named it (connecting if needed).
    ///
    /// # Errors
    /// As [`request`](Self::request).
    pub async fn peer_id(&self, addr: SocketAddr) -> Result<SiloId, TransportError> {
        Ok(self.link(addr).await?.peer().clone())
    }

    /// Closes the link to `addr`, if any: requests in flight on it fail at once as
    /// `ConnectionLost` (used when the peer is declared dead). A later request dials again.
    pub fn disconnect(&self, addr: SocketAddr) {
        self.inner.open.write().remove(&addr);
        let slot = self.inner.peers.lock().remove(&addr);
        if let Some(slot) = slot
            && let Ok(peer) = slot.try_lock()
            && let Some(link) = &peer.link
        {
            link.close("disconnected: the peer was declared dead");
        }
    }

    /// Refuses `silo` from now on (it was declared dead, which is final): every link with it,
    /// dialed or accepted, closes at once (requests in flight on them fail as
    /// `ConnectionLost`), and its handshakes, either way, are refused.
    pub fn refuse(&self, silo: &SiloId) {
        if self.inner.is_refused(silo) || !self.inner.refused.write().insert(silo.clone()) {
            return;
        }
        let links: Vec<Arc<Link>> = self
            .inner
            .links
            .lock()
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|l| l.peer() == silo)
            .collect();
        for link in links {
            link.close("refused: the peer silo was declared dead");
        }
        tracing::debug!(silo = %self.inner.identity.silo, refused = %silo, "peer refused");
    }

    /// The switch that simulates partitions in tests (see [`Faults`]); not for production.
    #[doc(hidden)]
    #[must_use]
    pub fn faults(&self) -> Faults {
        self.inner.link_config.faults.clone()
    }

    /// Closes the listener and every link without waiting for their tasks.
    pub fn close(&self) {
        self.inner.shutdown.cancel();
    }

    /// Closes the listener and every link, and waits for their tasks.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
    }

    /// The open link to `addr`, dialing it if there is none (one dial at a time per address;
    /// after a failure, calls fail fast until the backoff has passed).
    /// The open link to `addr`, or one dialed before `deadline` (`timeout` from now).
    async fn link_by(
        &self,
        addr: SocketAddr,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Arc<Link>, TransportError> {
        // The common case, a link already open, needs no timer.
        if let Some(link) = self.open_link(addr)? {
            return Ok(link);
        }
        tokio::time::timeout_at(deadline, self.link(addr))
            .await
            .map_err(|_| TransportError::Timeout {
                addr: addr.to_string(),
                timeout,
            })?
    }

    /// The open link to `addr`, if there is one.
    fn open_link(&self, addr: SocketAddr) -> Result<Option<Arc<Link>>, TransportError> {
        let inner = &self.inner;
        if inner.shutdown.is_cancelled() {
            return Err(TransportError::Closed);
        }
        Ok(inner
            .open
            .read()
            .get(&addr)
            .filter(|l| l.is_open())
            .cloned())
    }

    async fn link(&self, addr: SocketAddr) -> Result<Arc<Link>, TransportError> {
        let inner = &self.inner;
        if let Some(link) = self.open_link(addr)? {
            return Ok(link);
        }
        let slot = inner.peers.lock().entry(addr).or_default().clone();
        let mut peer = slot.lock().await;
        if let Some(link) = peer.link.as_ref().filter(|l| l.is_open()) {
            return Ok(link.clone());
        }
        if let (Some(retry_at), Some(error)) = (peer.retry_at, &peer.last_error)
            && Instant::now() < retry_at
        {
            return Err(error.clone());
        }
        match dial(inner, addr).await {
            Ok(link) => {
                *peer = Peer {
                    link: Some(link.clone()),
                    ..Peer::default()
                };
                inner.open.write().insert(addr, link.clone());
                Ok(link)
            }
            Err(error) => {
                peer.failures = peer.failures.saturating_add(1);
                let backoff = inner
                    .config
                    .backoff_min
                    .saturating_mul(1 << peer.failures.min(16).saturating_sub(1))
                    .min(inner.config.backoff_max);
                peer.retry_at = Some(Instant::now() + backoff);
                peer.last_error = Some(error.clone());
                Err(error)
            }
        }
    }
}

/// Whether `link` leads to `silo`.
fn check_peer(link: &Link, silo: &SiloId, addr: SocketAddr) -> Result<(), TransportError> {
    if link.peer() == silo {
        return Ok(());
    }
    Err(TransportError::OtherSilo {
        addr: addr.to_string(),
        silo: link.peer().clone(),
    })
}

async fn dial(inner: &Arc<Inner>, addr: SocketAddr) -> Result<Arc<Link>, TransportError> {
    let unreachable = |reason: String| TransportError::Unreachable {
        addr: addr.to_string(),
        reason,
    };
    if inner.link_config.faults.is_cut_address(&addr.to_string()) {
        return Err(unreachable("cut off by a test fault".into()));
    }
    let stream = tokio::time::timeout(inner.config.connect_timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| {
            unreachable(format!(
                "no connection within {:?}",
                inner.config.connect_timeout
            ))
        })?
        .map_err(|e| unreachable(e.to_string()))?;
    let _ = stream.set_nodelay(true);
    let timeout = inner.config.handshake_timeout;
    let started = Instant::now();
    let stream = match &inner.config.tls {
        Some(tls) => tokio::time::timeout(timeout, tls.connect(stream, addr))
            .await
            .map_err(|_| format!("no TLS handshake within {timeout:?}"))
            .and_then(|connected| connected)
            .map_err(|reason| TransportError::Tls {
                addr: addr.to_string(),
                reason,
            })?,
        None => Stream::Tcp(stream),
    };
    let mut wire = Framed::new(stream, codec(HANDSHAKE_FRAME_LIMIT));
    let left = timeout.saturating_sub(started.elapsed());
    let peer = match handshake::dial(&mut wire, &inner.identity, left).await {
        Ok(peer) => peer,
        Err(reason) => {
            return Err(handshake_failed(
                addr,
                &wire,
                inner.config.tls.is_some(),
                reason,
            ));
        }
    };
    if inner.is_refused(&peer) {
        return Err(TransportError::Handshake {
            addr: addr.to_string(),
            reason: format!("silo {peer} was declared dead"),
        });
    }
    tracing::debug!(silo = %inner.identity.silo, %peer, %addr, "link established");
    Ok(inner.start_link(wire, peer, addr.to_string()))
}

/// The error of a cluster handshake that failed on a dialed connection; on a plaintext one,
/// says so when the peer answered with TLS.
fn handshake_failed(
    addr: SocketAddr,
    wire: &Framed<Stream, tokio_util::codec::LengthDelimitedCodec>,
    tls: bool,
    reason: String,
) -> TransportError {
    let answered_tls = matches!(
        wire.read_buffer().first_chunk::<2>(),
        Some([0x15 | 0x16, 0x03])
    );
    if let Some(reason) = reason.strip_prefix(crate::tls::TLS_FAILURE) {
        return TransportError::Tls {
            addr: addr.to_string(),
            reason: reason.to_owned(),
        };
    }
    if !tls && answered_tls {
        return TransportError::Tls {
            addr: addr.to_string(),
            reason: format!(
                "the peer requires TLS and this side has it off: set {} (and {}, {} on a \
                 silo) like the peer's ({reason})",
                crate::TLS_CA_SETTING,
                crate::TLS_CERT_SETTING,
                crate::TLS_KEY_SETTING
            ),
        };
    }
    TransportError::Handshake {
        addr: addr.to_string(),
        reason,
    }
}

async fn accept_loop(listener: TcpListener, inner: Arc<Inner>) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = inner.shutdown.cancelled() => return,
        };
        let (stream, from) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait a little instead of spinning.
                tracing::warn!(%e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = inner.pending.clone().try_acquire_owned() else {
            // Too many connections in their handshake: close this one at once.
            drop(stream);
            if let Some(suppressed) = inner.refusals.admit(std::time::Instant::now()) {
                tracing::warn!(
                    %from,
                    limit = inner.config.max_pending_handshakes,
                    suppressed,
                    "refused a connection: too many connections in their handshake"
                );
            }
            continue;
        };
        let inner2 = inner.clone();
        inner.tracker.spawn(async move {
            let _ = stream.set_nodelay(true);
            let handshake = async {
                let timeout = inner2.config.handshake_timeout;
                let started = Instant::now();
                let stream = match &inner2.config.tls {
                    Some(tls) => tokio::time::timeout(timeout, tls.accept(stream))
                        .await
                        .map_err(|_| format!("no TLS handshake within {timeout:?}"))
                        .and_then(|accepted| accepted)
                        .map_err(|reason| format!("TLS: {reason}"))?,
                    None => Stream::Tcp(stream),
                };
                let mut wire = Framed::new(stream, codec(HANDSHAKE_FRAME_LIMIT));
                let peer = handshake::accept(
                    &mut wire,
                    &inner2.identity,
                    timeout.saturating_sub(started.elapsed()),
                    |peer| inner2.is_refused(peer),
                )
                .await?;
                Ok::<_, String>((wire, peer))
            };
            let accepted = tokio::select! {
                result = handshake => result,
                () = inner2.shutdown.cancelled() => return,
            };
            drop(permit);
            match accepted {
                Ok((wire, peer)) => {
                    tracing::debug!(silo = %inner2.identity.silo, %peer, %from, "link accepted");
                    inner2.start_link(wire, peer, from.to_string());
                }
                Err(reason) => {
                    if let Some(suppressed) = inner2.refusals.admit(std::time::Instant::now()) {
                        tracing::warn!(%from, %reason, suppressed, "refused a connection: handshake failed");
                    }
                }
            }
        });
    }
}

//! [`ObserverTable`]: the observer objects one process serves (the clients of an in-process
//! silo, a [`ClusterClient`](crate::ClusterClient), a test kit), and how a call reaches one.
//!
//! Each object has a bounded queue for its one-way calls, drained in order by one task: a
//! one-way push is queued (or refused at once with `QueueFull` when the object is behind), so
//! a slow client never holds the calling grain's turn. A request/response call runs the
//! object's method at once, bounded by the call's deadline. A call to an object the table no
//! longer has fails with `ObserverGone`.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use dashmap::DashMap;
use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use granary_core::{
    CallError, GrainId, GrainRef, Invoker, LogLimit, MethodId, ObserverAddress, ObserverDispatch,
    ObserverInterface, ObserverKey, ObserverObject, OutgoingCall, Payload, SiloId, TypedRef,
};

/// How many one-way calls may wait for one observer object before more are refused.
pub const OBSERVER_QUEUE: usize = 1024;

/// At most one warning per interval says that pushes were dropped (per table, and per gateway
/// for its clients' connections), with the count of those not logged.
pub(crate) const DROPPED_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// A one-way call waiting for its object.
type Queued = (GrainId, MethodId, Payload);

struct Served {
    /// The client serving it.
    client: Arc<str>,
    type_name: &'static str,
    dispatch: ObserverDispatch,
    queue: mpsc::Sender<Queued>,
}

/// The observer objects served by one process, by object number (unique in the table; a
/// reference names the client too, which must match).
pub struct ObserverTable {
    /// Changes when a client fails over to another gateway.
    gateway: parking_lot::RwLock<SiloId>,
    objects: DashMap<u64, Served>,
    next: AtomicU64,
    clients: AtomicU64,
    tracker: TaskTracker,
    stop: CancellationToken,
    queue: usize,
    /// Warnings of one-way calls dropped on full queues.
    dropped: LogLimit,
}

impl fmt::Debug for ObserverTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObserverTable")
            .field("gateway", &*self.gateway.read())
            .field("objects", &self.objects.len())
            .finish_non_exhaustive()
    }
}

impl ObserverTable {
    /// A table whose references name `gateway` (the silo that reaches its clients), whose
    /// queue tasks run on `tracker` and end with `stop`.
    #[must_use]
    pub fn new(gateway: SiloId, tracker: TaskTracker, stop: CancellationToken) -> Self {
        Self {
            gateway: parking_lot::RwLock::new(gateway),
            objects: DashMap::new(),
            next: AtomicU64::new(1),
            clients: AtomicU64::new(1),
            tracker,
            stop,
            queue: OBSERVER_QUEUE,
            dropped: LogLimit::new(DROPPED_LOG_INTERVAL),
        }
    }

    /// The same table with another bound on each object's queue of one-way calls.
    #[must_use]
    pub fn with_queue(mut self, queue: usize) -> Self {
        self.queue = queue.max(1);
        self
    }

    /// The gateway its references name.
    #[must_use]
    pub fn gateway(&self) -> SiloId {
        self.gateway.read().clone()
    }

    /// Names `gateway` in the references made from now on (a client failed over to it): the
    /// objects stay, [`ObserverHandle::reference`] gives the new references.
    pub fn set_gateway(&self, gateway: SiloId) {
        *self.gateway.write() = gateway;
    }

    /// A new client name, unique in this table (`local-<n>`).
    #[must_use]
    pub fn client_name(&self) -> Arc<str> {
        let n = self.clients.fetch_add(1, Ordering::Relaxed);
        format!("local-{n}").into()
    }

    /// How many objects it serves.
    #[must_use]
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Whether it serves no object.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// Serves `object` for `client`; references made from the handle call through `invoker`.
    /// The object is served until the handle is dropped (or [`remove_client`](Self::remove_client)).
    pub fn register<I: ObserverInterface>(
        self: &Arc<Self>,
        client: &str,
        object: ObserverObject<I>,
        invoker: Arc<dyn Invoker>,
    ) -> ObserverHandle<I> {
        let number = self.next.fetch_add(1, Ordering::Relaxed);
        let dispatch = object.into_dispatch();
        let (queue, mut queued) = mpsc::channel::<Queued>(self.queue);
        let drain = dispatch.clone();
        let stop = self.stop.clone();
        self.tracker.spawn(async move {
            loop {
                let (target, method, args) = tokio::select! {
                    () = stop.cancelled() => return,
                    next = queued.recv() => match next {
                        Some(next) => next,
                        None => return,
                    },
                };
                if let Err(err) = drain(&target, method, args).await {
                    tracing::debug!(observer = %target, cause = %err, "one-way call to an observer failed");
                }
            }
        });
        let client: Arc<str> = client.into();
        self.objects.insert(
            number,
            Served {
                client: client.clone(),
                type_name: I::TYPE_NAME,
                dispatch,
                queue,
            },
        );
        let handle = ObserverHandle {
            table: Arc::downgrade(self),
            key: (client, number),
            invoker,
            reference: parking_lot::Mutex::new(None),
        };
        handle.refresh(&self.gateway());
        handle
    }

    /// Stops serving every object of `client` (its connection is gone); how many.
    pub fn remove_client(&self, client: &str) -> usize {
        let before = self.objects.len();
        self.objects.retain(|_, served| &*served.client != client);
        before - self.objects.len()
    }

    /// Whether the object `key` names is served here.
    #[must_use]
    pub fn contains(&self, key: &ObserverKey<'_>) -> bool {
        self.objects
            .get(&key.object)
            .is_some_and(|served| &*served.client == key.client)
    }

    /// The object `target` names, if served here.
    fn find(
        &self,
        target: &GrainId,
    ) -> Result<(ObserverDispatch, mpsc::Sender<Queued>), CallError> {
        let gone = |reason: &str| CallError::ObserverGone {
            observer: target.clone(),
            reason: reason.to_owned(),
        };
        let key = ObserverKey::of(target).ok_or_else(|| gone("not an observer address"))?;
        let served = self
            .objects
            .get(&key.object)
            .filter(|served| &*served.client == key.client)
            .ok_or_else(|| gone("the client dropped it or disconnected"))?;
        if served.type_name != target.type_name() {
            return Err(gone("the object serves another observer interface"));
        }
        Ok((served.dispatch.clone(), served.queue.clone()))
    }

    /// Runs a request/response call on the object `target` names, within `timeout`.
    ///
    /// # Errors
    /// `ObserverGone` when the table does not serve it; `Timeout` after `timeout`; what the
    /// object's method returned.
    pub fn invoke(
        &self,
        target: GrainId,
        method: std::borrow::Cow<'static, str>,
        id: MethodId,
        args: Payload,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Payload, CallError>> {
        let dispatch = match self.find(&target) {
            Ok((dispatch, _)) => dispatch,
            Err(err) => return futures::future::ready(Err(err)).boxed(),
        };
        async move {
            let run = dispatch(&target, id, args);
            match tokio::time::timeout(timeout, run).await {
                Ok(reply) => reply,
                Err(_) => Err(CallError::Timeout {
                    grain: target,
                    method: method.into_owned(),
                    timeout,
                }),
            }
        }
        .boxed()
    }

    /// Queues a one-way call for the object `target` names; never waits.
    ///
    /// # Errors
    /// `ObserverGone` when the table does not serve it; `QueueFull` when its queue is full (the
    /// call is dropped and logged: the client is not keeping up).
    pub fn send(&self, target: GrainId, id: MethodId, args: Payload) -> Result<(), CallError> {
        let (_, queue) = self.find(&target)?;
        match queue.try_send((target, id, args)) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full((target, _, _))) => {
                if let Some(suppressed) = self.dropped.admit(std::time::Instant::now()) {
                    tracing::warn!(
                        observer = %target,
                        limit = self.queue,
                        suppressed,
                        "observer queue full: push dropped (suppressed: the pushes dropped since \
                         the last warning, to any object of this process)"
                    );
                }
                Err(CallError::QueueFull {
                    grain: target,
                    limit: self.queue,
                })
            }
            Err(mpsc::error::TrySendError::Closed((target, _, _))) => {
                Err(CallError::ObserverGone {
                    observer: target,
                    reason: "its client is shutting down".into(),
                })
            }
        }
    }

    /// Runs `call` (to an observer served here): [`invoke`](Self::invoke), or
    /// [`send`](Self::send) when `one_way`.
    pub(crate) fn call(
        &self,
        call: OutgoingCall,
        timeout: Duration,
        one_way: bool,
    ) -> BoxFuture<'static, Result<Payload, CallError>> {
        if one_way {
            let sent = self.send(call.target, call.method.id, call.args);
            return futures::future::ready(sent.map(|()| Payload::local(()))).boxed();
        }
        self.invoke(
            call.target,
            call.method.name.into(),
            call.method.id,
            call.args,
            timeout,
        )
    }
}

/// An observer object a client serves, and its reference. Dropping it stops serving the object:
/// calls to the reference then fail with `ObserverGone`.
pub struct ObserverHandle<I: ObserverInterface> {
    table: Weak<ObserverTable>,
    key: (Arc<str>, u64),
    invoker: Arc<dyn Invoker>,
    /// The reference naming the gateway it was last made for.
    reference: parking_lot::Mutex<Option<(SiloId, I::Ref)>>,
}

impl<I: ObserverInterface> ObserverHandle<I> {
    /// The reference to hand to grains (a subscribe call's argument). It names the gateway
    /// the client reaches the cluster through now: after a failover (see
    /// `ClusterClient::observer_gateway`) this gives a new reference, to subscribe again with.
    #[must_use]
    pub fn reference(&self) -> I::Ref {
        let gateway = self.table.upgrade().map(|t| t.gateway());
        match gateway {
            Some(gateway) => self.refresh(&gateway),
            None => self
                .reference
                .lock()
                .as_ref()
                .map(|(_, r)| r.clone())
                .expect("a handle is made with its reference"),
        }
    }

    /// The reference's id.
    #[must_use]
    pub fn id(&self) -> GrainId {
        self.reference().grain_ref().id().clone()
    }

    /// The reference for `gateway`, made again if the gateway changed.
    fn refresh(&self, gateway: &SiloId) -> I::Ref {
        let mut cached = self.reference.lock();
        if let Some((at, reference)) = &*cached
            && at == gateway
        {
            return reference.clone();
        }
        let address = ObserverAddress {
            gateway: gateway.clone(),
            client: self.key.0.to_string(),
            object: self.key.1,
        };
        let reference = I::Ref::from(GrainRef::new(
            GrainId::new(I::TYPE_NAME, address.to_key()),
            self.invoker.clone(),
        ));
        *cached = Some((gateway.clone(), reference.clone()));
        reference
    }
}

impl<I: ObserverInterface> fmt::Debug for ObserverHandle<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ObserverHandle").field(&self.key).finish()
    }
}

impl<I: ObserverInterface> Drop for ObserverHandle<I> {
    fn drop(&mut self) {
        if let Some(table) = self.table.upgrade() {
            table.objects.remove(&self.key.1);
        }
    }
}

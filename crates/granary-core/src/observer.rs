//! Observers: objects that live with a client (or a test) and that grains call, the reverse of
//! a grain call. Declared with `#[observer]` on a trait, which generates the typed reference
//! (`MatchWatcherRef`, serializable into grain state like a grain reference) and its
//! [`ObserverInterface`]; the client serves an object behind it ([`ObserverObject`]).
//!
//! An observer's reference is a [`GrainRef`](crate::GrainRef) whose type name starts with
//! [`OBSERVER_PREFIX`] and whose key is an [`ObserverAddress`]: the gateway silo that holds
//! the client's connection, the client, and the object. A runtime recognises such a target
//! ([`ObserverAddress::of`]) and delivers the call to the object instead of activating a grain.
//! [`ObserverSet`] is what a grain keeps of its subscribers.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::future::{BoxFuture, join_all};
use serde::{Deserialize, Serialize};

use crate::error::CallError;
use crate::grain::GrainInterface;
use crate::id::{GrainId, GrainKey, SiloId};
use crate::message::{MethodId, Payload};
use crate::reference::TypedRef;

/// The start of every observer interface's type name (`observer:match_watcher`): what tells a
/// runtime that a call goes to an observer, not to a grain.
pub const OBSERVER_PREFIX: &str = "observer:";

/// An observer interface: implemented by `#[observer]` for the reference it generates.
pub trait ObserverInterface: GrainInterface {}

/// Where an observer lives: the gateway silo holding its client's connection, the client and
/// the object, written into the key of the observer's reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObserverAddress {
    /// The silo whose connection reaches the client (for a client of an in-process silo, that
    /// silo).
    pub gateway: SiloId,
    /// The client, unique per connection.
    pub client: String,
    /// The object, unique within the client.
    pub object: u64,
}

impl ObserverAddress {
    /// The key of the reference: `object|client|generation|gateway name`.
    #[must_use]
    pub fn to_key(&self) -> GrainKey {
        GrainKey::from(format!(
            "{}|{}|{}|{}",
            self.object,
            self.client,
            self.gateway.generation(),
            self.gateway.name()
        ))
    }

    /// The address of an observer reference's target; `None` when `id` names a grain (or an
    /// observer key that does not parse: such a reference reaches nothing).
    #[must_use]
    pub fn of(id: &GrainId) -> Option<Self> {
        ObserverKey::of(id).map(|key| Self {
            gateway: SiloId::new(key.gateway_name, key.generation),
            client: key.client.to_owned(),
            object: key.object,
        })
    }

    /// Whether `id` names an observer rather than a grain.
    #[must_use]
    pub fn is_observer(id: &GrainId) -> bool {
        id.type_name().starts_with(OBSERVER_PREFIX)
    }
}

/// An [`ObserverAddress`] read in place from a reference's id, without copying: what a
/// runtime looks at for each call to an observer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObserverKey<'a> {
    /// The object, unique within the client.
    pub object: u64,
    /// The client, unique per connection.
    pub client: &'a str,
    /// The generation of the gateway silo.
    pub generation: u64,
    /// The name of the gateway silo.
    pub gateway_name: &'a str,
}

impl<'a> ObserverKey<'a> {
    /// The key of an observer reference's target; `None` as for [`ObserverAddress::of`].
    #[must_use]
    pub fn of(id: &'a GrainId) -> Option<Self> {
        if !ObserverAddress::is_observer(id) {
            return None;
        }
        let GrainKey::Str(key) = id.key() else {
            return None;
        };
        let mut parts = key.splitn(4, '|');
        let object = parts.next()?.parse().ok()?;
        let client = parts.next()?;
        let generation = parts.next()?.parse().ok()?;
        let gateway_name = parts.next()?;
        Some(Self {
            object,
            client,
            generation,
            gateway_name,
        })
    }

    /// Whether the key names `silo` as the gateway.
    #[must_use]
    pub fn gateway_is(&self, silo: &SiloId) -> bool {
        self.generation == silo.generation() && self.gateway_name == silo.name()
    }
}

/// Runs one call on an observer object: the target, the method and its arguments.
pub type ObserverDispatch = Arc<
    dyn Fn(&GrainId, MethodId, Payload) -> BoxFuture<'static, Result<Payload, CallError>>
        + Send
        + Sync,
>;

/// An object serving the observer interface `I`, ready to be registered with a client
/// (`Client::observe`, `ClusterClient::observe`, a test kit's `observe`). Made by the
/// generated `MatchWatcherRef::object(watcher)`.
pub struct ObserverObject<I> {
    dispatch: ObserverDispatch,
    interface: PhantomData<fn() -> I>,
}

impl<I: ObserverInterface> ObserverObject<I> {
    /// Wraps a dispatch function. The code `#[observer]` generates calls it.
    #[doc(hidden)]
    #[must_use]
    pub fn from_dispatch(dispatch: ObserverDispatch) -> Self {
        Self {
            dispatch,
            interface: PhantomData,
        }
    }

    /// The type name of the interface (`observer:match_watcher`).
    #[must_use]
    pub fn type_name(&self) -> &'static str {
        I::TYPE_NAME
    }

    /// The dispatch function, for the runtime that serves the object.
    #[must_use]
    pub fn into_dispatch(self) -> ObserverDispatch {
        self.dispatch
    }
}

impl<I> fmt::Debug for ObserverObject<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObserverObject").finish_non_exhaustive()
    }
}

/// The subscribers a grain keeps, each with a lease: serializable into the grain's state.
///
/// A subscriber [`subscribe`](Self::subscribe)s and renews within its lease (Orleans' pattern:
/// the client re-subscribes periodically, so a client that vanished without a word, or one
/// that failed over to another gateway with a new reference, falls out after one lease).
/// [`notify`](Self::notify) fans a one-way call out to the live subscribers; then
/// [`settle`](Self::settle) drops the ones that answered "gone".
///
/// Times come from the grain (`ctx.now()`), so the test kit's virtual clock drives expiry.
/// The state lock cannot be held across an `await`, so a notification takes three steps (a
/// whole grain doing it is in `docs/writing-grains.md`, "Observers"):
///
/// ```text
/// let pushes = ctx.state().watchers.notify(ctx.now(), |w| {
///     let update = update.clone();
///     async move { w.on_update(update).await }
/// });
/// let notified = pushes.await;
/// ctx.state().watchers.settle(&notified);
/// ```
#[derive(Clone, Serialize, Deserialize)]
#[serde(bound(serialize = "R: Serialize", deserialize = "R: Deserialize<'de>"))]
pub struct ObserverSet<R> {
    subscribers: Vec<Subscriber<R>>,
}

#[derive(Clone, Serialize, Deserialize)]
struct Subscriber<R> {
    observer: R,
    /// When the lease ends, in milliseconds since the Unix epoch.
    expires_ms: u64,
}

impl<R> Default for ObserverSet<R> {
    fn default() -> Self {
        Self {
            subscribers: Vec::new(),
        }
    }
}

impl<R: TypedRef> fmt::Debug for ObserverSet<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.subscribers.iter().map(|s| s.observer.grain_ref().id()))
            .finish()
    }
}

/// What a [`notify`](ObserverSet::notify) did: how many observers it reached, and which ones
/// are gone (for [`settle`](ObserverSet::settle)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Notified {
    /// Observers that accepted the call.
    pub delivered: usize,
    /// Observers that refused it for a passing reason (a full queue, an unreachable gateway):
    /// kept, their lease decides.
    pub failed: usize,
    /// Observers that are gone: dropped by `settle`.
    pub gone: Vec<GrainId>,
    /// Observers dropped because their lease had ended.
    pub expired: usize,
}

fn millis(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl<R: TypedRef> ObserverSet<R> {
    /// An empty set.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `observer` with a lease of `lease` from `now`, or renews it if it is already in the
    /// set (the same reference id).
    pub fn subscribe(&mut self, observer: R, now: SystemTime, lease: Duration) {
        let expires_ms =
            millis(now).saturating_add(u64::try_from(lease.as_millis()).unwrap_or(u64::MAX));
        let id = observer.grain_ref().id().clone();
        match self
            .subscribers
            .iter_mut()
            .find(|s| *s.observer.grain_ref().id() == id)
        {
            Some(found) => found.expires_ms = expires_ms,
            None => self.subscribers.push(Subscriber {
                observer,
                expires_ms,
            }),
        }
    }

    /// Removes `observer`; whether it was in the set.
    pub fn unsubscribe(&mut self, observer: &R) -> bool {
        let before = self.subscribers.len();
        let id = observer.grain_ref().id();
        self.subscribers
            .retain(|s| s.observer.grain_ref().id() != id);
        self.subscribers.len() != before
    }

    /// Drops the subscribers whose lease ended at `now`; how many.
    pub fn expire(&mut self, now: SystemTime) -> usize {
        let now = millis(now);
        let before = self.subscribers.len();
        self.subscribers.retain(|s| s.expires_ms > now);
        before - self.subscribers.len()
    }

    /// The subscribers (live or not yet expired by [`expire`](Self::expire)).
    pub fn iter(&self) -> impl Iterator<Item = &R> {
        self.subscribers.iter().map(|s| &s.observer)
    }

    /// How many subscribers the set holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.subscribers.len()
    }

    /// Whether the set holds no subscriber.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.subscribers.is_empty()
    }

    /// Drops the expired subscribers, then calls `push` for each live one, all at once; the
    /// future (which borrows nothing of the set) reports what happened. Use a one-way method
    /// in `push`: a one-way call to an observer returns once it is queued for its client, so
    /// no client can hold the grain's turn (a request/response call waits up to its deadline).
    pub fn notify<F, Fut>(&mut self, now: SystemTime, mut push: F) -> BoxFuture<'static, Notified>
    where
        F: FnMut(R) -> Fut,
        Fut: Future<Output = Result<(), CallError>> + Send + 'static,
    {
        let expired = self.expire(now);
        let pushes: Vec<_> = self
            .subscribers
            .iter()
            .map(|s| {
                let id = s.observer.grain_ref().id().clone();
                let push = push(s.observer.clone());
                async move { (id, push.await) }
            })
            .collect();
        Box::pin(async move {
            let mut notified = Notified {
                expired,
                ..Notified::default()
            };
            for (id, result) in join_all(pushes).await {
                match result {
                    Ok(()) => notified.delivered += 1,
                    Err(err) if err.is_gone() => notified.gone.push(id),
                    Err(err) => {
                        tracing::debug!(observer = %id, cause = %err, "push to an observer failed");
                        notified.failed += 1;
                    }
                }
            }
            notified
        })
    }

    /// Drops the subscribers `notified` found gone; how many.
    pub fn settle(&mut self, notified: &Notified) -> usize {
        let before = self.subscribers.len();
        self.subscribers
            .retain(|s| !notified.gone.contains(s.observer.grain_ref().id()));
        before - self.subscribers.len()
    }
}

#[cfg(test)]
mod tests;

//! Observer addresses and the subscriber set's leases, on simulated time.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;

use super::*;
use crate::reference::{GrainRef, Invoker, OutgoingCall};

/// A typed reference for the tests: any `TypedRef` will do.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct WatcherRef(GrainRef);

impl From<GrainRef> for WatcherRef {
    fn from(r: GrainRef) -> Self {
        Self(r)
    }
}

impl TypedRef for WatcherRef {
    fn grain_ref(&self) -> &GrainRef {
        &self.0
    }
}

struct Nowhere;

impl Invoker for Nowhere {
    fn invoke(&self, _: OutgoingCall) -> BoxFuture<'static, Result<Payload, CallError>> {
        unreachable!("the tests push through their own closure")
    }
    fn send(&self, _: OutgoingCall) -> BoxFuture<'static, Result<(), CallError>> {
        unreachable!("the tests push through their own closure")
    }
}

fn watcher(object: u64) -> WatcherRef {
    let address = ObserverAddress {
        gateway: SiloId::new("gw|1", 7),
        client: "c1".into(),
        object,
    };
    WatcherRef(GrainRef::new(
        GrainId::new("observer:watcher", address.to_key()),
        Arc::new(Nowhere),
    ))
}

#[test]
fn an_address_round_trips_through_the_reference_key_and_grains_have_none() {
    let w = watcher(42);
    let address = ObserverAddress::of(w.0.id()).expect("an observer id");
    assert_eq!(address.gateway, SiloId::new("gw|1", 7));
    assert_eq!(address.client, "c1");
    assert_eq!(address.object, 42);
    assert!(ObserverAddress::is_observer(w.0.id()));
    let grain = GrainId::new("player", "42|c1|7|gw");
    assert_eq!(ObserverAddress::of(&grain), None);
    assert!(!ObserverAddress::is_observer(&grain));
    // A forged key reaches nothing rather than something else.
    assert_eq!(
        ObserverAddress::of(&GrainId::new("observer:watcher", "x|c|1|g")),
        None
    );
    assert_eq!(
        ObserverAddress::of(&GrainId::new("observer:watcher", 7)),
        None
    );
}

#[test]
fn a_subscriber_expires_after_its_lease_unless_it_renews() {
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
    let lease = Duration::from_secs(60);
    let mut set = ObserverSet::new();
    set.subscribe(watcher(1), t0, lease);
    set.subscribe(watcher(2), t0, lease);
    // Renewing keeps one entry per observer.
    set.subscribe(watcher(2), t0 + Duration::from_secs(30), lease);
    assert_eq!(set.len(), 2);
    assert_eq!(set.expire(t0 + Duration::from_secs(59)), 0);
    assert_eq!(set.expire(t0 + Duration::from_secs(60)), 1);
    let left: Vec<_> = set.iter().map(|w| w.0.id().clone()).collect();
    assert_eq!(left, vec![watcher(2).0.id().clone()]);
    assert!(set.unsubscribe(&watcher(2)));
    assert!(set.is_empty());
}

#[tokio::test]
async fn notify_reaches_the_live_ones_and_settle_drops_the_gone_ones() {
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
    let mut set = ObserverSet::new();
    set.subscribe(watcher(1), t0, Duration::from_secs(10));
    set.subscribe(watcher(2), t0, Duration::from_secs(100));
    set.subscribe(watcher(3), t0, Duration::from_secs(100));
    set.subscribe(watcher(4), t0, Duration::from_secs(100));
    let pushes = set.notify(t0 + Duration::from_secs(20), |w| {
        let object = ObserverAddress::of(w.0.id()).expect("an observer").object;
        async move {
            match object {
                2 => Err(CallError::ObserverGone {
                    observer: w.0.id().clone(),
                    reason: "client disconnected".into(),
                }),
                3 => Err(CallError::QueueFull {
                    grain: w.0.id().clone(),
                    limit: 1,
                }),
                _ => Ok(()),
            }
        }
    });
    let notified = pushes.await;
    assert_eq!(notified.expired, 1, "watcher 1's lease ended");
    assert_eq!(notified.delivered, 1);
    assert_eq!(notified.failed, 1, "a full queue is passing: kept");
    assert_eq!(notified.gone, vec![watcher(2).0.id().clone()]);
    assert_eq!(set.settle(&notified), 1);
    let left: Vec<u64> = set
        .iter()
        .map(|w| ObserverAddress::of(w.0.id()).expect("an observer").object)
        .collect();
    assert_eq!(left, vec![3, 4]);
}

#[test]
fn a_set_survives_the_state_codec() {
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
    let mut set = ObserverSet::new();
    set.subscribe(watcher(5), t0, Duration::from_secs(1));
    let bytes = rmp_serde::to_vec_named(&set).expect("encodes");
    let back: ObserverSet<WatcherRef> = rmp_serde::from_slice(&bytes).expect("decodes");
    assert_eq!(back.len(), 1);
    assert_eq!(
        back.iter().next().map(|w| w.0.id().clone()),
        Some(watcher(5).0.id().clone())
    );
}

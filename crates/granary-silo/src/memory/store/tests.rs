//! Tests of fencing, versions, the outbox and the directory of the memory store.

use granary_core::provider::{
    Commit, GrainAddress, GrainDirectory, Outbox, StateChange, StateStore,
};
use granary_core::{ActivationId, GrainId, PublishedEvent, SiloId, StorageError};

use super::MemoryStore;

fn address(grain: &GrainId) -> GrainAddress {
    GrainAddress {
        grain: grain.clone(),
        silo: SiloId::new("s", 1),
        activation: ActivationId::new(),
    }
}

fn event(n: u8) -> PublishedEvent {
    PublishedEvent {
        type_name: "test.event".into(),
        payload: vec![n],
    }
}

fn commit(grain: &GrainId, a: &GrainAddress, expected: u64, events: Vec<PublishedEvent>) -> Commit {
    Commit {
        grain: grain.clone(),
        activation: a.activation,
        expected_version: expected,
        change: StateChange::Write(vec![expected as u8]),
        events,
    }
}

#[tokio::test]
async fn only_the_registered_activation_loads_and_commits() {
    let store = MemoryStore::new();
    let grain = GrainId::new("player", "p");
    let first = address(&grain);
    let second = address(&grain);
    assert_eq!(store.register(first.clone(), None).await.unwrap(), first);
    assert_eq!(
        store.register(second.clone(), None).await.unwrap(),
        first,
        "the first claim wins"
    );
    assert_eq!(
        store.load(&grain, second.activation).await,
        Err(StorageError::NotOwner)
    );
    assert_eq!(
        store.commit(commit(&grain, &second, 0, vec![])).await,
        Err(StorageError::NotOwner)
    );
    assert_eq!(store.commit(commit(&grain, &first, 0, vec![])).await, Ok(1));
    // A stale entry is replaced only by naming it.
    assert_eq!(
        store
            .register(second.clone(), Some(first.clone()))
            .await
            .unwrap(),
        second
    );
    assert_eq!(
        store.commit(commit(&grain, &first, 1, vec![])).await,
        Err(StorageError::NotOwner)
    );
}

#[tokio::test]
async fn stale_versions_conflict_and_write_nothing() {
    let store = MemoryStore::new();
    let grain = GrainId::new("player", "p");
    let a = address(&grain);
    store.register(a.clone(), None).await.unwrap();
    assert_eq!(
        store.commit(commit(&grain, &a, 0, vec![event(1)])).await,
        Ok(1)
    );
    let err = store
        .commit(commit(&grain, &a, 0, vec![event(2)]))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        StorageError::Conflict {
            expected: 0,
            actual: 1
        }
    );
    let pending = store.pending(10).await.unwrap();
    assert_eq!(
        pending.len(),
        1,
        "the refused commit's event was not appended"
    );
    assert_eq!((pending[0].id.version, pending[0].id.index), (1, 0));
    assert_eq!(store.stored(&grain), Some((Some(vec![0]), 1)));
}

#[tokio::test]
async fn events_get_stable_ids_and_leave_the_outbox_when_acked() {
    let store = MemoryStore::new();
    let grain = GrainId::new("player", "p");
    let a = address(&grain);
    store.register(a.clone(), None).await.unwrap();
    store
        .commit(commit(&grain, &a, 0, vec![event(1), event(2)]))
        .await
        .unwrap();
    let pending = store.pending(10).await.unwrap();
    let ids: Vec<(u64, u32)> = pending.iter().map(|e| (e.id.version, e.id.index)).collect();
    assert_eq!(ids, vec![(1, 0), (1, 1)]);
    store.ack(&[pending[0].id.clone()]).await.unwrap();
    assert_eq!(store.pending(10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn unregister_only_removes_the_matching_entry() {
    let store = MemoryStore::new();
    let grain = GrainId::new("player", "p");
    let a = address(&grain);
    let b = address(&grain);
    store.register(a.clone(), None).await.unwrap();
    store.unregister(&b).await.unwrap();
    assert_eq!(store.lookup(&grain).await.unwrap(), Some(a.clone()));
    store.unregister(&a).await.unwrap();
    assert_eq!(store.lookup(&grain).await.unwrap(), None);
}

//! The once-in-order check on hand-made envelopes, and the recording handlers.

use super::*;

/// The envelope of grain `key`'s `n`th bump (version `n`, index 0).
fn bumped(key: &str, n: u64) -> EventEnvelope {
    let json = format!(
        r#"{{"id":"o/21:testkit.event-counter:s:{key}:{n}:0","type":"bumped",
            "source":{{"type":"testkit.event-counter","key":"{key}","key_kind":"string"}},
            "version":{n},"index":0,"timestamp_ms":0,"trace":null,"payload":{{"n":{n}}}}}"#
    );
    EventEnvelope::from_json(json.as_bytes()).expect("a well-formed envelope")
}

fn check(events: &[EventEnvelope], grains: usize, times: u64) -> Result<(), String> {
    check_once_in_order(events, grains, |_| 1..=times)
}

#[test]
fn interleaved_grains_with_repeats_pass() {
    let events = [
        bumped("a", 1),
        bumped("b", 1),
        bumped("a", 2),
        bumped("a", 1),
        bumped("b", 2),
        bumped("b", 1),
        bumped("a", 3),
        bumped("b", 3),
    ];
    assert_eq!(check(&events, 2, 3), Ok(()));
}

#[test]
fn a_missing_event_fails() {
    let events = [bumped("a", 1), bumped("a", 3)];
    let problem = check(&events, 1, 3).unwrap_err();
    assert!(problem.contains("counts [1, 3]"), "{problem}");
}

#[test]
fn events_out_of_commit_order_fail_even_when_repeated_in_order_later() {
    let events = [
        bumped("a", 2),
        bumped("a", 1),
        bumped("a", 2),
        bumped("a", 3),
    ];
    let problem = check(&events, 1, 3).unwrap_err();
    assert!(problem.contains("not in commit order"), "{problem}");
}

#[test]
fn a_missing_or_extra_grain_fails() {
    let events = [bumped("a", 1), bumped("b", 1)];
    assert!(check(&events, 1, 1).unwrap_err().contains("2 grains"));
    assert!(check(&events, 3, 1).unwrap_err().contains("expected 3"));
}

#[test]
fn expected_counts_may_differ_per_grain() {
    let events = [
        bumped("0", 2),
        bumped("0", 3),
        bumped("1", 1),
        bumped("1", 2),
    ];
    let expected = |key: &str| if key == "0" { 2..=3 } else { 1..=2 };
    assert_eq!(check_once_in_order(&events, 2, expected), Ok(()));
    assert!(check(&events, 2, 2).is_err());
}

#[test]
fn the_poison_handler_fails_the_poison_and_records_the_rest() {
    let deliveries = Deliveries::new();
    let handler = deliveries.failing_on(&bumped("a", 2).id);
    for n in [1, 2, 2, 3, 3] {
        let result = handler(bumped("a", n)).into_inner();
        let expected = if n == 2 {
            Err(POISON_FAILURE.to_owned())
        } else {
            Ok(())
        };
        assert_eq!(result, expected);
    }
    assert_eq!(deliveries.failures(), 2);
    assert_eq!((deliveries.len(), deliveries.distinct()), (3, 2));
    assert_eq!(deliveries.counts_of("a"), [1, 3, 3]);
    assert!(deliveries.counts_of("b").is_empty());
}

#[test]
fn bumped_id_is_the_id_of_the_envelope_of_that_bump() {
    assert_eq!(bumped_id("o", "a", 2), bumped("a", 2).id);
}

#[tokio::test]
async fn an_event_over_the_silos_cap_is_refused_at_publish_with_nothing_committed() {
    let store = Arc::new(MemoryStore::new());
    // `{"n":1}` is 7 bytes.
    let silo = Silo::builder()
        .config(SiloConfig {
            max_event_size: 6,
            ..SiloConfig::test_profile()
        })
        .storage(store.clone())
        .register::<EventCounterGrain>()
        .start()
        .await
        .unwrap();
    let err = silo
        .client()
        .grain::<EventCounterGrain>("big")
        .bump()
        .await
        .unwrap_err();
    match &err {
        granary::CallError::EventTooLarge {
            type_name,
            size,
            limit,
            ..
        } => {
            assert_eq!(type_name, "bumped");
            assert_eq!((*size, *limit), (7, 6));
        }
        other => panic!("expected EventTooLarge, got {other:?}"),
    }
    assert!(!err.is_retryable());
    assert!(store.outbox_entries().is_empty(), "nothing published");
    assert_eq!(
        store
            .stored(&GrainId::new(EventCounterGrain::TYPE_NAME, "big"))
            .and_then(|(data, _)| data),
        None,
        "nothing committed"
    );
    silo.shutdown().await.unwrap();
}

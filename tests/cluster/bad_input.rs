//! Bad input on the wire path: typed errors, no panic, nothing lost.

use std::sync::Arc;
use std::time::Duration;

use granary::codec;
use granary::codec::Envelope;
use granary::{CallChain, CallError, GrainId, MethodId};

use crate::probe::{Counters, ProbeGrain, silo};

fn envelope(target: GrainId, method: &str, args: Vec<u8>) -> Envelope {
    Envelope {
        target,
        method: MethodId::of(method),
        method_name: method.to_owned(),
        args,
        timeout: Duration::from_secs(2),
        chain: CallChain::root(),
        one_way: false,
        forwards: 0,
    }
}

fn reply(bytes: &[u8]) -> Result<Vec<u8>, CallError> {
    codec::decode::<Result<Vec<u8>, CallError>>(bytes).expect("the reply itself always decodes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_methods_undecodable_arguments_and_garbage_get_typed_errors() {
    let counters = Arc::new(Counters::default());
    let silo = silo(&counters).await;
    let probe = GrainId::new("probe", "victim");
    silo.client()
        .grain::<ProbeGrain>("victim")
        .set(3)
        .await
        .unwrap();

    let unknown = envelope(probe.clone(), "no_such_method", codec::encode(&()).unwrap());
    let err = reply(&silo.silo().dispatch_wire(&unknown.encode().unwrap()).await).unwrap_err();
    assert!(matches!(err, CallError::UnknownMethod { .. }), "{err}");

    let wrong_args = envelope(
        probe.clone(),
        "set",
        codec::encode(&("not a number",)).unwrap(),
    );
    let err = reply(
        &silo
            .silo()
            .dispatch_wire(&wrong_args.encode().unwrap())
            .await,
    )
    .unwrap_err();
    assert!(matches!(err, CallError::Codec { .. }), "{err}");

    let err = reply(&silo.silo().dispatch_wire(&[0xff; 64]).await).unwrap_err();
    assert!(matches!(err, CallError::Codec { .. }), "{err}");

    let oversized = vec![0_u8; codec::MAX_MESSAGE_BYTES + 1];
    let err = reply(&silo.silo().dispatch_wire(&oversized).await).unwrap_err();
    assert!(err.to_string().contains("exceeds the limit"), "{err}");

    let unknown_type = envelope(
        GrainId::new("dragon", "x"),
        "count",
        codec::encode(&()).unwrap(),
    );
    let err = reply(
        &silo
            .silo()
            .dispatch_wire(&unknown_type.encode().unwrap())
            .await,
    )
    .unwrap_err();
    assert!(matches!(err, CallError::UnknownGrainType { .. }), "{err}");

    // The grain is unharmed and its state intact.
    assert_eq!(
        silo.client()
            .grain::<ProbeGrain>("victim")
            .count()
            .await
            .unwrap(),
        3
    );
    silo.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_arguments_are_refused_before_sending() {
    let counters = Arc::new(Counters::default());
    let silo = crate::probe::silo_with(&counters, Duration::ZERO, |c| granary::SiloConfig {
        wire_local_calls: true,
        ..c
    })
    .await;
    let probe = silo.client().grain::<ProbeGrain>("big");
    let huge = "x".repeat(codec::MAX_MESSAGE_BYTES + 1);
    let err = probe.ask(huge).await.unwrap_err();
    assert!(matches!(err, CallError::Codec { .. }), "{err}");
    assert!(err.to_string().contains("exceeds the limit"), "{err}");
    silo.shutdown().await.unwrap();
}

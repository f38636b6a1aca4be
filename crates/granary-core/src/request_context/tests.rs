//! The request context: setting, merging, bounds, and the bounded decode.

use super::*;
use crate::codec;

#[test]
fn an_empty_context_is_none_and_one_byte_on_the_wire() {
    let empty = RequestContext::new();
    assert!(empty.is_empty() && empty.entries.is_none());
    assert_eq!(codec::encode(&empty).expect("encodes").len(), 1);
    let back: RequestContext = codec::decode(&codec::encode(&empty).expect("encodes")).unwrap();
    assert!(back.entries.is_none(), "decoded empty stays unallocated");
}

#[test]
fn keys_are_unique_and_merges_let_the_later_context_win() {
    let mut context = RequestContext::new()
        .with("user", "alice")
        .with("region", "eu");
    context.insert("user", "bob");
    assert_eq!(context.get("user"), Some("bob"));
    assert_eq!(context.len(), 2);
    let merged = context.merged(
        &RequestContext::new()
            .with("region", "us")
            .with("shard", "7"),
    );
    assert_eq!(
        merged.iter().collect::<Vec<_>>(),
        [("user", "bob"), ("region", "us"), ("shard", "7")]
    );
    assert_eq!(
        context.get("region"),
        Some("eu"),
        "the original is unchanged"
    );
    assert_eq!(context.remove("user").as_deref(), Some("bob"));
    assert_eq!(context.remove("region").as_deref(), Some("eu"));
    assert!(context.is_empty() && context.entries.is_none());
}

#[test]
fn contexts_round_trip_through_the_wire_codec() {
    let context = RequestContext::new()
        .with("user", "alice")
        .with("trace", "x");
    let back: RequestContext = codec::decode(&codec::encode(&context).expect("encodes")).unwrap();
    assert_eq!(back, context);
}

#[test]
fn a_context_over_a_bound_fails_the_check_and_the_decode() {
    let mut many = RequestContext::new();
    for i in 0..=MAX_CONTEXT_ENTRIES {
        many.insert(format!("k{i}"), "v");
    }
    assert!(matches!(
        many.check(),
        Err(CallError::ContextTooLarge { entries: 17, .. })
    ));
    let big = RequestContext::new().with("blob", "x".repeat(MAX_CONTEXT_BYTES));
    assert!(matches!(
        big.check(),
        Err(CallError::ContextTooLarge { entries: 1, bytes }) if bytes == MAX_CONTEXT_BYTES + 4
    ));
    let at_limit = RequestContext::new().with("blob", "x".repeat(MAX_CONTEXT_BYTES - 4));
    assert!(at_limit.check().is_ok());
    // What a sender that skipped the check would put on the wire is refused while decoding.
    for over in [many, big] {
        let bytes = codec::encode(&over).expect("encodes");
        let err = codec::decode::<RequestContext>(&bytes).expect_err("refused");
        assert!(err.to_string().contains("request context"), "{err}");
    }
    let bytes = codec::encode(&at_limit).expect("encodes");
    assert_eq!(codec::decode::<RequestContext>(&bytes).unwrap(), at_limit);
}

#[test]
fn an_envelope_whose_context_is_over_a_bound_is_refused_while_it_is_read() {
    let mut chain = crate::CallChain::root();
    for i in 0..=MAX_CONTEXT_ENTRIES {
        chain.context.insert(format!("k{i}"), "v");
    }
    let envelope = crate::Envelope {
        target: crate::GrainId::new("player", "alice"),
        method: crate::MethodId::of("hit"),
        method_name: "hit".into(),
        args: Vec::new(),
        timeout: std::time::Duration::from_secs(1),
        chain,
        one_way: false,
        forwards: 0,
    };
    let bytes = envelope
        .encode()
        .expect("encoding does not check the bound");
    let err = crate::Envelope::decode(&bytes).expect_err("refused");
    assert!(
        matches!(&err, CallError::Codec { reason, .. } if reason.contains("request context")),
        "{err:?}"
    );
}

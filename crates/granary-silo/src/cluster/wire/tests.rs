//! Tests of the cluster's wire messages: layouts, borrowed reads, replies, bad input.

use super::*;

fn envelope() -> Envelope {
    Envelope {
        target: GrainId::new("bench", 7),
        method: MethodId::of("ping"),
        method_name: "ping".into(),
        args: vec![1, 2, 3, 200],
        timeout: Duration::from_millis(250),
        chain: CallChain::root(),
        one_way: false,
        forwards: 1,
    }
}

fn call() -> RemoteCall {
    let Envelope {
        target,
        method,
        method_name,
        args,
        timeout,
        chain,
        one_way,
        forwards,
    } = envelope();
    RemoteCall {
        target,
        method,
        method_name: Cow::Owned(method_name),
        args,
        timeout,
        chain,
        one_way,
        forwards,
    }
}

/// What a call message is on the wire: variant 0, then the envelope's own encoding.
fn as_envelope_message(envelope: &Envelope) -> Vec<u8> {
    let mut bytes = vec![0];
    codec::encode_into(envelope, &mut bytes).expect("encodes");
    bytes
}

#[test]
fn a_call_is_written_with_the_envelope_layout() {
    let envelope = envelope();
    let expected = as_envelope_message(&envelope);
    let of_envelope = codec::encode(&Outgoing::Call(CallOut::of_envelope(&envelope)));
    assert_eq!(of_envelope.expect("encodes"), expected);
    let mut call = call();
    call.chain = envelope.chain.clone();
    let of_call = codec::encode(&Outgoing::Call(CallOut::of(&call)));
    assert_eq!(of_call.expect("encodes"), expected);
}

#[test]
fn a_call_is_read_in_place_with_the_registered_names() {
    let bytes = as_envelope_message(&envelope());
    let Ok(Incoming::Call(call)) = codec::decode_borrowed::<Incoming<'_>>(&bytes) else {
        panic!("a call");
    };
    assert_eq!(call.args, [1, 2, 3, 200]);
    let frame = bytes.as_ptr_range();
    assert!(frame.contains(&call.args.as_ptr()), "borrowed, not copied");
    assert!(
        frame.contains(&call.method_name.as_ptr()),
        "borrowed, not copied"
    );
    static TYPE: &str = "bench";
    static METHOD: &str = "ping";
    let call = call.into_call(|type_name, method| {
        assert_eq!((type_name, method), ("bench", MethodId::of("ping")));
        Some((TYPE, Some(METHOD)))
    });
    assert_eq!(call.target, GrainId::new("bench", 7));
    assert!(
        std::ptr::eq(call.target.type_name(), TYPE),
        "the static name"
    );
    assert!(matches!(call.method_name, Cow::Borrowed(name) if std::ptr::eq(name, METHOD)));
    assert_eq!(
        (call.args, call.timeout, call.forwards, call.one_way),
        (vec![1, 2, 3, 200], Duration::from_millis(250), 1, false)
    );
}

#[test]
fn a_call_for_an_unknown_type_keeps_the_names_it_came_with() {
    let bytes = as_envelope_message(&envelope());
    let Ok(Incoming::Call(call)) = codec::decode_borrowed::<Incoming<'_>>(&bytes) else {
        panic!("a call");
    };
    let call = call.into_call(|_, _| None);
    assert_eq!(call.target, GrainId::new("bench", 7));
    assert_eq!(call.method_name, "ping");
}

#[test]
fn other_messages_keep_their_layout() {
    let silo = SiloId::new("a", 3);
    let ping = codec::encode(&Outgoing::Ping(silo.clone())).expect("encodes");
    assert_eq!(ping[0], 1, "variant 1");
    assert!(matches!(
        codec::decode_borrowed::<Incoming<'_>>(&ping),
        Ok(Incoming::Ping(s)) if s == silo
    ));
    let view = codec::encode(&Outgoing::View).expect("encodes");
    assert_eq!(view, [4]);
}

#[test]
fn replies_round_trip_with_the_serving_silo() {
    let other = Served::Other(SiloId::new("b", 9));
    for host in [Served::Unknown, Served::Responder, other] {
        let bytes = encode_reply(Ok(&[9, 8, 7]), &host);
        let reply = ReplyIn::decode(&bytes).expect("a reply");
        assert_eq!(reply.result.ok(), Some(&[9_u8, 8, 7][..]));
        assert_eq!(reply.host, host);
    }
    let err = CallError::ShuttingDown;
    let bytes = encode_reply(Err(&err), &Served::Unknown);
    let reply = ReplyIn::decode(&bytes).expect("a reply");
    assert!(matches!(reply.result, Err(CallError::ShuttingDown)));
    // What the reply to the served silo costs on the wire: one byte.
    assert_eq!(
        encode_reply(Ok(&[]), &Served::Responder),
        [0, 0, 1],
        "Ok, no bytes, Responder"
    );
}

#[test]
fn a_reply_over_the_size_limit_becomes_a_codec_error() {
    let huge = vec![0_u8; codec::MAX_MESSAGE_BYTES + 1];
    let bytes = encode_reply(Ok(&huge), &Served::Responder);
    let reply = ReplyIn::decode(&bytes).expect("a reply");
    assert!(
        matches!(reply.result, Err(CallError::Codec { .. })),
        "{reply:?}"
    );
    assert_eq!(reply.host, Served::Responder);
}

#[test]
fn bad_bytes_are_errors_not_panics() {
    let message = as_envelope_message(&envelope());
    let reply = encode_reply(Ok(&[1, 2, 3]), &Served::Other(SiloId::new("b", 9)));
    let mut inputs: Vec<Vec<u8>> = vec![vec![], vec![0xff; 3], vec![42, 0, 0, 0], vec![0, 250]];
    // Every truncation of a valid message and reply, and every single byte flipped.
    inputs.extend((0..message.len()).map(|n| message[..n].to_vec()));
    inputs.extend((0..reply.len()).map(|n| reply[..n].to_vec()));
    for i in 0..message.len() {
        let mut flipped = message.clone();
        flipped[i] ^= 0xff;
        inputs.push(flipped);
    }
    for i in 0..reply.len() {
        let mut flipped = reply.clone();
        flipped[i] ^= 0xff;
        inputs.push(flipped);
    }
    for bytes in &inputs {
        // Either reads something or says why not; never panics or over-allocates.
        let _ = codec::decode_borrowed::<Incoming<'_>>(bytes);
        let _ = ReplyIn::decode(bytes);
    }
    for n in 0..message.len() {
        assert!(codec::decode_borrowed::<Incoming<'_>>(&message[..n]).is_err());
    }
    for n in 0..reply.len() {
        assert!(ReplyIn::decode(&reply[..n]).is_err());
    }
}

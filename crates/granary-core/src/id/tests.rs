//! Tests of grain, activation and silo ids.

use super::*;

#[test]
fn ids_compare_by_type_and_key() {
    let a = GrainId::new("player", "p-1");
    let b = GrainId::new("player", "p-1");
    let c = GrainId::new("game", "p-1");
    let d = GrainId::new("player", 1_i64);
    let e = GrainId::new("player", "1");
    assert_eq!(a, b);
    assert_eq!(a.stable_hash(), b.stable_hash());
    assert_ne!(a, c);
    assert_ne!(d, e, "integer and string keys are different grains");
    assert_eq!(a.to_string(), "player/p-1");
}

#[test]
fn stable_hash_is_pinned() {
    // Pinned values: if these change, every cluster re-places its grains on upgrade.
    assert_eq!(
        GrainId::new("player", "p-1").stable_hash(),
        0x02e0_155d_fe9b_1048
    );
    assert_eq!(
        GrainId::new("game", 7_i64).stable_hash(),
        0x13b7_85e4_c959_5154
    );
    assert_ne!(
        GrainId::new("player", "p-1").stable_hash(),
        GrainId::new("player", "p-2").stable_hash()
    );
    assert_ne!(
        GrainId::new("game", 7_i64).stable_hash(),
        GrainId::new("game", "7").stable_hash()
    );
}

#[test]
fn canonical_keys_carry_their_kind() {
    assert_eq!(GrainKey::from("7").canonical(), "s:7");
    assert_eq!(GrainKey::from(7_i64).canonical(), "i:7");
}

#[test]
fn grain_id_round_trips_through_the_wire_codec() {
    let id = GrainId::new("game", 42_i64);
    let bytes = crate::codec::encode(&id).unwrap();
    let back: GrainId = crate::codec::decode(&bytes).unwrap();
    assert_eq!(back, id);
}

#[test]
fn map_hashes_are_keyed_so_chosen_keys_do_not_collide() {
    // Keys whose stable hashes share their low 16 bits: with the stable hash in the maps, all
    // of them would land in one bucket of a map of up to 65,536 buckets (HashDoS). Finding
    // such keys takes anyone a second; the keyed map hash spreads them.
    let target = GrainId::new("player", "k0").stable_hash() & 0xffff;
    let colliding: Vec<GrainId> = (0..)
        .map(|i| GrainId::new("player", format!("k{i}")))
        .filter(|id| id.stable_hash() & 0xffff == target)
        .take(8)
        .collect();
    let build = BuildGrainIdHasher::default();
    let buckets: std::collections::HashSet<u64> = colliding
        .iter()
        .map(|id| build.hash_one(id) & 0xffff)
        .collect();
    assert!(buckets.len() > 1, "the map hash is the stable hash");
    for id in &colliding {
        assert_ne!(build.hash_one(id), id.stable_hash());
        // Equal ids still hash equally.
        assert_eq!(
            build.hash_one(id),
            build.hash_one(GrainId::new(id.type_name().to_owned(), id.key().clone()))
        );
    }
}

#[test]
fn keys_longer_than_the_limit_are_refused() {
    let fine = GrainId::new("player", "p".repeat(MAX_KEY_LEN));
    assert_eq!(fine.check_key(), Ok(()));
    assert_eq!(GrainId::new("player", 7_i64).check_key(), Ok(()));
    let long = GrainId::new("player", "p".repeat(MAX_KEY_LEN + 1));
    let err = long.check_key().unwrap_err();
    assert!(
        matches!(
            &err,
            crate::CallError::InvalidKey { grain_type, len, limit }
                if grain_type == "player" && *len == MAX_KEY_LEN + 1 && *limit == MAX_KEY_LEN
        ),
        "{err}"
    );
    assert!(!err.is_retryable());
}

#[test]
fn an_envelope_with_an_oversized_key_is_refused_when_decoded() {
    let envelope = |key: String| crate::Envelope {
        target: GrainId::new("player", key),
        method: crate::MethodId(1),
        method_name: "m".into(),
        args: Vec::new(),
        timeout: std::time::Duration::from_secs(1),
        chain: crate::CallChain::root(),
        one_way: false,
        forwards: 0,
    };
    let ok = envelope("p".repeat(MAX_KEY_LEN)).encode().unwrap();
    assert!(crate::Envelope::decode(&ok).is_ok());
    let long = envelope("p".repeat(64 * 1024)).encode().unwrap();
    let err = crate::Envelope::decode(&long).unwrap_err();
    assert!(
        matches!(err, crate::CallError::InvalidKey { len, .. } if len == 64 * 1024),
        "{err}"
    );
}

#[test]
fn silo_ids_generated_in_the_same_millisecond_differ() {
    // Old generations were the start time in milliseconds: two processes of one name starting
    // in the same millisecond got the same id.
    let (a, b) = loop {
        let (a, b) = (SiloId::generate("silo"), SiloId::generate("silo"));
        if a.generation() >> GENERATION_RANDOM_BITS == b.generation() >> GENERATION_RANDOM_BITS {
            break (a, b);
        }
    };
    assert_ne!(a, b);
    // The high part is the start time, so generations of one name order by start time.
    let millis = u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    let started = a.generation() >> GENERATION_RANDOM_BITS;
    assert!(started <= millis && millis - started < 60_000);
    assert!(generation_of(5, u64::MAX) < generation_of(6, 0));
    // The display form stays `<name>@<generation>`.
    assert_eq!(
        SiloId::new("a", generation_of(1, 2)).to_string(),
        format!("a@{}", (1 << 20) + 2)
    );
}

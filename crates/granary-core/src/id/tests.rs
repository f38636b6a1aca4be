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

//! Tests of the key layout.

use super::*;

#[test]
fn grain_fields_round_trip_and_never_collide() {
    let ids = [
        GrainId::new("player", "alice"),
        GrainId::new("player", 7),
        GrainId::new("player", "7"),
        GrainId::new("player", Uuid::nil()),
        GrainId::new("a:s", "b"),
        GrainId::new("a", "s:b"),
        GrainId::new("game", ""),
    ];
    let fields: Vec<String> = ids.iter().map(grain_field).collect();
    for (id, field) in ids.iter().zip(&fields) {
        assert_eq!(parse_grain_field(field).as_ref(), Some(id), "{field}");
    }
    let unique: std::collections::HashSet<_> = fields.iter().collect();
    assert_eq!(unique.len(), fields.len(), "{fields:?}");
}

#[test]
fn every_key_of_a_grain_shares_one_hash_tag() {
    let keys = Keys::new("demo", 64);
    let grain = GrainId::new("player", "x}{y");
    let k = keys.grain(&grain);
    let tag = |key: &str| {
        let open = key.find('{').unwrap();
        let close = open + key[open..].find('}').unwrap();
        key[open + 1..close].to_owned()
    };
    let expected = format!("demo:{}", k.shard);
    for key in [&k.epoch, &k.grain, &k.outbox] {
        assert_eq!(tag(key), expected, "{key}");
    }
    assert_eq!(k.epoch, keys.epoch(k.shard));
    assert_eq!(k.outbox, keys.outbox(k.shard));
}

#[test]
fn cluster_ids_that_would_break_a_key_are_refused() {
    assert!(validate_cluster("prod-eu.1_a").is_ok());
    for bad in ["", "a{b", "a}b", "a b", "a:b", &"x".repeat(65)] {
        assert!(validate_cluster(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn garbage_fields_do_not_parse() {
    for bad in [
        "",
        "x",
        "9:player:s:a",
        "6:player:z:a",
        "6:player:i:nope",
        "6:playe",
    ] {
        assert_eq!(parse_grain_field(bad), None, "{bad:?}");
    }
}

#[test]
fn reminder_members_round_trip_whatever_the_name_and_key_hold() {
    for (name, key) in [
        ("regen", GrainKey::from("alice")),
        ("a:b:c", GrainKey::from("7:x:s:y")),
        ("", GrainKey::Int(-3)),
        ("né", GrainKey::Uuid(Uuid::now_v7())),
    ] {
        let grain = GrainId::new("player", key);
        let member = reminder_member(name, &grain_field(&grain));
        assert_eq!(
            parse_reminder_member(&member),
            Some((grain, name.to_owned()))
        );
    }
    assert_eq!(parse_reminder_member("9:short"), None);
    assert_eq!(parse_reminder_member("x:name6:player:s:a"), None);
}

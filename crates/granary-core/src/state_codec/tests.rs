//! Tests of the stored-state codec: schema evolution and corrupt blobs.

use serde::{Deserialize, Serialize};

use super::*;

#[derive(Serialize, Deserialize, Default, Debug, PartialEq)]
struct V1 {
    health: i32,
    name: String,
}

#[derive(Serialize, Deserialize, Default, Debug, PartialEq)]
struct V2 {
    name: String,
    #[serde(default)]
    level: u32,
}

#[test]
fn adding_and_removing_fields_keeps_old_state_readable() {
    let old = encode(&V1 {
        health: 90,
        name: "ann".into(),
    })
    .unwrap();
    let new: V2 = decode(&old).unwrap();
    assert_eq!(
        new,
        V2 {
            name: "ann".into(),
            level: 0
        }
    );
}

#[test]
fn garbage_is_a_corrupt_error() {
    let err = decode::<V1>(&[0xc1, 0xff, 0x00]).unwrap_err();
    assert!(matches!(err, StorageError::Corrupt(_)), "{err}");
}

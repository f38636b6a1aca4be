//! Tests of the stored-state format: envelope checks, schema evolution, corrupt blobs.

use futures::future::BoxFuture;
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

use super::*;
use crate::context::GrainContext;
use crate::error::CallError;
use crate::grain::MethodInfo;
use crate::message::{MethodId, Payload};
use crate::reference::{GrainRef, TypedRef};

#[derive(Serialize, Deserialize, Default, Debug, PartialEq)]
struct V1 {
    hp: i32,
    name: String,
}

#[derive(Serialize, Deserialize, Default, Debug, PartialEq)]
struct V2 {
    name: String,
    #[serde(default)]
    level: u32,
}

#[derive(Serialize, Deserialize, Default, Debug, PartialEq)]
struct V3 {
    name: String,
    level: u32,
    health: i64,
}

#[derive(Clone, Debug)]
struct NoRef(GrainRef);
impl From<GrainRef> for NoRef {
    fn from(r: GrainRef) -> Self {
        Self(r)
    }
}
impl TypedRef for NoRef {
    fn grain_ref(&self) -> &GrainRef {
        &self.0
    }
}

/// A grain type at schema version `VERSION` whose state is `S`, with steps 1→2 (`hp` dropped,
/// `level` added by default) and 2→3 (`health` from a fixed value).
struct Shape<S, const VERSION: u32>(std::marker::PhantomData<S>);

impl<S, const VERSION: u32> Grain for Shape<S, VERSION>
where
    S: crate::grain::GrainState + Sync,
{
    const TYPE_NAME: &'static str = "shape";
    const REENTRANT: bool = false;
    const METHODS: &'static [MethodInfo] = &[];
    const STATE_VERSION: u32 = VERSION;
    type State = S;
    type Ref = NoRef;

    fn invoke<'a>(
        &'a self,
        _: &'a GrainContext<Self>,
        _: MethodId,
        _: Payload,
    ) -> BoxFuture<'a, Result<Payload, CallError>> {
        unreachable!("state codec tests call no method")
    }

    fn upgrade_state(from: u32, blob: &StateBlob) -> Result<StateBlob, String> {
        match from {
            1 => {
                let old: V1 = blob.decode().map_err(|e| e.to_string())?;
                StateBlob::encode(&V2 {
                    name: old.name,
                    level: 0,
                })
                .map_err(|e| e.to_string())
            }
            2 => {
                let old: V2 = blob.decode().map_err(|e| e.to_string())?;
                if old.name.is_empty() {
                    return Err("a player needs a name".into());
                }
                StateBlob::encode(&V3 {
                    name: old.name,
                    level: old.level,
                    health: 100,
                })
                .map_err(|e| e.to_string())
            }
            _ => Err(format!("no step from {from}")),
        }
    }
}

type AtV1 = Shape<V1, 1>;
type AtV2 = Shape<V2, 2>;
type AtV3 = Shape<V3, 3>;

fn ann() -> V1 {
    V1 {
        hp: 90,
        name: "ann".into(),
    }
}

#[test]
fn a_state_round_trips_through_its_envelope() {
    let blob = encode::<AtV1>(&ann()).unwrap();
    assert_eq!(&blob[..4], b"GRNS");
    assert_eq!(open(&blob).unwrap().0, 1, "the schema version is stored");
    assert_eq!(decode::<AtV1>(&blob).unwrap(), ann());
}

#[test]
fn adding_and_removing_fields_keeps_old_state_readable_without_a_step() {
    // The same schema version, a changed struct: named MessagePack copes on its own.
    let old = encode::<Shape<V1, 2>>(&ann()).unwrap();
    assert_eq!(
        decode::<AtV2>(&old).unwrap(),
        V2 {
            name: "ann".into(),
            level: 0
        }
    );
}

#[test]
fn an_older_schema_runs_every_upgrade_step_in_order() {
    let old = encode::<AtV1>(&ann()).unwrap();
    assert_eq!(
        decode::<AtV3>(&old).unwrap(),
        V3 {
            name: "ann".into(),
            level: 0,
            health: 100
        }
    );
}

#[test]
fn a_failing_step_names_its_version() {
    let old = encode::<AtV1>(&V1 {
        hp: 1,
        name: String::new(),
    })
    .unwrap();
    let err = decode::<AtV3>(&old).unwrap_err();
    assert_eq!(
        err,
        StateError::Upgrade {
            from: 2,
            reason: "a player needs a name".into()
        }
    );
}

#[test]
fn a_newer_schema_is_refused_not_misread() {
    let newer = encode::<AtV3>(&V3::default()).unwrap();
    assert_eq!(
        decode::<AtV1>(&newer).unwrap_err(),
        StateError::NewerSchema {
            stored: 3,
            known: 1
        }
    );
}

#[test]
fn envelope_checks_name_what_is_wrong() {
    let good = encode::<AtV1>(&ann()).unwrap();
    assert_eq!(
        decode::<AtV1>(&good[..5]).unwrap_err(),
        StateError::Truncated { len: 5 }
    );
    let mut bad = good.clone();
    bad[0] = b'X';
    assert_eq!(decode::<AtV1>(&bad).unwrap_err(), StateError::BadMagic);
    let mut bad = good.clone();
    bad[4] = 9;
    assert_eq!(
        decode::<AtV1>(&bad).unwrap_err(),
        StateError::UnknownFormat(9)
    );
    let mut bad = good.clone();
    bad[5] = 7;
    assert_eq!(
        decode::<AtV1>(&bad).unwrap_err(),
        StateError::UnknownCodec(7)
    );
    // A payload that is valid MessagePack of the wrong shape passes the CRC and fails decoding.
    let wrong = seal(1, &rmp_serde::to_vec_named(&42u8).unwrap());
    assert!(matches!(
        decode::<AtV1>(&wrong).unwrap_err(),
        StateError::Payload { schema: 1, .. }
    ));
}

proptest! {
    /// Any single flipped bit in the payload is caught by the checksum; in the header, by one of
    /// the header checks or the checksum. Never a silently wrong value.
    #[test]
    fn any_flipped_bit_is_an_error(bit in 0usize..(8 * 64)) {
        let blob = encode::<AtV1>(&ann()).unwrap();
        prop_assume!(bit / 8 < blob.len());
        let mut bad = blob.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        let header_schema_byte = (6..10).contains(&(bit / 8));
        match decode::<AtV1>(&bad) {
            Err(_) => {}
            // A flipped schema-version bit yields another version: refused as newer, or run
            // through a step that rejects it. Either way not `Ok`.
            Ok(v) => prop_assert!(false, "decoded {v:?} from a damaged blob (schema byte: {header_schema_byte})"),
        }
    }

    /// Arbitrary bytes never panic the decoder.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = decode::<AtV3>(&bytes);
    }
}

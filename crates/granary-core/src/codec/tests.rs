//! Tests of the wire codec: limits, malformed input, round trips.

use proptest::prelude::*;

use super::*;

#[test]
fn crafted_length_prefix_is_an_error_not_an_allocation() {
    // A Vec<u8> whose varint length prefix claims u64::MAX elements.
    let mut bytes = vec![253_u8];
    bytes.extend_from_slice(&u64::MAX.to_le_bytes());
    let err = decode::<Vec<u8>>(&bytes).unwrap_err();
    assert!(
        matches!(err, CodecError::TooLarge { .. } | CodecError::Decode { .. }),
        "{err}"
    );
}

#[test]
fn borrowed_decodes_read_strings_and_bytes_in_place_and_refuse_bad_input() {
    let bytes = encode(&("five".to_owned(), vec![1_u8, 2, 3], 9_u64)).unwrap();
    let (name, body, n) = decode_borrowed::<(&str, &[u8], u64)>(&bytes).unwrap();
    assert_eq!((name, body, n), ("five", &[1_u8, 2, 3][..], 9));
    assert!(
        std::ptr::eq(name.as_bytes().as_ptr(), bytes[1..].as_ptr()),
        "not copied"
    );
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(decode_borrowed::<(&str, &[u8], u64)>(&trailing).is_err());
    assert!(decode_borrowed::<(&str, &[u8], u64)>(&bytes[..4]).is_err());
    // A length prefix claiming more than there is.
    assert!(decode_borrowed::<&str>(&[200]).is_err());
    let oversized = vec![0_u8; MAX_MESSAGE_BYTES + 1];
    assert!(matches!(
        decode_borrowed::<&[u8]>(&oversized),
        Err(CodecError::TooLarge { .. })
    ));
}

#[test]
fn oversized_values_are_refused_on_encode() {
    let big = vec![7_u8; MAX_MESSAGE_BYTES + 10];
    assert!(matches!(encode(&big), Err(CodecError::TooLarge { .. })));
}

#[test]
fn encode_into_appends_and_leaves_the_buffer_as_it_was_on_error() {
    let mut out = vec![1, 2, 3];
    let size = encode_into(&(5_u32, "five"), &mut out).unwrap();
    assert_eq!(&out[..3], &[1, 2, 3]);
    assert_eq!(size, out.len() - 3);
    assert_eq!(
        decode::<(u32, String)>(&out[3..]).unwrap(),
        (5, "five".to_owned())
    );
    let big = vec![7_u8; MAX_MESSAGE_BYTES + 10];
    assert!(matches!(
        encode_into(&big, &mut out),
        Err(CodecError::TooLarge { .. })
    ));
    assert_eq!(out.len(), 3 + size, "nothing of the refused value is left");
}

#[test]
fn trailing_bytes_are_malformed() {
    let mut bytes = encode(&5_u32).unwrap();
    bytes.push(0);
    assert!(matches!(
        decode::<u32>(&bytes),
        Err(CodecError::Decode { .. })
    ));
}

proptest! {
    #[test]
    fn round_trip(v in proptest::collection::vec(any::<(i32, String, Option<u64>)>(), 0..20)) {
        let bytes = encode(&v).unwrap();
        prop_assert_eq!(decode::<Vec<(i32, String, Option<u64>)>>(&bytes).unwrap(), v);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode::<(String, Vec<u64>, Option<i32>)>(&bytes);
        let _ = decode::<crate::Envelope>(&bytes);
    }
}

//! The compile-time flag check of `#[grain(implements = ..)]`.

use super::{MethodInfo, declares_flags};
use crate::message::MethodId;

const METHODS: &[MethodInfo] = &[
    MethodInfo {
        name: "hp",
        id: MethodId::of("hp"),
        read_only: true,
        one_way: false,
    },
    MethodInfo {
        name: "ping",
        id: MethodId::of("ping"),
        read_only: false,
        one_way: true,
    },
    MethodInfo {
        name: "hit",
        id: MethodId::of("hit"),
        read_only: false,
        one_way: false,
    },
];

#[test]
fn a_repeated_flag_passes_and_one_the_interface_lacks_fails() {
    // (name, read_only, one_way, expected)
    let cases = [
        ("hp", true, false, true),
        ("hp", false, false, true),
        ("hp", false, true, false),
        ("ping", false, true, true),
        ("ping", true, false, false),
        ("hit", true, false, false),
        ("hit", false, true, false),
        ("hit", false, false, true),
        // Not the interface's: the trait impl reports it, not this check.
        ("heal", true, true, true),
        // A prefix of a name is another name.
        ("hi", true, false, true),
        ("h", false, true, true),
    ];
    for (name, read_only, one_way, expected) in cases {
        assert_eq!(
            declares_flags(METHODS, name, read_only, one_way),
            expected,
            "{name} read_only={read_only} one_way={one_way}"
        );
    }
    // What the generated code does: evaluated by the compiler.
    const { assert!(declares_flags(METHODS, "hp", true, false)) };
}

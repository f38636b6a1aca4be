//! `idle_after`'s duration syntax.

use super::{IdleAfterArg, parse_idle_after};

#[test]
fn durations_add_up_their_parts() {
    for (text, ms) in [
        ("90s", 90_000),
        ("500ms", 500),
        ("15min", 900_000),
        ("2h", 7_200_000),
        ("1d", 86_400_000),
        ("1h30min", 5_400_000),
        (" 45s ", 45_000),
    ] {
        assert_eq!(
            parse_idle_after(text),
            Ok(IdleAfterArg::Millis(ms)),
            "{text}"
        );
    }
    assert_eq!(parse_idle_after("never"), Ok(IdleAfterArg::Never));
}

#[test]
fn bad_durations_say_what_is_wrong() {
    for (text, expected) in [
        ("", "is empty"),
        ("90", "has no unit"),
        ("90sec", "unknown unit `sec`"),
        ("s", "expected a number"),
        ("1.5s", "has no unit"),
        ("0s", "is zero"),
        ("0h0min", "is zero"),
        ("-1s", "expected a number"),
        ("Never", "expected a number"),
        ("99999999999999999999d", "too long"),
        ("213503982335d", "too long"),
    ] {
        let err = parse_idle_after(text).expect_err(text);
        assert!(err.contains(expected), "{text}: {err}");
    }
}

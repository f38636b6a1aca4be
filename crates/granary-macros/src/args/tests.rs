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

/// Parses `#[grain(...)]` arguments; the first error's message, if any.
fn parse_args(tokens: proc_macro2::TokenStream) -> (super::GrainArgs, Option<String>) {
    let mut errors = crate::errors::Errors::default();
    let args = super::GrainArgs::parse(tokens, proc_macro2::Span::call_site(), &mut errors);
    (args, errors.into_syn().map(|e| e.to_string()))
}

#[test]
fn a_role_is_a_non_empty_string_given_once() {
    let (args, err) = parse_args(quote::quote!(name = "game", state = (), role = "sim"));
    assert_eq!(err, None);
    assert_eq!(args.role.map(|r| r.value()).as_deref(), Some("sim"));
    for (tokens, expected) in [
        (
            quote::quote!(name = "g", state = (), role = " "),
            "must not be empty",
        ),
        (
            quote::quote!(name = "g", state = (), role = sim),
            "`role` takes a string",
        ),
        (
            quote::quote!(name = "g", state = (), role = "a", role = "b"),
            "duplicate grain argument `role`",
        ),
    ] {
        let (_, err) = parse_args(tokens);
        let err = err.unwrap_or_default();
        assert!(err.contains(expected), "{err}");
    }
}

//! Compile tests: `tests/ui/pass` must build, `tests/ui/fail` must fail with the errors in
//! their `.stderr` files (regenerate with `TRYBUILD=overwrite`).

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}

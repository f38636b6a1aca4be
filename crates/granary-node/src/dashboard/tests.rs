//! The dashboard's pure parts: call rates from heartbeat counters, and the token check.

use actix_web::test::TestRequest;

use super::*;

#[test]
fn a_rate_needs_two_heartbeats_and_holds_until_the_next() {
    let silo = SiloId::new("a", 1);
    let mut rates = Rates::default();
    assert_eq!(
        rates.observe(&silo, 1_000, 10),
        None,
        "one reading: no rate"
    );
    assert_eq!(
        rates.observe(&silo, 1_000, 10),
        None,
        "the same heartbeat again"
    );
    assert_eq!(
        rates.observe(&silo, 1_500, 60),
        Some(100.0),
        "50 calls in 0.5 s"
    );
    assert_eq!(
        rates.observe(&silo, 1_500, 60),
        Some(100.0),
        "the last rate until a newer heartbeat"
    );
    assert_eq!(rates.observe(&silo, 2_500, 60), Some(0.0), "no calls: zero");
}

#[test]
fn a_restart_or_an_old_reading_starts_the_rate_afresh() {
    let silo = SiloId::new("a", 1);
    let mut rates = Rates::default();
    rates.observe(&silo, 1_000, 500);
    assert_eq!(
        rates.observe(&silo, 2_000, 5),
        None,
        "the counter went back"
    );
    assert_eq!(rates.observe(&silo, 3_000, 25), Some(20.0));
    assert_eq!(
        rates.observe(&silo, 3_000 + RATE_WINDOW_MS + 1, 10_000),
        None,
        "a reading older than the window is not averaged over"
    );
    rates.retain(|_| false);
    assert_eq!(rates.observe(&silo, 100_000, 1), None, "forgotten");
}

#[test]
fn the_token_is_taken_from_the_bearer_header_or_the_query() {
    let token = "0123456789abcdef";
    let check = |req: TestRequest| authorized(&req.to_http_request(), token);
    assert!(check(
        TestRequest::get().insert_header(("Authorization", "Bearer 0123456789abcdef"))
    ));
    assert!(check(
        TestRequest::get().uri("/dashboard?token=0123456789abcdef")
    ));
    assert!(check(
        TestRequest::get().uri("/dashboard?x=1&token=0123456789abcdef")
    ));
    assert!(!check(TestRequest::get().uri("/dashboard")), "none");
    assert!(
        !check(TestRequest::get().uri("/dashboard?token=0123456789abcdeX")),
        "wrong"
    );
    assert!(
        !check(TestRequest::get().uri("/dashboard?token=0123456789abcde")),
        "a prefix"
    );
    assert!(
        !check(TestRequest::get().insert_header(("Authorization", "0123456789abcdef"))),
        "not a bearer token"
    );
    assert!(
        !check(TestRequest::get().insert_header(("Authorization", "Basic 0123456789abcdef"))),
        "another scheme"
    );
}

#[test]
fn the_page_names_what_the_browser_test_reads() {
    for hook in [
        "id=\"silos\"",
        "id=\"activations\"",
        "id=\"events\"",
        "id=\"updated\"",
        "data-silo",
        "data-field",
        "Authorization",
    ] {
        assert!(PAGE.contains(hook), "the page lacks {hook}");
    }
}

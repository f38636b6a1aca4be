//! Tests of the transport's pure parts: the refusal log's rate limit and deadline arithmetic.

use super::*;

#[test]
fn refusals_are_logged_once_per_interval_with_the_count_of_the_others() {
    let log = RefusalLog::new(Duration::from_secs(10));
    let start = Instant::now();
    assert_eq!(log.admit(start), Some(0), "the first is logged");
    for i in 1..=5 {
        assert_eq!(log.admit(start + Duration::from_secs(i)), None);
    }
    assert_eq!(
        log.admit(start + Duration::from_secs(10)),
        Some(5),
        "the next line says how many were not logged"
    );
    assert_eq!(log.admit(start + Duration::from_secs(11)), None);
    assert_eq!(log.admit(start + Duration::from_secs(30)), Some(1));
}

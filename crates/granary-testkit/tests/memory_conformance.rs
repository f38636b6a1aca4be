//! The state-store conformance suite against the in-memory store.

use std::sync::Arc;

use granary::provider::MemoryStore;

granary_testkit::store_conformance_tests!(async { Arc::new(MemoryStore::new()) });

#[tokio::test]
async fn membership_rows_keep_hosted_types_and_roles() {
    let table = granary::provider::MemoryMembership::new();
    granary_testkit::conformance::membership_rows_keep_hosted_types_and_roles(&table).await;
}

//! The state-store conformance suite against the in-memory store.

use std::sync::Arc;

use granary::provider::MemoryStore;

granary_testkit::store_conformance_tests!(async { Arc::new(MemoryStore::new()) });

//! `granary`: inspect a running cluster through its Redis, and follow its events. This stock
//! binary has no grain types, so its `silo` command says how to build a host binary that has.
//!
//! ```sh
//! granary --redis redis://127.0.0.1:6379 --cluster demo status
//! granary --redis redis://127.0.0.1:6379 --cluster demo grain player alice
//! granary --redis redis://127.0.0.1:6379 events tail events:match.ended
//! ```

fn main() {
    granary_cli::main_with(|silo| silo)
}

//! Integration tests live in `cluster/`; this library is empty.

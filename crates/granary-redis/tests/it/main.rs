//! Tests of the Redis store against real Redis servers: the conformance suite on the shared
//! server, fencing, outages and data loss on private ones, and events through Redis Streams.
#![allow(clippy::unwrap_used, reason = "test helpers fail loudly")]

mod cluster;
mod conformance;
mod counter;
mod events;
mod fencing;
mod outage;
mod tls;

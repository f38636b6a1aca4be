//! Tests of the Redis store against real Redis servers: the conformance suite on the shared
//! server, and fencing, outages and data loss on private ones.

mod conformance;
mod counter;
mod fencing;
mod outage;

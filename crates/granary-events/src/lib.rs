//! Granary's domain events on their way to queues.
//!
//! Grains publish events with `ctx.publish`; the events commit with the turn's state change
//! into the outbox (see the state stores). A [`Relay`] delivers committed events to the
//! [`Sink`]s their type is routed to — Redis Streams by default — and removes them from the
//! outbox only once every sink confirmed them. Delivery is at least once, in commit order per
//! grain, with a stable id per event ([`EventEnvelope::id`]) that consumers use to process each
//! event exactly once.
//!
//! The envelope is JSON, documented at [`EventEnvelope`], so that services in any language can
//! consume the events. A grain that receives events (a subscription: a consumer's handler calls
//! the grain with each envelope) keeps [`RecentEvents`] in its state to apply each event once.

mod dedupe;
mod envelope;
mod relay;
mod sink;

pub use dedupe::RecentEvents;
pub use envelope::{EnvelopeError, EventEnvelope, Source, event_id};
pub use relay::{Relay, RelayBuilder, RelayConfig, ShardOwner};
pub use sink::{Sink, SinkError};

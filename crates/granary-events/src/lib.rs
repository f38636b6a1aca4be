//! Granary's domain events on their way to queues.
//!
//! Grains publish events with `ctx.publish`; the events commit with the turn's state change
//! into the outbox (see the state stores). A [`Relay`] delivers committed events to the
//! [`Sink`]s their type is routed to — Redis Streams by default — and removes them from the
//! outbox only once every sink confirmed them, and counts per sink what it delivered, what
//! failed and how far behind the sink is ([`RelayMetrics`]). Delivery is at least once, in commit order per
//! grain, with a stable id per event ([`EventEnvelope::id`]) that consumers use to process each
//! event exactly once.
//!
//! The envelope is JSON, documented at [`EventEnvelope`], so that services in any language can
//! consume the events. A grain that receives events (a subscription: a consumer's handler calls
//! the grain with each envelope) keeps [`RecentEvents`] in its state to apply each event once.

mod applied;
mod dedupe;
mod envelope;
mod metrics;
mod relay;
mod sink;

pub use applied::{AppliedEvents, Delivery};
pub use dedupe::RecentEvents;
pub use envelope::{EnvelopeError, EventEnvelope, Format, Source, event_id};
pub use metrics::RelayMetrics;
pub use relay::{Relay, RelayBuilder, RelayConfig, ShardOwner};
pub use sink::{Addressed, Encoded, Outgoing, Sink, SinkError, Topics};

use std::future::Future;

use granary_core::Event;

/// Adapts a handler of event type `E` to the consumers' envelope handlers: the envelope's
/// payload is decoded as `E` (an envelope of another type, or that does not decode, is a
/// failure, retried and then dead-lettered like any other).
///
/// ```
/// # #[derive(serde::Serialize, serde::Deserialize)] struct MatchEnded { winner: String }
/// # impl granary_core::Event for MatchEnded { const TYPE_NAME: &'static str = "match.ended"; }
/// let handler = granary_events::typed(|ended: MatchEnded, event: granary_events::EventEnvelope| async move {
///     println!("{} won (event {})", ended.winner, event.id);
///     Ok(())
/// });
/// # let _ = handler;
/// ```
pub fn typed<E, F, Fut>(
    handler: F,
) -> impl Fn(EventEnvelope) -> futures::future::BoxFuture<'static, Result<(), String>>
where
    E: Event,
    F: Fn(E, EventEnvelope) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    move |envelope: EventEnvelope| {
        let handler = handler.clone();
        Box::pin(async move {
            let event = envelope.decode::<E>().map_err(|e| e.to_string())?;
            handler(event, envelope).await
        })
    }
}

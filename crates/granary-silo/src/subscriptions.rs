//! Subscriptions: events to grains. A [`Subscription`] names an event type, a key function
//! that chooses the receiving grain, and how to deliver to it (a call of one of its methods);
//! [`SiloBuilder::subscribe`](crate::SiloBuilder::subscribe) registers it, and
//! [`Silo::deliver_subscriptions`](crate::Silo::deliver_subscriptions) adds the silo's
//! [`GrainSink`] to its event relay for every subscribed type.
//!
//! The sink is one more sink of the relay, so a subscribed grain gets its events with the
//! guarantees of a queue: at least once, in commit order per source grain, the outbox entry
//! removed only once every subscribed grain's call succeeded. A batch is delivered one lane
//! per source grain (a source's events one after the other, the lanes concurrently); a
//! lane stops at its first failure, so that a later event of that source never overtakes an
//! earlier one. A transient failure (the receiving silo died, the call timed out, the store
//! is unreachable) is [`SinkError::Unavailable`]: the relay retries with backoff, without end.
//! A failure that will repeat (the key function failed or panicked, the event does not
//! decode, the grain refused the call or panicked) is [`SinkError::Refused`]: the relay
//! retries the event a few times and then moves it to its shard's dead-letter stream, logged,
//! and goes on. The receiving grain applies each event once by committing the
//! [`Delivery`]'s position in an `AppliedEvents` of its state with its change.

use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use granary_core::turn::panic_message;
use granary_core::{CallError, Event, GrainInterface, GrainKey};
use granary_events::{Delivery, EventEnvelope, Outgoing, RelayBuilder, Sink, SinkError};

use crate::client::Client;

/// How many source grains' lanes of a batch are delivered at once.
const LANES: usize = 64;

/// The sink's name: the `sink` label of the relay's metrics, and in its logs.
const SINK_NAME: &str = "grains";

/// Decodes an envelope, chooses the grain and starts the call; `Err` says why the event
/// cannot be delivered (it will not be, however often it is retried).
type Handler = dyn Fn(&Client, &EventEnvelope) -> Result<BoxFuture<'static, Result<(), CallError>>, String>
    + Send
    + Sync;

/// A subscription of grain type (or interface) `G` to event type `E`: which grain receives
/// each event (the key function) and how (a call of one of its methods). Register it with
/// [`SiloBuilder::subscribe`](crate::SiloBuilder::subscribe) on every silo of the cluster.
///
/// ```
/// # use granary_silo::Subscription;
/// # use granary_core::{CallError, Event, GrainKey};
/// # #[derive(serde::Serialize, serde::Deserialize)] struct MatchEnded { winner: String }
/// # impl Event for MatchEnded { const TYPE_NAME: &'static str = "match.ended"; }
/// # #[derive(Debug, Clone)] struct BoardRef(granary_core::GrainRef);
/// # impl From<granary_core::GrainRef> for BoardRef { fn from(r: granary_core::GrainRef) -> Self { Self(r) } }
/// # impl granary_core::TypedRef for BoardRef { fn grain_ref(&self) -> &granary_core::GrainRef { &self.0 } }
/// # impl BoardRef { async fn record(&self, _w: String, _d: granary_events::Delivery) -> Result<(), CallError> { Ok(()) } }
/// # struct Board;
/// # impl granary_core::GrainInterface for Board { const TYPE_NAME: &'static str = "board"; const METHODS: &'static [granary_core::MethodInfo] = &[]; type Ref = BoardRef; }
/// let subscription = Subscription::<MatchEnded, Board>::new(
///     // Every match result goes to the one global board.
///     |_ended| Ok(GrainKey::from("global")),
///     |board, ended, delivery| async move { board.record(ended.winner, delivery).await },
/// );
/// # let _ = subscription;
/// ```
pub struct Subscription<E, G> {
    handler: Arc<Handler>,
    _types: PhantomData<fn(E) -> G>,
}

impl<E: Event, G: GrainInterface> Subscription<E, G> {
    /// Delivers each event of type `E` to the grain of type `G` whose key `key` returns, by
    /// calling `deliver` with the grain's reference, the event and its [`Delivery`] (its id,
    /// source grain and position, for the grain's dedupe).
    ///
    /// `key` returning an error or panicking, or the event not decoding as `E`, sends the
    /// event to the dead letters (logged); so does `deliver` failing with an error that will
    /// repeat (the grain refused the call, or panicked), after the relay's retries. A
    /// transient error (the silo died, a timeout, the store unreachable) is retried until it
    /// succeeds.
    #[must_use]
    pub fn new<K, F, Fut>(key: K, deliver: F) -> Self
    where
        K: Fn(&E) -> Result<GrainKey, String> + Send + Sync + 'static,
        F: Fn(G::Ref, E, Delivery) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), CallError>> + Send + 'static,
    {
        let handler = move |client: &Client, envelope: &EventEnvelope| {
            let event = envelope.decode::<E>().map_err(|e| e.to_string())?;
            let grain_key = match std::panic::catch_unwind(AssertUnwindSafe(|| key(&event))) {
                Ok(Ok(grain_key)) => grain_key,
                Ok(Err(reason)) => {
                    return Err(format!(
                        "the key function of the subscription of {} to {} failed: {reason}",
                        G::TYPE_NAME,
                        E::TYPE_NAME
                    ));
                }
                Err(panic) => {
                    return Err(format!(
                        "the key function of the subscription of {} to {} panicked: {}",
                        G::TYPE_NAME,
                        E::TYPE_NAME,
                        panic_message(panic.as_ref())
                    ));
                }
            };
            let grain = client.grain::<G>(grain_key);
            let call = std::panic::catch_unwind(AssertUnwindSafe(|| {
                deliver(grain, event, Delivery::of(envelope))
            }))
            .map_err(|panic| {
                format!(
                    "the delivery of the subscription of {} to {} panicked: {}",
                    G::TYPE_NAME,
                    E::TYPE_NAME,
                    panic_message(panic.as_ref())
                )
            })?;
            Ok(Box::pin(call) as BoxFuture<'static, Result<(), CallError>>)
        };
        Self {
            handler: Arc::new(handler),
            _types: PhantomData,
        }
    }
}

impl<E, G> std::fmt::Debug for Subscription<E, G>
where
    E: Event,
    G: GrainInterface,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("event", &E::TYPE_NAME)
            .field("grain", &G::TYPE_NAME)
            .finish()
    }
}

/// One registered subscription, its types erased.
#[derive(Clone)]
struct Entry {
    grain_type: &'static str,
    handler: Arc<Handler>,
}

/// The subscriptions registered on a silo builder, by event type.
#[derive(Clone, Default)]
pub(crate) struct SubscriptionList {
    by_type: HashMap<&'static str, Vec<Entry>>,
}

impl SubscriptionList {
    pub(crate) fn add<E: Event, G: GrainInterface>(&mut self, subscription: Subscription<E, G>) {
        self.by_type.entry(E::TYPE_NAME).or_default().push(Entry {
            grain_type: G::TYPE_NAME,
            handler: subscription.handler,
        });
    }

    /// Adds a [`GrainSink`] calling grains through `client` to `relay`, for every subscribed
    /// event type.
    pub(crate) fn attach(&self, client: Client, mut relay: RelayBuilder) -> RelayBuilder {
        if self.by_type.is_empty() {
            return relay;
        }
        let sink: Arc<dyn Sink> = Arc::new(GrainSink {
            client,
            by_type: self.by_type.clone(),
        });
        let mut types: Vec<&str> = self.by_type.keys().copied().collect();
        types.sort_unstable();
        for type_name in types {
            relay = relay.subscriber(type_name, sink.clone());
        }
        relay
    }
}

impl std::fmt::Debug for SubscriptionList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(
                self.by_type
                    .iter()
                    .map(|(t, e)| (t, e.iter().map(|e| e.grain_type).collect::<Vec<_>>())),
            )
            .finish()
    }
}

/// The relay's sink of a silo's subscriptions: delivers each event to the grains subscribed to
/// its type, through the silo's client (so to whichever silo hosts the grain).
struct GrainSink {
    client: Client,
    by_type: HashMap<&'static str, Vec<Entry>>,
}

impl Sink for GrainSink {
    fn name(&self) -> &str {
        SINK_NAME
    }

    fn publish<'a>(&'a self, events: &'a [Outgoing]) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            // One lane per source grain: the indices of its events, in the batch's (commit)
            // order.
            let mut lanes: Vec<Vec<usize>> = Vec::new();
            let mut lane_of: HashMap<(&str, &str, &str), usize> = HashMap::new();
            for (i, out) in events.iter().enumerate() {
                let source = &out.event.source;
                let at = *lane_of
                    .entry((&source.type_name, &source.key_kind, &source.key))
                    .or_insert_with(|| {
                        lanes.push(Vec::new());
                        lanes.len() - 1
                    });
                lanes[at].push(i);
            }
            let failures: Vec<SinkError> = futures::stream::iter(lanes)
                .map(|lane| self.deliver_lane(events, lane))
                .buffer_unordered(LANES)
                .filter_map(|result| async move { result.err() })
                .collect()
                .await;
            // A refusal first: the relay then isolates the refused event.
            let refused = failures
                .iter()
                .position(|f| matches!(f, SinkError::Refused { .. }))
                .unwrap_or(0);
            match failures.into_iter().nth(refused) {
                Some(failure) => Err(failure),
                None => Ok(()),
            }
        })
    }
}

impl GrainSink {
    /// Delivers one source grain's events (`lane`: their indices in `events`) in order,
    /// stopping at the first failure.
    async fn deliver_lane(&self, events: &[Outgoing], lane: Vec<usize>) -> Result<(), SinkError> {
        for event in lane.into_iter().map(|i| &events[i].event) {
            for entry in self
                .by_type
                .get(event.type_name.as_str())
                .into_iter()
                .flatten()
            {
                self.deliver(entry, event).await?;
            }
        }
        Ok(())
    }

    async fn deliver(&self, entry: &Entry, event: &EventEnvelope) -> Result<(), SinkError> {
        let call = match (entry.handler)(&self.client, event) {
            Ok(call) => call,
            Err(reason) => {
                tracing::error!(
                    event = %event.id,
                    grain_type = entry.grain_type,
                    cause = %reason,
                    "a subscribed event cannot be delivered; the relay dead-letters it"
                );
                return Err(refused(reason));
            }
        };
        let outcome = AssertUnwindSafe(call).catch_unwind().await;
        let err = match outcome {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(err)) => err,
            Err(panic) => {
                let reason = format!(
                    "the delivery to {} panicked: {}",
                    entry.grain_type,
                    panic_message(panic.as_ref())
                );
                tracing::error!(event = %event.id, cause = %reason, "subscription delivery failed");
                return Err(refused(reason));
            }
        };
        let transient = err.is_retryable()
            || err.outcome_unknown()
            || matches!(
                err,
                CallError::Storage { .. }
                    | CallError::ActivationFailed { .. }
                    | CallError::NoHost { .. }
                    | CallError::Unavailable { .. }
            );
        let reason = format!(
            "delivering event {} to {}: {err}",
            event.id, entry.grain_type
        );
        if transient {
            tracing::warn!(event = %event.id, grain_type = entry.grain_type, cause = %err, "subscription delivery failed; retried");
            Err(SinkError::Unavailable {
                sink: SINK_NAME.to_owned(),
                reason,
            })
        } else {
            tracing::warn!(event = %event.id, grain_type = entry.grain_type, cause = %err, "the subscribed grain refused an event; retried, then dead-lettered");
            Err(refused(reason))
        }
    }
}

fn refused(reason: String) -> SinkError {
    SinkError::Refused {
        sink: SINK_NAME.to_owned(),
        reason,
    }
}

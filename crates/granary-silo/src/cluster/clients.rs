//! A gateway's side of observers: calls to the observers of the clients connected to this
//! silo travel over each client's own connection (the transport's link with the client's id,
//! which the client opened). A one-way push is written at once, from the pushing task, when
//! the connection is idle, and never waits: when [`OBSERVER_QUEUE`] frames for the client
//! already wait to be written, it is refused at once with `QueueFull` and logged, so a client
//! that stops reading never holds a grain's turn. Such drops are logged at most once per
//! [`DROPPED_LOG_INTERVAL`](crate::observers::DROPPED_LOG_INTERVAL), with the count of the
//! others.

use std::time::Instant;

use granary_core::{CallError, Payload, SiloId};
use granary_transport::{Encoded, TransportError};

use super::Cluster;
use super::wire::{CallOut, Outgoing, ReplyIn};
use crate::observers::OBSERVER_QUEUE;
use crate::request::RemoteCall;

/// The transport id of the client an observer's reference names: clients connect with
/// generation 0.
pub(crate) fn client_peer(client: &str) -> SiloId {
    SiloId::new(client, 0)
}

impl Cluster {
    /// Runs `call` on an observer of `client` over the client's connection.
    pub(crate) async fn call_client(
        &self,
        client: &SiloId,
        call: RemoteCall,
    ) -> Result<Payload, CallError> {
        let sent = self
            .transport
            .request_peer(
                client,
                Encoded(&Outgoing::Call(CallOut::of(&call))),
                call.timeout,
            )
            .await;
        match sent {
            Ok(reply) => {
                let reply = ReplyIn::decode(&reply)?;
                reply.result.map(|bytes| Payload::Encoded(bytes.to_vec()))
            }
            Err(err) => Err(client_error(call, &err)),
        }
    }

    /// Sends a one-way `call` to an observer of `client` over the client's connection, at
    /// most [`OBSERVER_QUEUE`] frames waiting for it. Never waits.
    ///
    /// # Errors
    /// `ObserverGone` when the client is not connected; `QueueFull` when the client does not
    /// keep up (the push is dropped and logged); `Codec` when the call cannot be sent.
    pub(crate) fn push_to_client(
        &self,
        client: &SiloId,
        call: RemoteCall,
    ) -> Result<(), CallError> {
        let sent = self.transport.try_send_peer(
            client,
            &Encoded(&Outgoing::Call(CallOut::of(&call))),
            OBSERVER_QUEUE,
        );
        match sent {
            Ok(()) => Ok(()),
            Err(TransportError::Backlogged { waiting, .. }) => {
                if let Some(suppressed) = self.dropped_pushes.admit(Instant::now()) {
                    tracing::warn!(
                        client = client.name(),
                        observer = %call.target,
                        limit = waiting,
                        suppressed,
                        "client is not keeping up: push dropped (suppressed: the pushes dropped \
                         since the last warning, to any client)"
                    );
                }
                Err(CallError::QueueFull {
                    grain: call.target,
                    limit: waiting,
                })
            }
            Err(err) => Err(client_error(call, &err)),
        }
    }
}

/// What a failed call to a client's observer means for its caller.
fn client_error(call: RemoteCall, err: &TransportError) -> CallError {
    match err {
        TransportError::NotConnected { .. } | TransportError::Closed => CallError::ObserverGone {
            observer: call.target,
            reason: err.to_string(),
        },
        TransportError::Timeout { .. } => CallError::Timeout {
            grain: call.target,
            method: call.method_name.into_owned(),
            timeout: call.timeout,
        },
        TransportError::TooLarge { .. } | TransportError::Encode { .. } => CallError::Codec {
            what: format!("call {} on {}", call.method_name, call.target),
            reason: err.to_string(),
        },
        _ => CallError::SiloUnavailable {
            silo: call.target.to_string(),
            reason: err.to_string(),
            outcome_unknown: true,
        },
    }
}

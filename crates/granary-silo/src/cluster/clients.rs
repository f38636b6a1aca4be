//! A gateway's side of observers: calls to the observers of the clients connected to this
//! silo travel over each client's own connection (the transport's link with the client's id,
//! which the client opened). One-way pushes to a client are bounded: at most
//! [`OBSERVER_QUEUE`] in flight per client; beyond that a push is refused at once with
//! `QueueFull` and logged, so a client that stops reading never holds a grain's turn.

use std::sync::Arc;

use dashmap::DashMap;
use granary_core::{CallError, Payload, SiloId};
use granary_transport::{Encoded, TransportError};
use tokio::sync::Semaphore;

use super::Cluster;
use super::wire::{CallOut, Outgoing, ReplyIn};
use crate::observers::OBSERVER_QUEUE;
use crate::request::RemoteCall;

/// The pushes in flight per client.
#[derive(Default)]
pub(super) struct Pushes {
    by_client: DashMap<SiloId, Arc<Semaphore>>,
}

/// The transport id of the client an observer's reference names: clients connect with
/// generation 0.
pub(crate) fn client_peer(client: &str) -> SiloId {
    SiloId::new(client, 0)
}

impl Cluster {
    /// Whether the client `client` is connected to this silo.
    pub(crate) fn has_client(&self, client: &SiloId) -> bool {
        self.transport.is_connected(client)
    }

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

    /// Queues a one-way `call` to an observer of `client`: sent by a task of the silo, at most
    /// [`OBSERVER_QUEUE`] per client at a time. Never waits.
    ///
    /// # Errors
    /// `ObserverGone` when the client is not connected; `QueueFull` when it has too many
    /// pushes in flight (the push is dropped and logged).
    pub(crate) fn push_to_client(
        self: &Arc<Self>,
        client: SiloId,
        call: RemoteCall,
    ) -> Result<(), CallError> {
        if !self.has_client(&client) {
            self.pushes.by_client.remove(&client);
            return Err(CallError::ObserverGone {
                observer: call.target,
                reason: format!(
                    "client {} is not connected to silo {}",
                    client.name(),
                    self.me
                ),
            });
        }
        let bound = self
            .pushes
            .by_client
            .entry(client.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(OBSERVER_QUEUE)))
            .clone();
        let Ok(permit) = bound.try_acquire_owned() else {
            tracing::warn!(
                client = client.name(),
                observer = %call.target,
                limit = OBSERVER_QUEUE,
                "client is not keeping up: push dropped"
            );
            return Err(CallError::QueueFull {
                grain: call.target,
                limit: OBSERVER_QUEUE,
            });
        };
        let cluster = self.clone();
        self.shared.spawn(async move {
            let sent = cluster
                .transport
                .send_peer(&client, Encoded(&Outgoing::Call(CallOut::of(&call))))
                .await;
            if let Err(err) = sent {
                tracing::debug!(client = client.name(), cause = %err, "push to a client failed");
            }
            drop(permit);
        });
        Ok(())
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
        _ => CallError::SiloUnavailable {
            silo: call.target.to_string(),
            reason: err.to_string(),
            outcome_unknown: true,
        },
    }
}

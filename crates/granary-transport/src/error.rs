//! [`TransportError`]: why a message did not get through.

use std::time::Duration;

/// Why a request or message between silos failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// No connection to the peer could be made; the peer may be down. Retried with backoff on
    /// the next request.
    #[error("cannot connect to silo at {addr}: {reason}")]
    Unreachable {
        /// The peer's address.
        addr: String,
        /// What failed.
        reason: String,
    },
    /// The peer refused the handshake or failed it: another cluster, another secret, another
    /// protocol version. Check that both silos have the same cluster id and secret.
    #[error("handshake with {addr} failed: {reason}")]
    Handshake {
        /// The peer's address.
        addr: String,
        /// What did not match.
        reason: String,
    },
    /// The connection closed while the request was in flight: its outcome is unknown.
    #[error("connection to {addr} closed with the request in flight (outcome unknown)")]
    ConnectionLost {
        /// The peer's address.
        addr: String,
    },
    /// No response within the caller's timeout; the request was cancelled at the peer. Its
    /// outcome is unknown.
    #[error("no response from {addr} within {timeout:?} (outcome unknown)")]
    Timeout {
        /// The peer's address.
        addr: String,
        /// The caller's timeout.
        timeout: Duration,
    },
    /// The message is larger than the frame limit; send less per message.
    #[error("message of {size} bytes exceeds the frame limit of {limit} bytes")]
    TooLarge {
        /// The encoded size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The message could not be encoded (its `Serialize` implementation failed): a bug in the
    /// message type, not in the connection, which stays open.
    #[error("cannot encode the message: {reason}")]
    Encode {
        /// What the encoder reported.
        reason: String,
    },
    /// The peer could not send its answer (e.g. larger than the frame limit).
    #[error("silo at {addr} could not answer: {reason}")]
    Refused {
        /// The peer's address.
        addr: String,
        /// What the peer reported.
        reason: String,
    },
    /// Another silo than the one asked for listens at the address (a process restarted on a
    /// dead silo's address): nothing was sent. The asked silo is gone; its grains are served
    /// again once the cluster declares it dead.
    #[error("{silo} listens at {addr} now, not the silo asked for")]
    OtherSilo {
        /// The address.
        addr: String,
        /// The silo that answers there.
        silo: granary_core::SiloId,
    },
    /// No link with the peer is open, and this request does not dial (a gateway reaching a
    /// client over the client's own connection): the peer disconnected.
    #[error("no open connection with {peer}")]
    NotConnected {
        /// The peer.
        peer: String,
    },
    /// A message sent without waiting found `waiting` frames for the peer not yet written:
    /// the peer does not read as fast as it is sent to. Nothing was sent; send again later or
    /// drop the message (a gateway drops a push to a client that does not keep up).
    #[error("{waiting} frames wait to be written to {peer}: it does not keep up; nothing was sent")]
    Backlogged {
        /// The peer.
        peer: String,
        /// The frames waiting, the bound the send asked for.
        waiting: usize,
    },
    /// The transport is shutting down.
    #[error("the transport is shut down")]
    Closed,
    /// The TLS handshake with the peer failed, or one side has TLS and the other not: the
    /// reason says which certificate or setting (`GRANARY_TLS_*`) is at fault.
    #[error("TLS with {addr} failed: {reason}")]
    Tls {
        /// The peer's address.
        addr: String,
        /// What failed, and the setting to check.
        reason: String,
    },
}

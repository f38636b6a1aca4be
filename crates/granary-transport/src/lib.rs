//! Granary's silo-to-silo transport: authenticated TCP links carrying size-capped frames.
//!
//! - **Handshake before anything is dispatched.** Both sides prove, with an HMAC over fresh
//!   nonces, that they hold the cluster secret and belong to the same cluster (see
//!   [`handshake`](crate#handshake)). A peer that fails is disconnected; none of its frames
//!   reaches the [`Handler`].
//! - **Frames**: a 4-byte length, then the frame: during the handshake one frame encoded with
//!   the wire codec (bincode with a size limit), after it a fixed header (tag, id, time left)
//!   and the body (see `frame`). The length is checked against the cap before anything is
//!   allocated: 1 KiB until the handshake completed, [`TransportConfig::frame_limit`] after. A
//!   bad frame (oversized, malformed, unknown) closes that link only.
//! - **Few strangers at a time.** At most [`TransportConfig::max_pending_handshakes`]
//!   accepted connections may be in their handshake; one more is closed at once, so a flood of
//!   connections that never authenticate costs no task and no socket beyond the cap. Refusals
//!   are logged at most once per [`TransportConfig::refusal_log_interval`], with the count of
//!   those not logged. Authenticated links do not count.
//! - **Requests** carry the time their caller still waits; the peer drops a request whose
//!   caller gave up (a `Cancel` frame, or its deadline passing). Responses are matched by id.
//!   A timeout too long for `Instant` arithmetic (`Duration::MAX`) means no deadline.
//! - **Coalesced writes, no copies**: a message is encoded straight into its link's one write
//!   buffer ([`Encoded`]) and arrives at the [`Handler`] as a slice of the read buffer. A lone
//!   request is written by its caller at once; under load many frames share a syscall (the
//!   link's writer task), and the answers the reader could give at once to the requests of one
//!   read go out in one write. The buffer is bounded: senders wait when a peer cannot keep up
//!   (backpressure).
//! - **Reconnection**: one link per peer address, dialed on demand; after a failure, requests
//!   fail fast until a backoff (doubling up to [`TransportConfig::backoff_max`]) has passed.
//! - **Refusal**: [`Transport::refuse`] closes every link with a silo the cluster declared dead
//!   and refuses its handshakes from then on (dead is final).
//!
//! # Handshake
//!
//! 1. dialer → `Hello { cluster, silo, nonce_d }`
//! 2. listener checks the protocol version and cluster → `Hello { nonce_l }`
//! 3. dialer → `Proof { HMAC(secret, "dialer", cluster, nonce_l, nonce_d, dialer, listener) }`
//! 4. listener verifies → `Proof { HMAC(secret, "listener", cluster, nonce_d, nonce_l, listener,
//!    dialer) }`
//! 5. dialer verifies.

mod error;
mod faults;
mod frame;
mod handshake;
mod link;
mod stream;
mod tls;
mod transport;

/// The bytes type of bodies and answers (re-exported, so that users need no dependency of
/// their own on the `bytes` crate).
pub use bytes::Bytes;
pub use error::TransportError;
#[doc(hidden)]
pub use faults::Faults;
pub use frame::{HANDSHAKE_FRAME_LIMIT, PROTOCOL_VERSION};
pub use link::{Body, Encoded, Handler};
pub use tls::{
    TLS_CA_SETTING, TLS_CERT_SETTING, TLS_KEY_SETTING, TLS_MUTUAL_SETTING, TLS_SERVER_NAME_SETTING,
    TlsBuilder, TlsConfig, TlsError,
};
pub use transport::{Transport, TransportConfig};

#[doc(hidden)]
pub mod __private {
    //! For tests of misbehaving peers: a connection that passed the handshake, handed over raw.

    use std::net::SocketAddr;

    use bytes::Bytes;
    use futures::SinkExt;
    use tokio::net::TcpStream;
    use tokio_util::codec::Framed;

    use crate::frame::{HANDSHAKE_FRAME_LIMIT, codec};
    use crate::handshake::{self, Identity};
    use crate::transport::TransportConfig;

    /// Dials `addr`, runs the handshake as `config`'s silo, and returns the raw connection.
    ///
    /// # Errors
    /// What failed.
    pub async fn handshaken(
        config: &TransportConfig,
        addr: SocketAddr,
    ) -> Result<Framed<TcpStream, tokio_util::codec::LengthDelimitedCodec>, String> {
        let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let mut wire = Framed::new(stream, codec(HANDSHAKE_FRAME_LIMIT));
        let identity = Identity {
            cluster: config.cluster.clone(),
            silo: config.silo.clone(),
            secret: config.secret.clone().into(),
        };
        handshake::dial(&mut wire, &identity, config.handshake_timeout).await?;
        wire.codec_mut().set_max_frame_length(usize::MAX);
        Ok(wire)
    }

    /// Sends raw bytes as one frame.
    ///
    /// # Errors
    /// The I/O error.
    pub async fn send_raw(
        wire: &mut Framed<TcpStream, tokio_util::codec::LengthDelimitedCodec>,
        bytes: Vec<u8>,
    ) -> std::io::Result<()> {
        wire.send(Bytes::from(bytes)).await
    }
}

//! The handshake: both sides prove they hold the cluster secret before any frame is dispatched.
//!
//! 1. dialer → `Hello { cluster, silo, nonce_d }`
//! 2. listener checks version and cluster (closes silently if they differ) → `Hello { nonce_l }`
//! 3. dialer → `Proof { HMAC(secret, "dialer", cluster, nonce_l, nonce_d, dialer, listener) }`
//! 4. listener verifies (closes if wrong) → `Proof { HMAC(secret, "listener", cluster, nonce_d,
//!    nonce_l, listener, dialer) }`
//! 5. dialer verifies.
//!
//! Each proof signs the other side's fresh nonce, so a recorded handshake cannot be replayed, and
//! names both silos, so a proof cannot be reflected. The secret never crosses the wire.

use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use granary_core::{SiloId, codec};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use crate::frame::{Handshake, PROTOCOL_VERSION};

/// Who this side is and what it shares with the cluster.
#[derive(Clone)]
pub(crate) struct Identity {
    pub(crate) cluster: String,
    pub(crate) silo: SiloId,
    pub(crate) secret: std::sync::Arc<[u8]>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("cluster", &self.cluster)
            .field("silo", &self.silo)
            .finish_non_exhaustive()
    }
}

type Wire<S> = Framed<S, LengthDelimitedCodec>;

fn nonce() -> [u8; 32] {
    let mut out = [0u8; 32];
    out[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    out[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    out
}

fn mac(
    identity: &Identity,
    role: &str,
    challenge: &[u8; 32],
    own_nonce: &[u8; 32],
    prover: &SiloId,
    verifier: &SiloId,
) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&identity.secret)
        .expect("HMAC takes keys of any length");
    for part in [
        b"granary-handshake-v1".as_slice(),
        role.as_bytes(),
        identity.cluster.as_bytes(),
        challenge,
        own_nonce,
        prover.name().as_bytes(),
        &prover.generation().to_le_bytes(),
        verifier.name().as_bytes(),
        &verifier.generation().to_le_bytes(),
    ] {
        // Length-prefixed, so that no two different inputs concatenate to the same bytes.
        mac.update(&(part.len() as u64).to_le_bytes());
        mac.update(part);
    }
    mac
}

async fn send<S: AsyncRead + AsyncWrite + Unpin>(
    wire: &mut Wire<S>,
    frame: &Handshake,
) -> Result<(), String> {
    let bytes = codec::encode(frame).map_err(|e| e.to_string())?;
    wire.send(Bytes::from(bytes))
        .await
        .map_err(|e| e.to_string())
}

async fn receive<S: AsyncRead + AsyncWrite + Unpin>(
    wire: &mut Wire<S>,
) -> Result<Handshake, String> {
    match wire.next().await {
        Some(Ok(bytes)) => codec::decode(&bytes).map_err(|e| format!("malformed frame: {e}")),
        // A TLS alert (the peer refused this side's certificate) says what to fix.
        Some(Err(e)) => Err(crate::tls::explain_alert(&e).unwrap_or_else(|| e.to_string())),
        None => Err("the peer closed the connection".into()),
    }
}

fn check_hello(identity: &Identity, frame: Handshake) -> Result<(SiloId, [u8; 32]), String> {
    match frame {
        Handshake::Hello {
            version,
            cluster,
            silo,
            nonce,
        } => {
            if version != PROTOCOL_VERSION {
                return Err(format!(
                    "protocol version {version}, this silo speaks {PROTOCOL_VERSION}"
                ));
            }
            if cluster != identity.cluster {
                return Err(format!(
                    "cluster {cluster:?}, this silo is in {:?}",
                    identity.cluster
                ));
            }
            Ok((silo, nonce))
        }
        other => Err(format!("expected Hello, got {}", frame_name(&other))),
    }
}

fn check_proof(expected: Hmac<Sha256>, frame: Handshake) -> Result<(), String> {
    match frame {
        Handshake::Proof { mac } => expected
            .verify_slice(&mac)
            .map_err(|_| "wrong proof: the peer does not hold the cluster secret".to_owned()),
        other => Err(format!("expected Proof, got {}", frame_name(&other))),
    }
}

fn proof(mac: Hmac<Sha256>) -> Handshake {
    Handshake::Proof {
        mac: mac.finalize().into_bytes().into(),
    }
}

fn frame_name(frame: &Handshake) -> &'static str {
    match frame {
        Handshake::Hello { .. } => "Hello",
        Handshake::Proof { .. } => "Proof",
    }
}

/// Runs the dialer's side; returns the listener's silo id.
pub(crate) async fn dial<S: AsyncRead + AsyncWrite + Unpin>(
    wire: &mut Wire<S>,
    identity: &Identity,
    timeout: Duration,
) -> Result<SiloId, String> {
    let steps = async {
        let own = nonce();
        send(
            wire,
            &Handshake::Hello {
                version: PROTOCOL_VERSION,
                cluster: identity.cluster.clone(),
                silo: identity.silo.clone(),
                nonce: own,
            },
        )
        .await?;
        let (peer, challenge) = check_hello(identity, receive(wire).await?)?;
        send(
            wire,
            &proof(mac(
                identity,
                "dialer",
                &challenge,
                &own,
                &identity.silo,
                &peer,
            )),
        )
        .await?;
        let expected = mac(
            identity,
            "listener",
            &own,
            &challenge,
            &peer,
            &identity.silo,
        );
        check_proof(expected, receive(wire).await?)?;
        Ok(peer)
    };
    tokio::time::timeout(timeout, steps)
        .await
        .map_err(|_| format!("no handshake within {timeout:?}"))?
}

/// Runs the listener's side; returns the dialer's silo id. On failure the caller closes the
/// connection: nothing of the peer has been dispatched. A dialer that proved who it is but is
/// `refused` (a silo declared dead) gets no proof back: its side fails the handshake.
pub(crate) async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    wire: &mut Wire<S>,
    identity: &Identity,
    timeout: Duration,
    refused: impl Fn(&SiloId) -> bool,
) -> Result<SiloId, String> {
    let steps = async {
        let (peer, challenge) = check_hello(identity, receive(wire).await?)?;
        let own = nonce();
        send(
            wire,
            &Handshake::Hello {
                version: PROTOCOL_VERSION,
                cluster: identity.cluster.clone(),
                silo: identity.silo.clone(),
                nonce: own,
            },
        )
        .await?;
        let expected = mac(identity, "dialer", &own, &challenge, &peer, &identity.silo);
        check_proof(expected, receive(wire).await?)?;
        if refused(&peer) {
            return Err(format!("silo {peer} was declared dead"));
        }
        send(
            wire,
            &proof(mac(
                identity,
                "listener",
                &challenge,
                &own,
                &identity.silo,
                &peer,
            )),
        )
        .await?;
        Ok(peer)
    };
    tokio::time::timeout(timeout, steps)
        .await
        .map_err(|_| format!("no handshake within {timeout:?}"))?
}

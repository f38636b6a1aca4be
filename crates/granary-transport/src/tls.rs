//! [`TlsConfig`]: TLS for links between silos and between clients and their gateways.
//!
//! Every silo has a certificate signed by the cluster's CA, presents it when it accepts a link
//! and checks the peer's when it dials (against the peer's address, or one shared
//! [`server_name`](TlsBuilder::server_name)). In mutual mode a silo also requires, and checks,
//! the certificate of every peer that dials it, clients included. The cluster-secret
//! handshake still runs inside the TLS session: it names the peer silo and its cluster.
//!
//! Only TLS 1.3 is spoken, with the `ring` crypto provider, chosen explicitly (a process may
//! have other providers compiled in).

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::stream::Stream;

/// The setting that names the trusted CA (a PEM file).
pub const TLS_CA_SETTING: &str = "GRANARY_TLS_CA";
/// The setting that names this side's certificate chain (a PEM file).
pub const TLS_CERT_SETTING: &str = "GRANARY_TLS_CERT";
/// The setting that names this side's private key (a PEM file).
pub const TLS_KEY_SETTING: &str = "GRANARY_TLS_KEY";
/// The setting that turns on mutual authentication (`1`).
pub const TLS_MUTUAL_SETTING: &str = "GRANARY_TLS_MUTUAL";
/// The setting that names the one server name every silo's certificate carries.
pub const TLS_SERVER_NAME_SETTING: &str = "GRANARY_TLS_SERVER_NAME";

/// Why a [`TlsConfig`] could not be built. Each variant names the setting at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A setting TLS needs was not given; give it.
    #[error("{setting} is not set: {why}")]
    Missing {
        /// The setting.
        setting: &'static str,
        /// Why it is needed.
        why: &'static str,
    },
    /// The file a setting names cannot be read; check the path and its permissions.
    #[error("{setting}: cannot read {}: {source}", path.display())]
    Read {
        /// The setting.
        setting: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The PEM a setting gives holds no usable certificate or key; give a PEM file with
    /// `CERTIFICATE` blocks (the CA, the chain) or one `PRIVATE KEY` block (the key).
    #[error("{setting}: {reason}")]
    Pem {
        /// The setting.
        setting: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the material (a key that does not match the certificate, a CA that is
    /// not one, a bad server name); the reason says which.
    #[error("{setting}: {reason}")]
    Rejected {
        /// The setting.
        setting: &'static str,
        /// rustls's reason.
        reason: String,
    },
}

/// Where a PEM document comes from.
#[derive(Debug, Clone)]
enum Pem {
    File(PathBuf),
    Bytes(Vec<u8>),
}

impl Pem {
    fn load(&self, setting: &'static str) -> Result<Vec<u8>, TlsError> {
        match self {
            Self::File(path) => std::fs::read(path).map_err(|source| TlsError::Read {
                setting,
                path: path.clone(),
                source,
            }),
            Self::Bytes(bytes) => Ok(bytes.clone()),
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::File(path) => path.display().to_string(),
            Self::Bytes(_) => "the PEM given".to_owned(),
        }
    }
}

/// Builds a [`TlsConfig`]: the CA to trust, this side's certificate and key, mutual mode.
#[derive(Debug, Clone, Default)]
pub struct TlsBuilder {
    ca: Option<Pem>,
    cert: Option<Pem>,
    key: Option<Pem>,
    mutual: bool,
    server_name: Option<String>,
}

impl TlsBuilder {
    /// Trusts the CA certificates of the PEM file at `path` ([`TLS_CA_SETTING`]).
    #[must_use]
    pub fn ca_file(mut self, path: impl AsRef<Path>) -> Self {
        self.ca = Some(Pem::File(path.as_ref().to_owned()));
        self
    }

    /// Trusts the CA certificates of `pem`.
    #[must_use]
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca = Some(Pem::Bytes(pem.into()));
        self
    }

    /// Presents the certificate chain of the PEM file at `cert` with the private key of the PEM
    /// file at `key` ([`TLS_CERT_SETTING`], [`TLS_KEY_SETTING`]). A silo needs one; a client
    /// needs one only when its gateways are in mutual mode.
    #[must_use]
    pub fn identity_files(mut self, cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Self {
        self.cert = Some(Pem::File(cert.as_ref().to_owned()));
        self.key = Some(Pem::File(key.as_ref().to_owned()));
        self
    }

    /// Presents the certificate chain `cert` with the private key `key` (both PEM).
    #[must_use]
    pub fn identity_pem(mut self, cert: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Self {
        self.cert = Some(Pem::Bytes(cert.into()));
        self.key = Some(Pem::Bytes(key.into()));
        self
    }

    /// Mutual authentication ([`TLS_MUTUAL_SETTING`]): every peer that dials this side must
    /// present a certificate signed by the trusted CA, or it is refused. Needs an identity.
    #[must_use]
    pub fn mutual(mut self, mutual: bool) -> Self {
        self.mutual = mutual;
        self
    }

    /// Checks every peer's certificate against `name` ([`TLS_SERVER_NAME_SETTING`]; a DNS
    /// name such as `granary.internal`), instead of against the address dialed. Use it when
    /// the silos' certificates carry one shared name rather than each silo's IP address.
    #[must_use]
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// Loads and checks the certificates and the key.
    ///
    /// # Errors
    /// A [`TlsError`] that names the setting at fault: the CA missing, a file unreadable, a
    /// PEM without a certificate or key, a key that does not match its certificate, mutual
    /// mode without an identity, a bad server name.
    pub fn build(self) -> Result<TlsConfig, TlsError> {
        let Some(ca) = &self.ca else {
            return Err(TlsError::Missing {
                setting: TLS_CA_SETTING,
                why: "TLS needs the CA that signed the cluster's certificates",
            });
        };
        let roots = Arc::new(roots(ca)?);
        let identity = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Some((chain(cert)?, private_key(key)?)),
            (Some(_), None) => {
                return Err(TlsError::Missing {
                    setting: TLS_KEY_SETTING,
                    why: "a certificate needs its private key",
                });
            }
            (None, Some(_)) => {
                return Err(TlsError::Missing {
                    setting: TLS_CERT_SETTING,
                    why: "a private key needs its certificate",
                });
            }
            (None, None) if self.mutual => {
                return Err(TlsError::Missing {
                    setting: TLS_CERT_SETTING,
                    why: "mutual TLS needs this side's certificate and key",
                });
            }
            (None, None) => None,
        };
        let server_name = self
            .server_name
            .map(|name| {
                ServerName::try_from(name.clone()).map_err(|e| TlsError::Rejected {
                    setting: TLS_SERVER_NAME_SETTING,
                    reason: format!("{name:?} is not a server name: {e}"),
                })
            })
            .transpose()?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let rejected = |setting: &'static str| {
            move |e: rustls::Error| TlsError::Rejected {
                setting,
                reason: e.to_string(),
            }
        };
        let client = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(rejected(TLS_CA_SETTING))?
            .with_root_certificates(roots.clone());
        let client = match &identity {
            Some((chain, key)) => client
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .map_err(rejected(TLS_KEY_SETTING))?,
            None => client.with_no_client_auth(),
        };
        let server = match identity {
            Some((chain, key)) => {
                let builder = ServerConfig::builder_with_provider(provider.clone())
                    .with_protocol_versions(&[&rustls::version::TLS13])
                    .map_err(rejected(TLS_CA_SETTING))?;
                let builder = if self.mutual {
                    let verifier =
                        WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
                            .build()
                            .map_err(|e| TlsError::Rejected {
                                setting: TLS_CA_SETTING,
                                reason: e.to_string(),
                            })?;
                    builder.with_client_cert_verifier(verifier)
                } else {
                    builder.with_no_client_auth()
                };
                Some(Arc::new(
                    builder
                        .with_single_cert(chain, key)
                        .map_err(rejected(TLS_KEY_SETTING))?,
                ))
            }
            None => None,
        };
        Ok(TlsConfig {
            client: Arc::new(client),
            server,
            server_name,
            mutual: self.mutual,
        })
    }
}

fn certificates(
    pem: &Pem,
    setting: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = pem.load(setting)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            setting,
            reason: format!("{} is not valid PEM: {e}", pem.describe()),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            setting,
            reason: format!("{} holds no CERTIFICATE block", pem.describe()),
        });
    }
    Ok(certs)
}

fn roots(pem: &Pem) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(pem, TLS_CA_SETTING)? {
        roots.add(cert).map_err(|e| TlsError::Pem {
            setting: TLS_CA_SETTING,
            reason: format!(
                "{} holds a certificate that cannot be trusted: {e}",
                pem.describe()
            ),
        })?;
    }
    Ok(roots)
}

fn chain(pem: &Pem) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    certificates(pem, TLS_CERT_SETTING)
}

fn private_key(pem: &Pem) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = pem.load(TLS_KEY_SETTING)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::Pem {
        setting: TLS_KEY_SETTING,
        reason: format!("{} holds no usable PRIVATE KEY block: {e}", pem.describe()),
    })
}

/// TLS for a [`Transport`](crate::Transport): built once with [`TlsConfig::builder`], cheap to
/// clone.
#[derive(Clone)]
pub struct TlsConfig {
    client: Arc<ClientConfig>,
    /// `None` without an identity: such a side (a client) dials but refuses every connection
    /// it is offered.
    server: Option<Arc<ServerConfig>>,
    server_name: Option<ServerName<'static>>,
    mutual: bool,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("identity", &self.server.is_some())
            .field("mutual", &self.mutual)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// A builder: give it at least the CA ([`TlsBuilder::ca_file`]).
    #[must_use]
    pub fn builder() -> TlsBuilder {
        TlsBuilder::default()
    }

    /// Whether peers that dial this side must present a certificate.
    #[must_use]
    pub fn is_mutual(&self) -> bool {
        self.mutual
    }

    /// Runs the TLS handshake as the dialer of `addr`.
    pub(crate) async fn connect(&self, tcp: TcpStream, addr: SocketAddr) -> Result<Stream, String> {
        let name = self
            .server_name
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()));
        let stream = TlsConnector::from(self.client.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| explain(&e))?;
        Ok(Stream::Tls(Box::new(stream.into())))
    }

    /// Runs the TLS handshake as the listener.
    pub(crate) async fn accept(&self, tcp: TcpStream) -> Result<Stream, String> {
        let Some(server) = &self.server else {
            return Err("this side has no certificate, so it accepts no TLS connection".into());
        };
        let stream = TlsAcceptor::from(server.clone())
            .accept(tcp)
            .await
            .map_err(|e| explain(&e))?;
        Ok(Stream::Tls(Box::new(stream.into())))
    }
}

/// Prefix of a cluster-handshake failure that a TLS error caused (see [`explain_alert`]).
pub(crate) const TLS_FAILURE: &str = "TLS: ";

/// What a TLS error that ended the cluster handshake means (the peer checks a client's
/// certificate after the TLS handshake completed on the client's side, and says no with an
/// alert on the first read), prefixed with [`TLS_FAILURE`]; `None` for other errors.
pub(crate) fn explain_alert(error: &io::Error) -> Option<String> {
    error
        .get_ref()
        .is_some_and(|e| e.is::<rustls::Error>())
        .then(|| format!("{TLS_FAILURE}{}", explain(error)))
}

/// Says what a TLS failure means and which setting to look at.
pub(crate) fn explain(error: &io::Error) -> String {
    use rustls::{AlertDescription, CertificateError, Error};
    const SAME_SETTINGS: &str = "every silo and client of a cluster needs TLS on (GRANARY_TLS_CA) \
         or every one off";
    let hint = match error.get_ref().and_then(|e| e.downcast_ref::<Error>()) {
        Some(Error::InvalidCertificate(cause)) => match cause {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "the peer's certificate has expired: give it a new one (GRANARY_TLS_CERT)".into()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "the peer's certificate is not valid yet: check its dates and the clocks".into()
            }
            CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                "the peer's certificate is not signed by the CA this side trusts \
                 (GRANARY_TLS_CA)"
                    .into()
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "the peer's certificate is not valid for the address dialed: give it that \
                 address as an IP subject alternative name, or set GRANARY_TLS_SERVER_NAME to \
                 a name every silo's certificate carries"
                    .into()
            }
            _ => "the peer's certificate was refused".to_owned(),
        },
        Some(Error::AlertReceived(AlertDescription::CertificateRequired)) => {
            "the peer requires a certificate of this side (mutual TLS): set GRANARY_TLS_CERT \
             and GRANARY_TLS_KEY"
                .into()
        }
        Some(Error::AlertReceived(
            alert @ (AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown
            | AlertDescription::DecryptError),
        )) => format!(
            "the peer refused this side's certificate ({alert:?}): it must be signed by the CA \
             the peer trusts (its GRANARY_TLS_CA) and not expired (GRANARY_TLS_CERT)"
        ),
        Some(Error::NoCertificatesPresented) => {
            "the peer presented no certificate, and this side requires one (GRANARY_TLS_MUTUAL)"
                .into()
        }
        Some(Error::InvalidMessage(_)) => {
            format!("the peer does not speak TLS (it listens without it?): {SAME_SETTINGS}")
        }
        _ if error.kind() == io::ErrorKind::UnexpectedEof => format!(
            "the peer closed the connection in the TLS handshake (it listens without TLS, or \
             refused this side's certificate?): {SAME_SETTINGS}"
        ),
        _ => "TLS handshake failed".to_owned(),
    };
    format!("{hint} ({error})")
}

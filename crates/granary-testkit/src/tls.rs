//! TLS for the tests of the Redis, NATS, RabbitMQ and Kafka links: certificates generated per
//! test ([`TestPki`]: nothing is committed) and a TLS-terminating proxy ([`TlsProxy`]) that puts
//! a TLS listener in front of a plaintext server the test cannot reconfigure (the shared
//! RabbitMQ, a Kafka-protocol broker).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    date_time_ymd,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::redis_server::unique_name;

/// A certificate and its private key, as PEM files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM, PKCS#8).
    pub key: PathBuf,
}

/// A test's certificates, written as PEM files to a directory of its own (removed when
/// dropped): a CA, a server certificate it signed for `localhost` and `127.0.0.1`, an expired
/// one, a client certificate, and a second CA that signed none of them.
#[derive(Debug)]
pub struct TestPki {
    dir: PathBuf,
    /// The CA that signed [`server`](Self::server), [`expired_server`](Self::expired_server)
    /// and [`client`](Self::client).
    pub ca: PathBuf,
    /// A CA that signed nothing here: a client that trusts only it refuses every server of
    /// this PKI (the "wrong CA" case).
    pub other_ca: PathBuf,
    /// A server certificate for `localhost` and `127.0.0.1`, valid now.
    pub server: CertFiles,
    /// A server certificate for the same names that expired in 2020.
    pub expired_server: CertFiles,
    /// A client certificate (for servers that require one).
    pub client: CertFiles,
}

impl TestPki {
    /// Generates the certificates and writes them to a new directory under the system's
    /// temporary directory.
    ///
    /// # Panics
    /// If a key cannot be generated or a file cannot be written.
    #[must_use]
    pub fn generate() -> Self {
        let dir = std::env::temp_dir().join(unique_name("granary-pki"));
        std::fs::create_dir_all(&dir).expect("the temporary directory is writable");
        let write = |name: &str, pem: &str| {
            let path = dir.join(name);
            std::fs::write(&path, pem).expect("the PKI directory is writable");
            path
        };
        let (ca, ca_key) = new_ca("Granary test CA");
        let ca_pem = write("ca.pem", &ca.self_signed(&ca_key).expect("CA signs").pem());
        let (other_params, other_key) = new_ca("Granary other CA");
        let other_ca = write(
            "other-ca.pem",
            &other_params
                .self_signed(&other_key)
                .expect("CA signs")
                .pem(),
        );
        let issuer = Issuer::new(ca, ca_key);
        let leaf = |name: &str, params: CertificateParams| {
            let key = KeyPair::generate().expect("a key pair");
            let cert = params.signed_by(&key, &issuer).expect("the CA signs");
            CertFiles {
                cert: write(&format!("{name}.pem"), &cert.pem()),
                key: write(&format!("{name}-key.pem"), &key.serialize_pem()),
            }
        };
        let server_names = || {
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("valid names")
        };
        let server = leaf("server", server_names());
        let mut expired = server_names();
        expired.not_before = date_time_ymd(2019, 1, 1);
        expired.not_after = date_time_ymd(2020, 1, 1);
        let expired_server = leaf("expired-server", expired);
        let client = leaf(
            "client",
            CertificateParams::new(vec!["granary-client".to_owned()]).expect("valid name"),
        );
        Self {
            dir,
            ca: ca_pem,
            other_ca,
            server,
            expired_server,
            client,
        }
    }

    /// The directory holding the files.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for TestPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The parameters and key of a CA named `name`.
fn new_ca(name: &str) -> (CertificateParams, KeyPair) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("no names is valid");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    (params, KeyPair::generate().expect("a key pair"))
}

/// Awaits `connect`, which must fail within `within` (a TLS mistake fails at connect, never
/// hangs); returns its error's message.
///
/// # Panics
/// If it connects, or has not failed within `within`.
pub async fn connect_fails<T: std::fmt::Debug, E: std::fmt::Display>(
    within: Duration,
    connect: impl Future<Output = Result<T, E>>,
) -> String {
    match tokio::time::timeout(within, connect).await {
        Err(_) => panic!("the connect did not fail within {within:?}"),
        Ok(Ok(connected)) => panic!("connected: {connected:?}"),
        Ok(Err(err)) => err.to_string(),
    }
}

/// A loopback port that was free a moment ago: for a [`TlsProxy::start_at`] whose address a
/// server must know before the proxy starts.
#[must_use]
pub fn free_port() -> u16 {
    crate::private_server::free_port()
}

/// A TLS listener on a free loopback port that forwards each connection, decrypted, to a
/// plaintext server: a TLS-terminating proxy, as a load balancer in front of a broker would
/// be. Stops (its connections with it) when dropped.
#[derive(Debug)]
pub struct TlsProxy {
    addr: SocketAddr,
    tasks: JoinSet<()>,
}

/// How long the proxy waits for a client's TLS handshake before dropping the connection.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl TlsProxy {
    /// Starts the proxy: it presents `server` (certificate and key) to its clients and
    /// forwards to `upstream`.
    ///
    /// # Panics
    /// If the certificate or key cannot be read, or no loopback port can be bound.
    pub async fn start(upstream: SocketAddr, server: &CertFiles) -> Self {
        Self::start_at(0, upstream, server).await
    }

    /// As [`start`](Self::start), on loopback port `port` (`0`: a free one): for a server that
    /// must know the proxy's address before the proxy starts (a Kafka broker advertises it).
    ///
    /// # Panics
    /// As [`start`](Self::start), and if `port` is taken.
    pub async fn start_at(port: u16, upstream: SocketAddr, server: &CertFiles) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("the loopback port can be bound");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config(server)));
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            // Dropping the set aborts every connection when the proxy stops.
            let mut connections = JoinSet::new();
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                connections.spawn(async move {
                    let Ok(Ok(mut tls)) =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(client)).await
                    else {
                        return;
                    };
                    let Ok(mut plain) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
                // Reap the finished ones so that the set does not grow without bound.
                while connections.try_join_next().is_some() {}
            }
        });
        Self { addr, tasks }
    }

    /// The proxy's TLS address.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The proxy's port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

/// A rustls server configuration (ring) presenting `server`.
fn server_config(server: &CertFiles) -> rustls::ServerConfig {
    let certs = CertificateDer::pem_file_iter(&server.cert)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .expect("the server certificate is PEM");
    let key = PrivateKeyDer::from_pem_file(&server.key).expect("the server key is PEM");
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("the certificate matches its key")
}

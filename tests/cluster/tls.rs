//! TLS on silo links and client links, with certificates made in the test: peers without a
//! trusted, unexpired certificate are refused with an error that says why; TLS and plaintext
//! peers fail at connect, naming the setting, never hanging; what crosses the wire is
//! unreadable (a recording proxy finds no grain name or payload, and finds both on a plaintext
//! link); a two-silo cluster and a client work over mutual TLS.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use granary::{
    ClientConfig, ClusterClient, ClusterConfig, Placement, Silo, SiloConfig, SiloId, TlsConfig,
};
use granary_testkit::certs::{TestCa, TestCert};
use granary_testkit::redis_server::{shared_redis_url, unique_name};
use granary_tests::{CounterGrain, GuildGrain};
use granary_transport::{Bytes, Handler, Transport, TransportConfig, TransportError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SECRET: &[u8] = b"a cluster secret of at least 32 bytes";

/// Longer than any handshake may take here: reaching it means a hang.
const NO_HANG: Duration = Duration::from_secs(30);

/// Answers every request with its body, counting them.
#[derive(Default)]
struct Echo(AtomicUsize);

impl Handler for Echo {
    fn request(&self, _: &SiloId, body: Bytes, _: Duration) -> BoxFuture<'static, Vec<u8>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move { body.to_vec() })
    }
    fn one_way(&self, _: &SiloId, _: Bytes) {}
}

/// A transport of `cluster` named `name`, with `tls`, listening on a free loopback port.
async fn transport(
    cluster: &str,
    name: &str,
    tls: Option<TlsConfig>,
    echo: Arc<Echo>,
) -> Transport {
    let config = TransportConfig {
        tls,
        ..TransportConfig::new(cluster, SECRET.to_vec(), SiloId::new(name, 1))
    };
    Transport::bind(config, "127.0.0.1:0".parse().unwrap(), echo)
        .await
        .unwrap()
}

/// One request from a new transport with `tls` to `to`: its answer or its error, never a hang.
async fn ping(
    cluster: &str,
    tls: Option<TlsConfig>,
    to: SocketAddr,
) -> Result<Bytes, TransportError> {
    let dialer = transport(cluster, "dialer", tls, Arc::default()).await;
    let answer = tokio::time::timeout(
        NO_HANG,
        dialer.request(to, b"ping".to_vec(), Duration::from_secs(20)),
    )
    .await
    .expect("the request ends with an answer or an error, never hangs");
    dialer.shutdown().await;
    answer
}

/// The reason of a TLS error; fails the test on any other outcome.
fn tls_reason(outcome: Result<Bytes, TransportError>) -> String {
    match outcome {
        Err(TransportError::Tls { reason, .. }) => reason,
        other => panic!("expected a TLS error, got {other:?}"),
    }
}

/// Why a new transport with `tls` is refused by `to` (a TLS error, or the test fails).
async fn refusal(cluster: &str, tls: Option<TlsConfig>, to: SocketAddr) -> String {
    tls_reason(ping(cluster, tls, to).await)
}

/// A transport with `cert`, trusting `ca`, in mutual mode or not.
async fn secure(
    cluster: &str,
    ca: &TestCa,
    cert: &TestCert,
    mutual: bool,
    echo: Arc<Echo>,
) -> Transport {
    let tls = ca.tls(Some(cert)).mutual(mutual).build().unwrap();
    transport(cluster, "listener", Some(tls), echo).await
}

/// A transport with a certificate `ca` signed for `address`, not in mutual mode.
async fn serving(cluster: &str, ca: &TestCa, address: &str) -> Transport {
    secure(cluster, ca, &ca.issue(&[address]), false, Arc::default()).await
}

/// TLS that trusts `ca` and presents no certificate.
fn trusting(ca: &TestCa) -> Option<TlsConfig> {
    Some(ca.tls(None).build().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_a_peer_without_a_certificate_the_ca_signed() {
    let cluster = unique_name("tls-mutual");
    let (ca, stranger) = (TestCa::new("cluster CA"), TestCa::new("another CA"));
    let echo = Arc::new(Echo::default());
    let listener = secure(&cluster, &ca, &ca.issue(&["127.0.0.1"]), true, echo.clone()).await;
    let to = listener.local_addr();

    let trusted = ca.tls(Some(&ca.issue(&["127.0.0.1"]))).build().unwrap();
    let answer = ping(&cluster, Some(trusted), to).await.unwrap();
    assert_eq!(&answer[..], b"ping");

    // No certificate at all: the listener asks for one and refuses the link.
    let reason = refusal(&cluster, trusting(&ca), to).await;
    assert!(reason.contains("GRANARY_TLS_CERT"), "{reason}");

    // A certificate, trusting the right CA, but signed by another.
    let forged = stranger.issue(&["127.0.0.1"]);
    let untrusted = TlsConfig::builder()
        .ca_pem(ca.pem())
        .identity_pem(forged.cert_pem, forged.key_pem)
        .build()
        .unwrap();
    let reason = refusal(&cluster, Some(untrusted), to).await;
    assert!(
        reason.contains("refused this side's certificate"),
        "{reason}"
    );

    // Only the trusted peer's request reached the handler.
    assert_eq!(echo.0.load(Ordering::SeqCst), 1);
    listener.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_trusts_another_ca_is_refused_with_a_clear_error() {
    let cluster = unique_name("tls-wrong-ca");
    let (ca, stranger) = (TestCa::new("cluster CA"), TestCa::new("another CA"));
    let listener = serving(&cluster, &ca, "127.0.0.1").await;
    let reason = refusal(&cluster, trusting(&stranger), listener.local_addr()).await;
    assert!(
        reason.contains("not signed by the CA this side trusts (GRANARY_TLS_CA)"),
        "{reason}"
    );
    // A certificate for another address is refused too, and the error says how to fix it.
    let elsewhere = serving(&cluster, &ca, "10.1.2.3").await;
    let reason = refusal(&cluster, trusting(&ca), elsewhere.local_addr()).await;
    assert!(reason.contains("GRANARY_TLS_SERVER_NAME"), "{reason}");
    listener.shutdown().await;
    elsewhere.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_is_refused_on_either_side() {
    let cluster = unique_name("tls-expired");
    let ca = TestCa::new("cluster CA");
    // The listener's certificate expired: the dialer refuses it.
    let expired = ca.issue_expired(&["127.0.0.1"]);
    let stale = secure(&cluster, &ca, &expired, false, Arc::default()).await;
    let reason = refusal(&cluster, trusting(&ca), stale.local_addr()).await;
    assert!(reason.contains("certificate has expired"), "{reason}");

    // The dialer's certificate expired: a listener in mutual mode refuses it.
    let echo = Arc::new(Echo::default());
    let strict = secure(&cluster, &ca, &ca.issue(&["127.0.0.1"]), true, echo.clone()).await;
    let dialer = ca.tls(Some(&expired)).build().unwrap();
    let reason = refusal(&cluster, Some(dialer), strict.local_addr()).await;
    assert!(reason.contains("CertificateExpired"), "{reason}");
    assert_eq!(echo.0.load(Ordering::SeqCst), 0);
    stale.shutdown().await;
    strict.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_plaintext_peers_fail_at_connect_naming_the_setting() {
    let cluster = unique_name("tls-mismatch");
    let ca = TestCa::new("cluster CA");
    let plain = transport(&cluster, "plain", None, Arc::default()).await;
    let tls = serving(&cluster, &ca, "127.0.0.1").await;

    let reason = refusal(&cluster, trusting(&ca), plain.local_addr()).await;
    assert!(reason.contains("listens without TLS"), "{reason}");
    assert!(reason.contains("GRANARY_TLS_CA"), "{reason}");

    let reason = refusal(&cluster, None, tls.local_addr()).await;
    assert!(reason.contains("the peer requires TLS"), "{reason}");
    assert!(reason.contains("GRANARY_TLS_CA"), "{reason}");
    plain.shutdown().await;
    tls.shutdown().await;
}

/// A loopback proxy to `target` that records the bytes of both directions.
struct Recorder {
    addr: SocketAddr,
    bytes: Arc<std::sync::Mutex<Vec<u8>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let bytes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let recorded = bytes.clone();
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = TcpStream::connect(target).await else {
                    continue;
                };
                let (in_read, in_write) = inbound.into_split();
                let (out_read, out_write) = outbound.into_split();
                tokio::spawn(pipe(in_read, out_write, recorded.clone()));
                tokio::spawn(pipe(out_read, in_write, recorded.clone()));
            }
        });
        Self { addr, bytes, task }
    }

    /// Whether the recording holds `needle`.
    fn saw(&self, needle: &str) -> bool {
        self.bytes
            .lock()
            .unwrap()
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies `from` to `to`, appending what passes to `log`.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    log: Arc<std::sync::Mutex<Vec<u8>>>,
) {
    let mut buf = vec![0; 16 * 1024];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 || to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        log.lock().unwrap().extend_from_slice(&buf[..n]);
    }
}

/// A silo of `cluster` on the shared Redis, with `tls` on its links.
async fn silo(url: &str, cluster: &str, name: &str, tls: Option<TlsConfig>) -> Silo {
    let config = SiloConfig {
        name: name.to_owned(),
        ..SiloConfig::test_profile()
    };
    let hash = |mut config: ClusterConfig| {
        config.placement = Placement::Hash;
        config
    };
    let mut builder = crate::multi_silo::silo_builder(url, cluster, config, hash)
        .await
        .register::<CounterGrain>()
        .register::<GuildGrain>();
    if let Some(tls) = tls {
        builder = builder.tls(tls);
    }
    builder.start().await.unwrap()
}

/// A client of `cluster` whose one gateway is `gateway`, with `tls`.
async fn client(cluster: &str, gateway: SocketAddr, tls: Option<TlsConfig>) -> ClusterClient {
    let config = ClientConfig {
        discover: false,
        tls,
        ..ClientConfig::new(cluster, SECRET, vec![gateway])
    };
    tokio::time::timeout(NO_HANG, ClusterClient::connect(config))
        .await
        .expect("connecting ends, never hangs")
        .unwrap()
}

/// What a recording proxy between a client and its gateway saw of one call to a guild, with
/// TLS on both or on neither.
async fn recorded_call(with_tls: bool, key: &str, player: &str) -> Recorder {
    let url = shared_redis_url().await;
    let cluster = unique_name("tls-wire");
    let ca = TestCa::new("cluster CA");
    let tls = |cert: &TestCert| with_tls.then(|| ca.tls(Some(cert)).mutual(true).build().unwrap());
    let gateway = silo(&url, &cluster, "gateway", tls(&ca.issue(&["127.0.0.1"]))).await;
    let recorder = Recorder::start(gateway.address().unwrap()).await;
    let client = client(&cluster, recorder.addr, tls(&ca.issue(&["client.test"]))).await;
    let members = client
        .grain::<GuildGrain>(key)
        .join(player.to_owned())
        .await
        .unwrap();
    assert_eq!(members, 1);
    client.close().await;
    gateway.shutdown().await.unwrap();
    recorder
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_traffic_carries_no_readable_grain_name_or_payload() {
    let (key, player) = ("guild-of-the-wire-test", "player-payload-7f3a9c");
    // The check can fail: on a plaintext link the proxy reads both.
    let plain = recorded_call(false, key, player).await;
    assert!(
        plain.saw(key) && plain.saw(player),
        "the plaintext check finds nothing"
    );
    assert!(plain.saw("cluster.guild"));

    let secure = recorded_call(true, key, player).await;
    assert!(
        !secure.bytes.lock().unwrap().is_empty(),
        "the proxy carried the TLS link"
    );
    for needle in [key, player, "cluster.guild", "join"] {
        assert!(
            !secure.saw(needle),
            "{needle:?} crossed the TLS link readably"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_silo_cluster_over_mutual_tls_calls_both_ways_and_serves_a_client() {
    let url = shared_redis_url().await;
    let cluster = unique_name("tls-cluster");
    let ca = TestCa::new("cluster CA");
    let tls = |names: &[&str]| ca.tls(Some(&ca.issue(names))).mutual(true).build().unwrap();
    let silos = vec![
        silo(&url, &cluster, "a", Some(tls(&["127.0.0.1"]))).await,
        silo(&url, &cluster, "b", Some(tls(&["127.0.0.1"]))).await,
    ];
    crate::multi_silo::all_see_each_other(&silos).await;
    // Each silo calls every grain once; hashed placement spreads them over both silos, so
    // each silo calls grains on the other.
    let keys: Vec<i64> = (0..24).collect();
    for silo in &silos {
        for &key in &keys {
            silo.client()
                .grain::<CounterGrain>(key)
                .bump()
                .await
                .unwrap();
        }
    }
    for (i, silo) in silos.iter().enumerate() {
        let hosted = keys
            .iter()
            .filter(|&&k| silo.is_active(&granary::GrainId::new("cluster.counter", k)))
            .count();
        assert!(
            hosted > 0 && hosted < keys.len(),
            "silo {i} hosts {hosted} grains"
        );
    }

    // A client with its own certificate calls grains through one gateway.
    let gateway = silos[0].address().unwrap();
    let with_cert = client(&cluster, gateway, Some(tls(&["client.test"]))).await;
    for &key in &keys {
        assert_eq!(with_cert.grain::<CounterGrain>(key).get().await.unwrap(), 2);
    }
    with_cert.close().await;

    // A client without one is refused, and told what to set.
    let config = ClientConfig {
        discover: false,
        tls: Some(ca.tls(None).build().unwrap()),
        ..ClientConfig::new(&cluster, SECRET, vec![gateway])
    };
    let refused = tokio::time::timeout(NO_HANG, ClusterClient::connect(config))
        .await
        .expect("connecting ends, never hangs");
    let err = refused.expect_err("a client without a certificate is refused");
    assert!(err.to_string().contains("GRANARY_TLS_CERT"), "{err}");
    crate::multi_silo::shutdown(silos).await;
}

//! The store over TLS (`rediss://`) against a private `redis-server` with a TLS listener and
//! certificates made by the test: state and events round-trip; a wrong CA, an expired server
//! certificate, a missing client certificate, a plaintext client at the TLS port and a TLS
//! client at the plaintext port each fail at connect, in bounded time, saying why.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use granary_redis::{ClientTlsConfig, ConnectError, RedisConfig, RedisStore, TlsCertificates};
use granary_testkit::redis_server::{PrivateRedis, unique_name};
use granary_testkit::tls::{CertFiles, TestPki, connect_fails};

use crate::conformance::Harness;

/// The certificates trusting `ca`, presenting `client` if given.
fn certificates(ca: &Path, client: Option<&CertFiles>) -> TlsCertificates {
    TlsCertificates {
        client_tls: client.map(|c| ClientTlsConfig {
            client_cert: std::fs::read(&c.cert).unwrap(),
            client_key: std::fs::read(&c.key).unwrap(),
        }),
        root_cert: Some(std::fs::read(ca).unwrap()),
    }
}

fn config(url: &str) -> RedisConfig {
    RedisConfig::new(url, unique_name("tls")).shards(4)
}

/// Connects with `config`, which must fail within 15 s; the error's message.
async fn refused(config: RedisConfig) -> String {
    connect_fails(
        Duration::from_secs(15),
        Box::pin(RedisStore::connect(config)),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_and_events_round_trip_over_tls_with_a_client_certificate() {
    let pki = TestPki::generate();
    let redis = PrivateRedis::start_tls(&pki.server, &pki.ca, true).await;
    let url = redis.tls_url().unwrap();
    let store = RedisStore::connect(config(&url).tls(certificates(&pki.ca, Some(&pki.client))))
        .await
        .unwrap();
    let harness = Harness(Arc::new(store));
    granary_testkit::conformance::a_commit_is_read_back_by_the_next_activation(&harness).await;
    granary_testkit::conformance::the_outbox_is_never_ahead_of_or_behind_the_state(&harness).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_certificates_and_wrong_ports_fail_at_connect_saying_why() {
    let pki = TestPki::generate();
    let redis = PrivateRedis::start_tls(&pki.server, &pki.ca, true).await;
    let tls_url = redis.tls_url().unwrap();
    let client = Some(&pki.client);

    let message = refused(config(&tls_url).tls(certificates(&pki.other_ca, client))).await;
    assert!(message.contains("UnknownIssuer"), "wrong CA: {message}");

    let message = refused(config(&tls_url).tls(certificates(&pki.ca, None))).await;
    assert!(
        message.contains("cannot reach Redis"),
        "no client certificate: {message}"
    );

    // A plaintext client at the TLS port, and a TLS client at the plaintext port.
    let plain_at_tls = tls_url.replace("rediss://", "redis://");
    let message = refused(config(&plain_at_tls)).await;
    assert!(
        message.contains("cannot reach Redis"),
        "plaintext at TLS: {message}"
    );
    let tls_at_plain = redis.url().replace("redis://", "rediss://");
    let message = refused(config(&tls_at_plain).tls(certificates(&pki.ca, client))).await;
    assert!(
        message.contains("cannot reach Redis"),
        "TLS at plaintext: {message}"
    );

    // Certificates for a plaintext URL are a configuration error, not silently unused.
    let outcome =
        RedisStore::connect(config(&redis.url()).tls(certificates(&pki.ca, client))).await;
    assert!(
        matches!(&outcome, Err(ConnectError::Config(m)) if m.contains("rediss://")),
        "{outcome:?}"
    );

    let expired = PrivateRedis::start_tls(&pki.expired_server, &pki.ca, false).await;
    let url = expired.tls_url().unwrap();
    let message = refused(config(&url).tls(certificates(&pki.ca, None))).await;
    assert!(
        message.to_lowercase().contains("expired"),
        "expired: {message}"
    );
}

//! The TLS settings: each file read and checked before anything connects, each mistake a
//! settings error naming the setting; and a silo whose Redis, NATS or RabbitMQ refuses the TLS
//! handshake does not start, with an error naming the link's settings and the cause.

use std::time::Duration;

use granary_testkit::nats_server::PrivateNats;
use granary_testkit::redis_server::{
    PrivateRedis, remove_cluster_keys, shared_redis_url, unique_name,
};
use granary_testkit::tls::TestPki;

use super::*;
use crate::Settings;

/// The problem of a settings error, prefixed with the setting's name.
fn problem(result: Result<Option<TlsFiles>, NodeError>) -> String {
    match result {
        Err(NodeError::Setting { name, problem }) => format!("{name}: {problem}"),
        other => panic!("expected a settings error, got {other:?}"),
    }
}

#[test]
fn certificate_files_are_read_and_checked_with_the_settings() {
    let pki = TestPki::generate();
    let path = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    let (ca, cert, key) = (path(&pki.ca), path(&pki.client.cert), path(&pki.client.key));
    let tls_url = Some("rediss://r:6380");

    assert_eq!(
        REDIS.resolve_values(tls_url, None, None, None).unwrap(),
        None
    );
    let files = REDIS
        .resolve_values(tls_url, Some(&ca), Some(&cert), Some(&key))
        .unwrap()
        .unwrap();
    assert_eq!(
        files.ca.as_ref().unwrap().bytes,
        std::fs::read(&pki.ca).unwrap()
    );
    let redis = files.redis();
    assert!(redis.root_cert.is_some() && redis.client_tls.is_some());
    assert_eq!(files.nats().ca.as_deref(), Some(pki.ca.as_path()));
    assert!(files.amqp().ca.unwrap().contains("BEGIN CERTIFICATE"));

    for (given, expected) in [
        (
            REDIS.resolve_values(Some("redis://r:6379"), Some(&ca), None, None),
            "GRANARY_REDIS_CA: set, but GRANARY_REDIS is not a TLS URL (rediss://…)",
        ),
        (
            NATS.resolve_values(Some("nats://n:4222"), None, Some(&cert), Some(&key)),
            "GRANARY_NATS_CERT: set, but GRANARY_NATS is not a TLS URL (tls://…)",
        ),
        (
            AMQP.resolve_values(None, Some(&ca), None, None),
            "GRANARY_AMQP_CA: set, but GRANARY_AMQP is not a TLS URL",
        ),
        (
            REDIS.resolve_values(tls_url, None, Some(&cert), None),
            "GRANARY_REDIS_KEY: missing, but GRANARY_REDIS_CERT is set",
        ),
        (
            REDIS.resolve_values(tls_url, None, None, Some(&key)),
            "GRANARY_REDIS_CERT: missing, but GRANARY_REDIS_KEY is set",
        ),
        (
            REDIS.resolve_values(tls_url, Some("/nonexistent/ca.pem"), None, None),
            "GRANARY_REDIS_CA: cannot read \"/nonexistent/ca.pem\"",
        ),
        (
            REDIS.resolve_values(tls_url, Some(&key), None, None),
            "holds no PEM certificate",
        ),
        (
            AMQP.resolve_values(Some("amqps://a"), None, Some(&cert), Some(&cert)),
            "GRANARY_AMQP_KEY: ",
        ),
    ] {
        let message = problem(given);
        assert!(
            message.contains(expected),
            "expected {expected:?} in {message:?}"
        );
    }
    assert!(
        NATS.resolve_values(Some("tls://n:4222"), Some(&ca), None, None)
            .unwrap()
            .is_some()
    );
}

/// Runs a silo with `pairs` (plus a cluster id and secret); it must fail within 30 s. Its error.
async fn start_fails(pairs: &[(&str, &str)]) -> NodeError {
    let mut all = vec![
        ("GRANARY_SECRET", "0123456789abcdef"),
        ("GRANARY_LISTEN", "127.0.0.1:0"),
    ];
    all.extend_from_slice(pairs);
    let settings = Settings::from_pairs(&all);
    let outcome = tokio::time::timeout(Duration::from_secs(30), crate::run(settings, |b| b))
        .await
        .expect("a silo that cannot connect fails within its deadlines");
    outcome.expect_err("the silo does not start")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silo_whose_redis_refuses_tls_does_not_start_and_names_the_settings() {
    let pki = TestPki::generate();
    let redis = PrivateRedis::start_tls(&pki.server, &pki.ca, false).await;
    let url = redis.tls_url().unwrap();
    let cluster = unique_name("tls");
    let other_ca = pki.other_ca.to_str().unwrap();
    let err = start_fails(&[
        ("GRANARY_CLUSTER", &cluster),
        ("GRANARY_REDIS", &url),
        ("GRANARY_REDIS_CA", other_ca),
    ])
    .await;
    let message = err.to_string();
    assert!(
        message.starts_with("setting GRANARY_REDIS (TLS: GRANARY_REDIS_CA,")
            && message.contains("UnknownIssuer"),
        "{message}"
    );
    assert_eq!(err.exit_code(), 1);
    // A TLS client at the plaintext port.
    let at_plain = redis.url().replace("redis://", "rediss://");
    let message = start_fails(&[
        ("GRANARY_CLUSTER", &cluster),
        ("GRANARY_REDIS", &at_plain),
        ("GRANARY_REDIS_CA", pki.ca.to_str().unwrap()),
    ])
    .await
    .to_string();
    assert!(
        message.starts_with("setting GRANARY_REDIS (TLS:"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silo_whose_nats_refuses_tls_does_not_start_and_names_the_settings() {
    let pki = TestPki::generate();
    let nats = PrivateNats::start_tls(&pki.server, None).await;
    let nats_url = nats.url().replace("nats://", "tls://");
    let redis = shared_redis_url().await;
    let cluster = unique_name("tls");
    let message = start_fails(&[
        ("GRANARY_CLUSTER", &cluster),
        ("GRANARY_REDIS", &redis),
        ("GRANARY_BOOTSTRAP", "create"),
        ("GRANARY_NATS", &nats_url),
        ("GRANARY_NATS_CA", pki.other_ca.to_str().unwrap()),
    ])
    .await
    .to_string();
    remove_cluster_keys(&redis, &cluster).await.unwrap();
    assert!(
        message.contains("nats (GRANARY_NATS (TLS: GRANARY_NATS_CA,")
            && message.contains("UnknownIssuer"),
        "{message}"
    );
}

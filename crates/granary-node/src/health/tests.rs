//! The readiness verdict, and the probes over HTTP in front of a private Redis and an
//! in-process silo: not ready before it joins, ready after, not ready once it stopped.

use std::net::SocketAddr;

use granary::{ClusterConfig, Silo, SiloConfig};
use granary_redis::{Bootstrap, RedisConfig, RedisMembership};
use granary_testkit::redis_server::{Persistence, PrivateRedis, unique_name};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::http;

#[test]
fn the_verdict_names_each_failed_check_and_is_ready_only_when_none_failed() {
    let starting = verdict(None, Ok(()));
    assert!(!starting.ready());
    assert_eq!(starting.failed, ["silo"]);
    assert!(starting.silo.starts_with("starting"), "{starting:?}");
    assert_eq!(starting.store, "ok");

    let ready = verdict(Some(Ok(())), Ok(()));
    assert!(ready.ready());
    assert_eq!(
        ready,
        Verdict {
            status: "ready",
            failed: vec![],
            silo: "ok".into(),
            store: "ok".into(),
        }
    );

    let both = verdict(
        Some(Err(NotReady::ShuttingDown)),
        Err("Redis at redis://x did not answer".into()),
    );
    assert_eq!(both.status, "not ready");
    assert_eq!(both.failed, ["silo", "store"]);
    assert_eq!(both.silo, "the silo is shutting down");
    assert_eq!(both.store, "Redis at redis://x did not answer");

    assert_eq!(respond(&ready).status(), 200);
    assert_eq!(respond(&both).status(), 503);
}

/// `GET http://<addr><path>` (HTTP/1.1, no token): the status and the body.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("the server answers within 10 s")
        .expect("the exchange succeeds");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    (status, body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_is_503_until_the_silo_joins_then_200_and_503_again_once_it_stopped() {
    let redis = PrivateRedis::start(Persistence::None).await;
    let cluster = unique_name("node-health");
    let store = Arc::new(
        RedisStore::connect(
            RedisConfig::new(redis.url(), &cluster).bootstrap(Bootstrap::CreateIfMissing),
        )
        .await
        .unwrap(),
    );
    let probes = Probes::new(store.clone());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server =
        http::serve_http(http::MetricsSlot::default(), probes.clone(), None, listener).unwrap();

    // Before the silo joins: live, not ready, and the body says why.
    assert_eq!(
        get(addr, "/health/ready").await,
        (
            503,
            r#"{"status":"not ready","failed":["silo"],"silo":"starting: the silo has not joined the cluster yet","store":"ok"}"#
                .to_owned()
        )
    );
    assert_eq!(get(addr, "/health/live").await.0, 200);
    assert_eq!(get(addr, "/metrics").await.0, 503);

    let silo = Silo::builder()
        .config(SiloConfig::test_profile())
        .storage(store.clone())
        .membership(Arc::new(RedisMembership::new(store.clone())))
        .cluster(
            ClusterConfig::new(
                &cluster,
                "a cluster secret of 32 bytes....",
                ([127, 0, 0, 1], 0).into(),
            )
            .test_profile(),
        )
        .start()
        .await
        .unwrap();
    probes.joined(silo.health());
    // Joined: Active in its own view, lease holding, Redis answering. (Asked a few times: the
    // test profile's half-second lease may lapse for a moment on a loaded machine.)
    let ready = r#"{"status":"ready","failed":[],"silo":"ok","store":"ok"}"#;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = get(addr, "/health/ready").await;
        if (status, body.as_str()) == (200, ready) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{status} {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    silo.shutdown().await.unwrap();
    let (status, body) = get(addr, "/health/ready").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains(r#""failed":["silo"],"silo":"the silo stopped""#),
        "{body}"
    );
    assert_eq!(get(addr, "/health/live").await.0, 200);
    server.stop(true).await;
}

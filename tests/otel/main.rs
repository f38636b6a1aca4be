//! OpenTelemetry export of the `grain.call` spans: the spans of one call chain, on any silo,
//! are one OTel trace whose id is the chain's trace id (in-process silos, spans kept in memory),
//! and a silo process with `GRANARY_OTLP` posts its spans to an OTLP/HTTP collector.
//!
//! A test binary of its own: it installs the process's global tracing subscriber (the silos'
//! turns run on the runtime's threads, which a thread-scoped subscriber would not see).
#![allow(clippy::unwrap_used, reason = "test helpers fail loudly")]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use granary::{
    ClientConfig, ClusterClient, ClusterConfig, GrainId, Placement, Silo, SiloConfig, SiloEvent,
};
use granary_redis::{RedisConfig, RedisMembership, RedisStore};
use granary_testkit::process::SiloProcess;
use granary_testkit::redis_server::{shared_redis_url, unique_name};
use granary_tests::CounterGrain;
use opentelemetry::Value;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

const SECRET: &str = "a cluster secret of at least 32 bytes";

/// The spans every silo of this process ends, once the global subscriber is installed.
fn exported() -> &'static InMemorySpanExporter {
    static EXPORTER: OnceLock<(InMemorySpanExporter, SdkTracerProvider)> = OnceLock::new();
    &EXPORTER
        .get_or_init(|| {
            let exporter = InMemorySpanExporter::default();
            let provider = SdkTracerProvider::builder()
                .with_simple_exporter(exporter.clone())
                .build();
            tracing_subscriber::registry()
                .with(
                    tracing_opentelemetry::layer()
                        .with_tracer(provider.tracer("test"))
                        .with_filter(
                            Targets::new().with_target("granary_silo", LevelFilter::DEBUG),
                        ),
                )
                .try_init()
                .expect("the only subscriber of this test binary");
            (exporter, provider)
        })
        .0
}

/// The value of attribute `key` of `span`, as a string.
fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| match &kv.value {
            Value::String(s) => s.as_str().to_owned(),
            other => other.to_string(),
        })
}

/// Two silos of a new cluster over the shared Redis, hash placement, each seeing the other.
async fn two_silos() -> Vec<Silo> {
    let url = shared_redis_url().await;
    let cluster = unique_name("otel");
    let mut silos = Vec::new();
    for i in 0..2 {
        let store = Arc::new(
            RedisStore::connect(RedisConfig::new(&url, &cluster).shards(8))
                .await
                .unwrap(),
        );
        let mut config =
            ClusterConfig::new(&cluster, SECRET.as_bytes(), "127.0.0.1:0".parse().unwrap())
                .test_profile();
        config.placement = Placement::Hash;
        let silo = Silo::builder()
            .config(SiloConfig {
                name: format!("{cluster}-s{i}"),
                // Which silo hosts a grain is looked up: no idle collection under the test.
                idle_timeout: Duration::from_secs(600),
                ..SiloConfig::test_profile()
            })
            .storage(store.clone())
            .membership(Arc::new(RedisMembership::new(store)))
            .cluster(config)
            .register::<CounterGrain>()
            .start()
            .await
            .unwrap();
        silos.push(silo);
    }
    for silo in &silos {
        let mut events = silo.events();
        if silo.members().len() < 2 {
            events
                .wait_for(|e| matches!(e, SiloEvent::MembersChanged(m) if m.len() == 2))
                .await
                .unwrap();
        }
    }
    silos
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spans_of_one_call_chain_on_two_silos_are_one_otel_trace() {
    let exporter = exported();
    let silos = two_silos().await;
    let id = |g: i64| GrainId::new("cluster.counter", g);
    let host = |g: i64| (0..2).find(|&i| silos[i].is_active(&id(g)));
    for g in 0..16 {
        silos[0]
            .client()
            .grain::<CounterGrain>(g)
            .bump()
            .await
            .unwrap();
    }
    let a = (0..16)
        .find(|&g| host(g) == Some(0))
        .expect("silo 0 hosts a grain");
    let b = (0..16)
        .find(|&g| host(g) == Some(1))
        .expect("silo 1 hosts a grain");
    // One chain: a (on silo 0) calls b (on silo 1); the call comes in through silo 1.
    let (trace, theirs) = silos[1]
        .client()
        .grain::<CounterGrain>(a)
        .traces(b)
        .await
        .unwrap();
    assert_eq!(trace, theirs);
    // The spans end before the turns answer; poll anyway rather than trust that.
    let deadline = Instant::now() + Duration::from_secs(5);
    let spans = loop {
        let spans: Vec<SpanData> = exporter
            .get_finished_spans()
            .unwrap()
            .into_iter()
            .filter(|s| s.name == "grain.call" && attribute(s, "trace").as_deref() == Some(&trace))
            .collect();
        if spans.len() >= 2 || Instant::now() >= deadline {
            break spans;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let summary: Vec<_> = spans
        .iter()
        .map(|s| {
            (
                s.span_context.trace_id().to_string(),
                attribute(s, "method"),
                attribute(s, "silo"),
            )
        })
        .collect();
    assert_eq!(
        spans.len(),
        2,
        "one span per call of the chain: {summary:?}"
    );
    let span = |method: &str| {
        spans
            .iter()
            .find(|s| attribute(s, "method").as_deref() == Some(method))
            .unwrap_or_else(|| panic!("a span of method {method}: {summary:?}"))
    };
    let (outer, inner) = (span("traces"), span("trace"));
    for (s, grain, silo) in [(outer, a, &silos[0]), (inner, b, &silos[1])] {
        assert_eq!(
            s.span_context.trace_id().to_string(),
            trace,
            "the OTel trace id is the chain's trace id: {summary:?}"
        );
        assert!(s.span_context.is_sampled());
        assert_eq!(attribute(s, "grain"), Some(id(grain).to_string()));
        assert_eq!(attribute(s, "silo"), Some(silo.id().to_string()));
    }
    // Span ids do not travel: the two are siblings under one stand-in parent, not exported.
    assert_ne!(outer.span_context.span_id(), inner.span_context.span_id());
    assert_eq!(outer.parent_span_id, inner.parent_span_id);
    assert!(
        exporter
            .get_finished_spans()
            .unwrap()
            .iter()
            .all(|s| s.span_context.span_id() != outer.parent_span_id),
    );
    // Another call from outside is another OTel trace.
    let again = silos[1]
        .client()
        .grain::<CounterGrain>(b)
        .trace()
        .await
        .unwrap();
    assert_ne!(again, trace);
    for silo in silos {
        silo.shutdown().await.unwrap();
    }
}

/// What an OTLP/HTTP collector received: (path, content type, body) of each request.
type Received = Arc<Mutex<Vec<(String, String, Vec<u8>)>>>;

/// A minimal OTLP/HTTP collector on a free loopback port: answers every request 200 with an
/// empty export response and records it.
async fn collector() -> (SocketAddr, Received) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Received::default();
    let log = received.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut stream = BufReader::new(stream);
                // HTTP/1.1 with keep-alive: requests one after another on the connection.
                loop {
                    let mut line = String::new();
                    if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let path = line.split(' ').nth(1).unwrap_or_default().to_owned();
                    let (mut length, mut content_type) = (0, String::new());
                    loop {
                        let mut header = String::new();
                        if stream.read_line(&mut header).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let header = header.trim_end();
                        if header.is_empty() {
                            break;
                        }
                        let (name, value) = header.split_once(':').unwrap_or((header, ""));
                        match name.to_ascii_lowercase().as_str() {
                            "content-length" => length = value.trim().parse().unwrap(),
                            "content-type" => value.trim().clone_into(&mut content_type),
                            _ => {}
                        }
                    }
                    let mut body = vec![0; length];
                    stream.read_exact(&mut body).await.unwrap();
                    log.lock().unwrap().push((path, content_type, body));
                    let response = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
                    stream
                        .get_mut()
                        .write_all(response.as_bytes())
                        .await
                        .unwrap();
                }
            });
        }
    });
    (addr, received)
}

/// The `grain.call` spans of the OTLP/JSON bodies, with the service name of each.
fn grain_calls(bodies: &[serde_json::Value]) -> Vec<(String, serde_json::Value)> {
    let mut calls = Vec::new();
    for body in bodies {
        for resource in body["resourceSpans"].as_array().into_iter().flatten() {
            let service = resource["resource"]["attributes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|kv| kv["key"] == "service.name")
                .and_then(|kv| kv["value"]["stringValue"].as_str())
                .unwrap_or_default()
                .to_owned();
            for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                for span in scope["spans"].as_array().into_iter().flatten() {
                    if span["name"] == "grain.call" {
                        calls.push((service.clone(), span.clone()));
                    }
                }
            }
        }
    }
    calls
}

/// The string value of attribute `key` of an OTLP/JSON span.
fn json_attribute<'a>(span: &'a serde_json::Value, key: &str) -> Option<&'a str> {
    span["attributes"]
        .as_array()?
        .iter()
        .find(|kv| kv["key"] == key)?["value"]["stringValue"]
        .as_str()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silo_process_exports_its_spans_over_otlp_http_and_flushes_them_when_it_stops() {
    let (addr, received) = collector().await;
    let cluster = unique_name("otlp");
    let name = format!("{cluster}-p0");
    let redis = shared_redis_url().await;
    let endpoint = format!("http://{addr}");
    let mut silo = SiloProcess::start(
        env!("CARGO_BIN_EXE_test-silo"),
        &name,
        &[
            ("GRANARY_CLUSTER", &cluster),
            ("GRANARY_SECRET", SECRET),
            ("GRANARY_REDIS", &redis),
            ("GRANARY_OTLP", &endpoint),
        ],
    )
    .await;
    let mut config = ClientConfig::new(&cluster, SECRET, vec![silo.addr]);
    config.discover = false;
    config.call_timeout = Duration::from_secs(3);
    let client = ClusterClient::connect(config).await.unwrap();
    let (trace, theirs) = client.grain::<CounterGrain>(1).traces(2).await.unwrap();
    assert_eq!(trace, theirs);
    // SIGTERM: the silo stops cleanly and sends the spans still in its batch (the batch delay,
    // 5 s, has not passed: without the flush nothing would have been sent yet).
    silo.signal("-TERM");
    assert_eq!(silo.exit_code(Duration::from_secs(20)).await, Some(0));
    let requests = received.lock().unwrap().clone();
    assert!(!requests.is_empty(), "the collector got no request");
    let mut bodies = Vec::new();
    for (path, content_type, body) in &requests {
        assert_eq!(path, "/v1/traces");
        assert_eq!(content_type, "application/json");
        bodies.push(serde_json::from_slice::<serde_json::Value>(body).unwrap());
    }
    let calls: Vec<_> = grain_calls(&bodies)
        .into_iter()
        .filter(|(_, span)| span["traceId"] == trace.as_str())
        .collect();
    let summary: Vec<_> = calls
        .iter()
        .map(|(service, span)| {
            (
                service.clone(),
                json_attribute(span, "method").map(str::to_owned),
            )
        })
        .collect();
    assert_eq!(
        calls.len(),
        2,
        "both calls of the chain, in its trace: {summary:?}"
    );
    for (service, span) in &calls {
        assert_eq!(service, &name, "the service is the silo");
        assert!(
            json_attribute(span, "silo").is_some_and(|silo| silo.starts_with(&format!("{name}@"))),
            "{span}"
        );
    }
    let grains: Vec<_> = calls
        .iter()
        .filter_map(|(_, s)| json_attribute(s, "grain"))
        .collect();
    assert!(
        grains.contains(&"cluster.counter/1") && grains.contains(&"cluster.counter/2"),
        "{grains:?}"
    );
}

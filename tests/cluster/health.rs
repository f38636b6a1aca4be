//! Health: a silo's readiness in its own view (ready while it serves, not while it shuts down,
//! stopped after), and a silo process's probes on its metrics address: `/health/ready`
//! follows its Redis (503 naming the store while Redis is down, 200 again when it is back),
//! `/health/live` stays 200, and neither needs the dashboard's token.

use std::sync::Arc;
use std::time::{Duration, Instant};

use granary::{GrainContext, NotReady, Result, Silo, grain};
use granary_testkit::process::SiloProcess;
use granary_testkit::redis_server::{Persistence, PrivateRedis, unique_name};
use serde_json::Value;
use tokio::sync::Notify;

const SECRET: &str = "a cluster secret of at least 32 bytes";
const TOKEN: &str = "the-dashboard-token-0123456789";

/// Holds its deactivation until the test releases it, so that a shutdown stays in progress.
#[derive(Debug, Default)]
struct Gate {
    deactivating: Notify,
    release: Notify,
}

#[derive(Debug)]
struct HoldGrain {
    gate: Arc<Gate>,
}

#[grain(name = "health.hold", state = ())]
impl HoldGrain {
    /// Does nothing: activates the grain.
    pub async fn touch(&self, _ctx: &GrainContext<Self>) -> Result<()> {
        Ok(())
    }

    #[on_deactivate]
    async fn deactivating(&self, _ctx: &GrainContext<Self>) -> Result<()> {
        self.gate.deactivating.notify_one();
        self.gate.release.notified().await;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silo_is_ready_while_it_serves_not_while_it_shuts_down_and_stopped_after() {
    let gate = Arc::new(Gate::default());
    let silo = Silo::builder()
        .register_with({
            let gate = gate.clone();
            move |_| HoldGrain { gate: gate.clone() }
        })
        .start()
        .await
        .unwrap();
    let health = silo.health();
    assert_eq!(health.readiness(), Ok(()));
    silo.client().grain::<HoldGrain>("h").touch().await.unwrap();
    let shutdown = tokio::spawn(silo.shutdown());
    tokio::time::timeout(Duration::from_secs(10), gate.deactivating.notified())
        .await
        .expect("the shutdown deactivates the grain");
    assert_eq!(health.readiness(), Err(NotReady::ShuttingDown));
    gate.release.notify_one();
    shutdown.await.unwrap().unwrap();
    assert_eq!(health.readiness(), Err(NotReady::Stopped));
}

fn free_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

/// `GET http://<addr><path>` without a token: the status and the body.
async fn get(addr: &str, path: &str) -> std::result::Result<(u16, String), String> {
    let url = format!("http://{addr}{path}");
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .into();
        let mut response = agent.get(&url).call().map_err(|e| e.to_string())?;
        let body = response
            .body_mut()
            .read_to_string()
            .map_err(|e| e.to_string())?;
        Ok((response.status().as_u16(), body))
    })
    .await
    .unwrap()
}

/// `/health/ready`'s status and JSON body.
async fn ready(addr: &str) -> std::result::Result<(u16, Value), String> {
    let (status, body) = get(addr, "/health/ready").await?;
    let body = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    Ok((status, body))
}

/// Asks `check` until it gives `Ok`; fails with its last `Err` (what it saw) after 30 s. A
/// probe is a poll by nature: this is what an orchestrator does.
async fn wait_for<T>(
    what: &str,
    mut check: impl AsyncFnMut() -> std::result::Result<T, String>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match check().await {
            Ok(value) => return value,
            Err(seen) => assert!(
                Instant::now() < deadline,
                "timed out waiting until {what}; last seen: {seen}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn assert_live(addr: &str) {
    let (status, body) = get(addr, "/health/live").await.unwrap();
    assert_eq!((status, body.as_str()), (200, r#"{"status":"live"}"#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silo_process_is_ready_only_while_its_redis_answers_and_its_probes_need_no_token() {
    let mut redis = PrivateRedis::start(Persistence::AofAlways).await;
    let url = redis.url();
    let http = free_addr();
    let cluster = unique_name("health");
    let mut silo = SiloProcess::start(
        env!("CARGO_BIN_EXE_test-silo"),
        "h",
        &[
            ("GRANARY_CLUSTER", &cluster),
            ("GRANARY_SECRET", SECRET),
            ("GRANARY_REDIS", &url),
            ("GRANARY_METRICS", &http),
            ("GRANARY_DASHBOARD_TOKEN", TOKEN),
        ],
    )
    .await;
    // Past its ready line the silo is Active: ready, with no token, while the dashboard
    // refuses a request without one.
    // (Awaited rather than asked once: the test profile's half-second lease may lapse for a
    // moment on a loaded machine.)
    let body = wait_for("ready after the silo joined", async || {
        let (status, body) = ready(&http).await?;
        if status == 200 {
            Ok(body)
        } else {
            Err(format!("{status} {body}"))
        }
    })
    .await;
    assert_eq!(body["status"], "ready", "{body}");
    assert_eq!(body["failed"], serde_json::json!([]), "{body}");
    assert_eq!(
        (&body["silo"], &body["store"]),
        (&"ok".into(), &"ok".into())
    );
    assert_live(&http).await;
    let (status, _) = get(&http, "/dashboard/api/cluster").await.unwrap();
    assert_eq!(status, 401, "the dashboard still needs its token");

    // Redis stopped: the store's PING fails at once, and the silo's lease runs out within its
    // window (the test profile's: half a second), since it can no longer renew its heartbeat.
    redis.kill();
    let body = wait_for(
        "ready says the store is down and the lease ran out",
        async || {
            let (status, body) = ready(&http).await?;
            if status == 503 && body["failed"] == serde_json::json!(["silo", "store"]) {
                Ok(body)
            } else {
                Err(format!("{status} {body}"))
            }
        },
    )
    .await;
    assert_eq!(body["status"], "not ready", "{body}");
    assert!(
        body["silo"].as_str().unwrap().contains("lease ran out"),
        "{body}"
    );
    assert_ne!(body["store"], "ok", "the store's check says why: {body}");
    assert_live(&http).await;

    redis.restart().await;
    wait_for("ready again once Redis is back", async || {
        let (status, body) = ready(&http).await?;
        if status == 200 && body["status"] == "ready" {
            Ok(())
        } else {
            Err(format!("{status} {body}"))
        }
    })
    .await;
    assert_live(&http).await;

    silo.signal("-TERM");
    assert_eq!(silo.exit_code(Duration::from_secs(20)).await, Some(0));
}

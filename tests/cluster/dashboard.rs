//! The dashboard of silo processes over a real Redis: its API refuses requests without the
//! token and shows the cluster (both silos active, activations per type, call rates, recent
//! events); in a real headless Chromium the page shows the same and follows the cluster live.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fantoccini::Locator;
use granary::{ClientConfig, ClusterClient};
use granary_testkit::process::SiloProcess;
use granary_testkit::redis_server::{shared_redis_url, unique_name};
use granary_tests::CounterGrain;
use serde_json::Value;
use tokio::task::JoinHandle;

use crate::webdriver::Browser;

const SECRET: &str = "a cluster secret of at least 32 bytes";
const TOKEN: &str = "the-dashboard-token-0123456789";
const COUNTER: &str = "cluster.counter";
const BUMPED: &str = "cluster.counter.bumped";

/// Two silo processes, `a` serving the dashboard and `b` serving only `/metrics`, and a client.
struct Cluster {
    a: SiloProcess,
    b: SiloProcess,
    /// `a`'s HTTP address.
    http: String,
    /// `b`'s HTTP address.
    http_b: String,
    client: ClusterClient,
}

fn free_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

async fn cluster(prefix: &str) -> Cluster {
    let name = unique_name(prefix);
    let events = format!("{name}:events:");
    let redis = shared_redis_url().await;
    let (http, http_b) = (free_addr(), free_addr());
    let common = [
        ("GRANARY_CLUSTER", name.as_str()),
        ("GRANARY_SECRET", SECRET),
        ("GRANARY_REDIS", &redis),
        ("GRANARY_PLACEMENT", "hash"),
        ("GRANARY_EVENTS_PREFIX", &events),
        // The activations shown are checked: no idle collection under the tests (the test
        // profile's 200 ms would make the counts flicker on a loaded machine).
        ("GRANARY_IDLE_AFTER", "10m"),
    ];
    let bin = env!("CARGO_BIN_EXE_test-silo");
    let mut env_a = common.to_vec();
    env_a.extend([
        ("GRANARY_METRICS", http.as_str()),
        ("GRANARY_DASHBOARD_TOKEN", TOKEN),
    ]);
    let a = SiloProcess::start(bin, "a", &env_a).await;
    let mut env_b = common.to_vec();
    env_b.push(("GRANARY_METRICS", http_b.as_str()));
    let b = SiloProcess::start(bin, "b", &env_b).await;
    let mut config = ClientConfig::new(&name, SECRET, vec![a.addr, b.addr]);
    config.call_timeout = Duration::from_secs(3);
    config.refresh = Duration::from_millis(200);
    let client = ClusterClient::connect(config).await.unwrap();
    Cluster {
        a,
        b,
        http,
        http_b,
        client,
    }
}

/// Bumps (with an event) the counters `keys` round after round until `stop`; returns the calls
/// made. A round every 20 ms keeps a steady call rate without taking the machine.
fn load(
    client: &ClusterClient,
    keys: std::ops::Range<i64>,
    stop: &Arc<AtomicBool>,
) -> JoinHandle<u64> {
    let (client, stop) = (client.clone(), stop.clone());
    tokio::spawn(async move {
        let mut calls = 0;
        while !stop.load(Ordering::Relaxed) {
            for key in keys.clone() {
                client
                    .grain::<CounterGrain>(key)
                    .bump_and_announce()
                    .await
                    .unwrap();
                calls += 1;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        calls
    })
}

/// `GET url`, with `bearer` as the bearer token: the status and the body.
async fn try_get(url: String, bearer: Option<&'static str>) -> Result<(u16, String), String> {
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .into();
        let mut request = agent.get(&url);
        if let Some(token) = bearer {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        let mut response = request.call().map_err(|e| e.to_string())?;
        let body = response
            .body_mut()
            .read_to_string()
            .map_err(|e| e.to_string())?;
        Ok((response.status().as_u16(), body))
    })
    .await
    .unwrap()
}

/// `GET http://<addr><path>`; the server starts right after the silo's ready line, so this
/// tries until it answers.
async fn get(addr: &str, path: &str, bearer: Option<&'static str>) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match try_get(format!("http://{addr}{path}"), bearer).await {
            Ok(answer) => return answer,
            Err(err) => assert!(
                Instant::now() < deadline,
                "no answer at {addr}{path}: {err}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `check` until it gives `Ok`; fails with its last `Err` (what it saw) after 30 s.
async fn wait_for<T>(what: &str, mut check: impl AsyncFnMut() -> Result<T, String>) -> T {
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

/// The activations of `grain_type` the API shows over every silo.
fn api_activations(view: &Value, grain_type: &str) -> u64 {
    view["silos"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["by_type"].as_array().unwrap())
        .filter(|t| t["grain_type"] == grain_type)
        .map(|t| t["activations"].as_u64().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_api_needs_its_token_and_shows_the_silos_calls_and_events() {
    let cluster = cluster("dash-api").await;
    let (http, api) = (cluster.http.as_str(), "/dashboard/api/cluster");

    // Without a token the routes are not served; b's HTTP server answers /metrics only.
    assert_eq!(get(&cluster.http_b, "/metrics", None).await.0, 200);
    assert_eq!(get(&cluster.http_b, "/dashboard", Some(TOKEN)).await.0, 404);
    assert_eq!(get(&cluster.http_b, api, Some(TOKEN)).await.0, 404);

    // A missing or wrong token gets 401 and says how to pass it.
    let (status, body) = get(http, api, None).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body.contains("Authorization: Bearer <token>") && body.contains("/dashboard?token="),
        "{body}"
    );
    assert_eq!(
        get(http, api, Some("the-dashboard-token-012345678X"))
            .await
            .0,
        401
    );
    assert_eq!(
        get(http, api, Some("the-dashboard-token")).await.0,
        401,
        "a prefix"
    );
    let wrong = format!("{api}?token=the-dashboard-token-012345678X");
    assert_eq!(get(http, &wrong, None).await.0, 401);
    assert_eq!(get(http, "/dashboard", None).await.0, 401);
    assert_eq!(get(http, "/dashboard?token=nope", None).await.0, 401);

    // The right token: the page, and the cluster as JSON.
    let (status, page) = get(http, &format!("/dashboard?token={TOKEN}"), None).await;
    assert_eq!(status, 200);
    assert!(
        page.contains("id=\"silos\"") && page.contains("<script>"),
        "{page}"
    );
    assert_eq!(get(http, "/dashboard", Some(TOKEN)).await.0, 200);

    let stop = Arc::new(AtomicBool::new(false));
    let running = load(&cluster.client, 0..6, &stop);
    let view = wait_for(
        "the API shows both silos active, 6 counters, a call rate and the events",
        async || {
            let (status, body) = get(http, api, Some(TOKEN)).await;
            let view: Value =
                serde_json::from_str(&body).map_err(|e| format!("{status} {e}: {body}"))?;
            let silos = view["silos"].as_array().unwrap();
            let active = |name: &str| {
                silos.iter().any(|s| {
                    s["name"] == name
                        && s["status"] == "Active"
                        && s["heartbeat_age_ms"]
                            .as_u64()
                            .is_some_and(|age| age < 5_000)
                })
            };
            let rate = silos
                .iter()
                .filter_map(|s| s["calls_per_sec"].as_f64())
                .fold(0.0, f64::max);
            let events = view["events"].as_array().unwrap();
            let ok = active("a")
                && active("b")
                && api_activations(&view, COUNTER) == 6
                && rate > 0.0
                && !events.is_empty();
            if ok { Ok(view) } else { Err(body) }
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let calls = running.await.unwrap();
    assert!(calls >= 6, "{calls}");

    assert_eq!(
        view["cluster"].as_str().unwrap().split('-').next(),
        Some("dash")
    );
    let silos = view["silos"].as_array().unwrap();
    assert_eq!(silos.len(), 2, "{view}");
    for silo in silos {
        let address = silo["address"].as_str().unwrap();
        let process = if silo["name"] == "a" {
            &cluster.a
        } else {
            &cluster.b
        };
        assert_eq!(address, process.addr.to_string(), "{silo}");
    }
    let events = view["events"].as_array().unwrap();
    assert!(events.len() <= 20, "bounded: {}", events.len());
    let mut last = u64::MAX;
    for event in events {
        assert_eq!(event["type"], BUMPED, "{event}");
        let source = event["source"].as_str().unwrap();
        let key: i64 = source
            .strip_prefix("cluster.counter/")
            .unwrap()
            .parse()
            .unwrap();
        assert!((0..6).contains(&key), "{source}");
        let time = event["time_ms"].as_u64().unwrap();
        assert!(time <= last, "newest first: {events:?}");
        last = time;
    }
    cluster.client.close().await;
}

/// What the page shows, read from its DOM by the ids and `data-` attributes it keeps stable.
const READ_PAGE: &str = r##"
const text = (row, field) => row.querySelector(`[data-field="${field}"]`).textContent;
const value = (row, field) => row.querySelector(`[data-field="${field}"]`).dataset.value;
return {
  marker: window.__test_marker || null,
  updates: Number(document.getElementById("updated").dataset.updates),
  error: document.getElementById("error").dataset.error || "",
  silos: [...document.querySelectorAll("#silos tr[data-silo]")].map(r => ({
    name: r.dataset.silo, status: text(r, "status"),
    rate: value(r, "calls-per-sec") === undefined ? null : Number(value(r, "calls-per-sec")),
  })),
  activations: [...document.querySelectorAll("#activations tr[data-grain-type]")].map(r => ({
    silo: r.dataset.silo, type: r.dataset.grainType, count: Number(value(r, "activations")),
  })),
  events: [...document.querySelectorAll("#events tr[data-event-id]")].map(r => ({
    type: text(r, "type"), source: text(r, "source"), time: text(r, "time"),
  })),
};
"##;

/// What the page shows now (see [`READ_PAGE`]).
async fn read_page(browser: &Browser) -> Result<Value, String> {
    browser
        .execute(READ_PAGE, vec![])
        .await
        .map_err(|e| format!("reading the page: {e}"))
}

/// The activations of `grain_type` the page shows over every silo.
fn page_activations(page: &Value, grain_type: &str) -> u64 {
    page["activations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["type"] == grain_type)
        .map(|r| r["count"].as_u64().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_page_shows_the_live_cluster_in_a_headless_chromium() {
    let cluster = cluster("dash-page").await;
    let stop = Arc::new(AtomicBool::new(false));
    let running = load(&cluster.client, 0..4, &stop);
    // Wait for the HTTP server before the browser loads the page.
    assert_eq!(get(&cluster.http, "/dashboard", Some(TOKEN)).await.0, 200);
    let browser = Browser::start().await;
    browser
        .goto(&format!("http://{}/dashboard?token={TOKEN}", cluster.http))
        .await
        .unwrap();
    // The page's first poll has filled the silos' table.
    browser
        .wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::Css("#silos tr[data-silo]"))
        .await
        .unwrap();

    let page = wait_for(
        "the page shows both silos active, 4 counters, a call rate and the events",
        async || {
            let page = read_page(&browser).await?;
            let silos = page["silos"].as_array().unwrap();
            let active = |name: &str| {
                silos
                    .iter()
                    .any(|s| s["name"] == name && s["status"] == "Active")
            };
            let rate = silos
                .iter()
                .filter_map(|s| s["rate"].as_f64())
                .fold(0.0, f64::max);
            let events = page["events"].as_array().unwrap();
            let ok = page["error"] == ""
                && active("a")
                && active("b")
                && page_activations(&page, COUNTER) == 4
                && rate > 0.0
                && events.iter().any(|e| {
                    e["type"] == BUMPED
                        && e["source"]
                            .as_str()
                            .unwrap()
                            .starts_with("cluster.counter/")
                });
            if ok { Ok(page) } else { Err(page.to_string()) }
        },
    )
    .await;
    let events = page["events"].as_array().unwrap();
    assert!(
        events
            .iter()
            .all(|e| e["time"].as_str().unwrap().len() == 12),
        "times as HH:MM:SS.mmm: {events:?}"
    );

    // Live: more grains, and their events, appear without reloading the page.
    browser
        .execute("window.__test_marker = 'same page';", vec![])
        .await
        .unwrap();
    let updates = page["updates"].as_u64().unwrap();
    let more = load(&cluster.client, 100..105, &stop);
    let page = wait_for(
        "the page shows the 5 new counters and their events",
        async || {
            let page = read_page(&browser).await?;
            let sources: Vec<&str> = page["events"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|e| e["source"].as_str())
                .collect();
            let ok = page_activations(&page, COUNTER) == 9
                && (100..105).any(|k| sources.contains(&format!("cluster.counter/{k}").as_str()));
            if ok {
                Ok(page.clone())
            } else {
                Err(page.to_string())
            }
        },
    )
    .await;
    assert_eq!(page["marker"], "same page", "the page was not reloaded");
    assert!(page["updates"].as_u64().unwrap() > updates, "{page}");

    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let png = browser.screenshot().await.unwrap();
    std::fs::write(&shot, &png).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    eprintln!("dashboard screenshot: {}", shot.display());
    stop.store(true, Ordering::Relaxed);
    running.await.unwrap();
    more.await.unwrap();
    browser.close().await;
    cluster.client.close().await;
}

/// What the page's charts, legends and per-method table show, read from its DOM: each chart's
/// paths with their data points (counted in the path's `d`, the drawing itself) and largest
/// value, each legend entry's state, each method row's counts.
const READ_CHARTS: &str = r##"
const charts = {};
for (const svg of document.querySelectorAll("svg.chart")) {
  charts[svg.id] = [...svg.querySelectorAll("path[data-series]")].map(p => ({
    series: p.dataset.series, label: p.dataset.label,
    points: Number(p.dataset.points), drawn: (p.getAttribute("d").match(/[ML]/g) || []).length,
    max: Number(p.dataset.max),
  }));
}
const legends = {};
for (const ul of document.querySelectorAll("ul.legend")) {
  legends[ul.id] = [...ul.querySelectorAll("li")].map(li => ({
    label: li.dataset.label, state: li.dataset.state || null,
    mark: (li.querySelector(".mark") || {}).textContent || null,
  }));
}
return {
  charts, legends,
  samples: Number(document.getElementById("history-note").dataset.samples),
  methods: [...document.querySelectorAll("#methods tr[data-method]")].map(r => ({
    method: r.dataset.method,
    calls: Number(r.querySelector('[data-field="calls"]').dataset.value),
    errors: Number(r.querySelector('[data-field="errors"]').dataset.value),
  })),
  silos: [...document.querySelectorAll("#silos tr[data-silo]")].map(r => ({
    name: r.dataset.silo, state: r.dataset.state,
  })),
};
"##;

/// The paths of chart `id` in what [`READ_CHARTS`] read.
fn paths<'a>(page: &'a Value, id: &str) -> &'a [Value] {
    page["charts"][id].as_array().map_or(&[], Vec::as_slice)
}

/// The largest value path `label` of chart `id` drew with at least `points` data points, each
/// drawn.
fn drawn_max(page: &Value, id: &str, label: &str, points: u64) -> Option<f64> {
    paths(page, id)
        .iter()
        .find(|p| {
            p["label"] == label && p["points"].as_u64() >= Some(points) && p["drawn"] == p["points"]
        })
        .and_then(|p| p["max"].as_f64())
}

/// The `(calls, errors)` the per-method table shows for `method` (`<grain type>/<method>`).
fn method_row(page: &Value, method: &str) -> Option<(u64, u64)> {
    page["methods"]
        .as_array()?
        .iter()
        .find(|m| m["method"] == method)
        .map(|m| (m["calls"].as_u64().unwrap(), m["errors"].as_u64().unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_charts_draw_live_history_and_mark_a_stopped_silo_in_a_headless_chromium() {
    let cluster = cluster("dash-chart").await;
    let history = "/dashboard/history.json";
    assert_eq!(get(&cluster.http, history, None).await.0, 401, "the token");
    let stop = Arc::new(AtomicBool::new(false));
    let running = load(&cluster.client, 0..4, &stop);
    // A failing call: its turn ends in a rejection, counted as an error of its method.
    let failed = cluster
        .client
        .grain::<granary_tests::ReminderGrain>(1)
        .unregister_then_fail("none".into())
        .await;
    assert!(
        matches!(failed, Err(granary::CallError::Rejected { .. })),
        "{failed:?}"
    );

    let browser = Browser::start().await;
    assert_eq!(get(&cluster.http, history, Some(TOKEN)).await.0, 200);
    browser
        .goto(&format!("http://{}/dashboard?token={TOKEN}", cluster.http))
        .await
        .unwrap();
    // A sample every 2 s: at least 5 drawn points of live data after some 10 s.
    const POINTS: u64 = 5;
    let page = wait_for(
        "the charts draw ≥ 5 points of calls/s, p99 and activations, with non-zero values, \
         and the method table counts the failed call",
        async || {
            let page = browser
                .execute(READ_CHARTS, vec![])
                .await
                .map_err(|e| format!("reading the page: {e}"))?;
            let silos_calling = ["a", "b"]
                .iter()
                .filter(|silo| {
                    drawn_max(&page, "chart-calls", silo, POINTS).is_some_and(|m| m > 0.0)
                })
                .count();
            let p99 = ["a", "b"]
                .iter()
                .any(|silo| drawn_max(&page, "chart-p99", silo, POINTS).is_some_and(|m| m > 0.0));
            let activations =
                drawn_max(&page, "chart-activations", COUNTER, POINTS).is_some_and(|m| m >= 1.0);
            let events = paths(&page, "chart-events")
                .iter()
                .any(|p| p["max"].as_f64() > Some(0.0));
            let failing = method_row(&page, "cluster.reminded/unregister_then_fail");
            let bumps = method_row(&page, "cluster.counter/bump_and_announce");
            let ok = silos_calling == 2
                && p99
                && activations
                && events
                && failing == Some((1, 1))
                && bumps.is_some_and(|(calls, errors)| calls > 0 && errors == 0);
            if ok { Ok(page) } else { Err(page.to_string()) }
        },
    )
    .await;
    // The activations chart's line reaches the 4 counters (hash placement spreads them).
    assert_eq!(
        drawn_max(&page, "chart-activations", COUNTER, POINTS),
        Some(4.0),
        "{page}"
    );
    stop.store(true, Ordering::Relaxed);
    let calls = running.await.unwrap();
    assert!(calls > 0);

    // b stops without a word: within a sample or two its series and row are marked.
    cluster.b.signal("-KILL");
    let page = wait_for("the page marks b suspected or dead", async || {
        let page = browser
            .execute(READ_CHARTS, vec![])
            .await
            .map_err(|e| format!("reading the page: {e}"))?;
        let marked = |state: &Value| state == "Suspected" || state == "Dead";
        let legend = page["legends"]["legend-calls"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["label"] == "b" && marked(&l["state"]) && l["mark"].is_string());
        let row = page["silos"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "b" && marked(&s["state"]));
        let a_fine = page["legends"]["legend-calls"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["label"] == "a" && l["state"] == "Active");
        if legend && row && a_fine {
            Ok(page)
        } else {
            Err(page.to_string())
        }
    })
    .await;
    assert!(page["samples"].as_u64().unwrap() > POINTS, "{page}");

    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-charts.png");
    let png = browser.screenshot().await.unwrap();
    std::fs::write(&shot, &png).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "{} bytes", png.len());
    eprintln!("dashboard charts screenshot: {}", shot.display());
    browser.close().await;
    cluster.client.close().await;
}

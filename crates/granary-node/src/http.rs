//! The silo's HTTP server: `/metrics` (the silo's metrics, then its relay's), the health probes
//! and the dashboard's routes when `GRANARY_DASHBOARD_TOKEN` is set. It serves from before the
//! silo joins (the probes say it is starting) until after it stopped.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use granary_events::RelayMetrics;
use granary_redis::{RedisMembership, RedisStore, RedisStreamsSink};

use crate::health::Probes;
use crate::{NodeError, dashboard};

/// The metrics `/metrics` serves, set once the silo and its relay run.
pub(crate) type MetricsSlot = Arc<OnceLock<(granary::SiloMetrics, RelayMetrics)>>;

/// Binds the `GRANARY_METRICS` address, before the silo joins (a silo that cannot serve its
/// metrics never joins).
pub(crate) fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, NodeError> {
    std::net::TcpListener::bind(addr).map_err(|e| NodeError::Setting {
        name: "GRANARY_METRICS",
        problem: format!("cannot listen on {addr}: {e}"),
    })
}

/// The dashboard of cluster `cluster`, behind `token`: it reads the membership table, the
/// heartbeats and the event streams `<prefix><type>` from `store`'s Redis, and samples the
/// cluster for its charts from now on.
pub(crate) fn dashboard(
    cluster: &str,
    token: String,
    store: &Arc<RedisStore>,
    prefix: &str,
) -> Arc<dashboard::Dashboard> {
    let dashboard = Arc::new(dashboard::Dashboard::new(
        cluster,
        token,
        RedisMembership::new(store.clone()),
        RedisStreamsSink::new(store.clone(), prefix),
    ));
    dashboard.start_sampling();
    dashboard
}

/// Publishes where this silo's HTTP server answers, for the dashboards of the cluster to read
/// its `/metrics`: `addr`, or, if it listens on every interface (`0.0.0.0`, `::`), its port
/// on the host of the silo's transport address. A failure is logged: the silo runs on, and the
/// dashboards show it without charts.
pub(crate) async fn publish_address(
    membership: &RedisMembership,
    silo: &granary::Silo,
    addr: SocketAddr,
) {
    let published = match silo.address() {
        Some(transport) if addr.ip().is_unspecified() => {
            SocketAddr::new(transport.ip(), addr.port())
        }
        _ => addr,
    };
    if let Err(err) = membership
        .publish_http_address(silo.id(), &published.to_string())
        .await
    {
        tracing::warn!(
            address = %published, cause = %err,
            "the HTTP address could not be published: dashboards show no charts of this silo"
        );
    }
}

/// The text `/metrics` serves: the silo's metrics, then its relay's; `Err` before the silo
/// joined and once it is gone, saying which.
fn render_metrics(metrics: &MetricsSlot) -> Result<String, &'static str> {
    let Some((silo, relay)) = metrics.get() else {
        return Err("the silo is starting: no metrics before it joins");
    };
    let mut text = String::new();
    if !silo.encode(&mut text) {
        return Err("the silo stopped");
    }
    relay.encode(&mut text);
    text.push_str("# EOF\n");
    Ok(text)
}

/// Serves `/metrics` (Prometheus text: the silo's and its relay's, once `metrics` is set), the
/// health probes, and the dashboard if there is one, on `listener`; returns the handle that
/// stops the server.
pub(crate) fn serve_http(
    metrics: MetricsSlot,
    probes: Arc<Probes>,
    dashboard: Option<Arc<dashboard::Dashboard>>,
    listener: std::net::TcpListener,
) -> Result<actix_web::dev::ServerHandle, NodeError> {
    use actix_web::{App, HttpResponse, HttpServer, web};
    let addr = listener
        .local_addr()
        .map_or_else(|_| "?".to_owned(), |a| a.to_string());
    let server = HttpServer::new(move || {
        let metrics = metrics.clone();
        let dashboard = dashboard.clone();
        App::new()
            .route(
                "/metrics",
                web::get().to(move || {
                    let text = render_metrics(&metrics);
                    async move {
                        match text {
                            Ok(text) => HttpResponse::Ok()
                                // prometheus-client writes OpenMetrics text (`# EOF`
                                // ends it): Prometheus parses it by this content type.
                                .content_type(
                                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                                )
                                .body(text),
                            Err(why) => HttpResponse::ServiceUnavailable().body(why),
                        }
                    }
                }),
            )
            .configure(|config| probes.routes(config))
            .configure(|config| {
                if let Some(dashboard) = &dashboard {
                    dashboard.routes(config);
                }
            })
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .map_err(|e| NodeError::Setting {
        name: "GRANARY_METRICS",
        problem: format!("cannot serve on {addr:?}: {e}"),
    })?
    .run();
    let handle = server.handle();
    tokio::spawn(server);
    Ok(handle)
}

//! The silo's HTTP server: `/metrics` (the silo's metrics, then its relay's) and the dashboard's
//! routes when `GRANARY_DASHBOARD_TOKEN` is set.

use std::net::SocketAddr;
use std::sync::Arc;

use granary_events::RelayMetrics;
use granary_redis::{RedisMembership, RedisStore, RedisStreamsSink};

use crate::{NodeError, dashboard};

/// Binds the `GRANARY_METRICS` address, before the silo joins (a silo that cannot serve its
/// metrics never joins).
pub(crate) fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, NodeError> {
    std::net::TcpListener::bind(addr).map_err(|e| NodeError::Setting {
        name: "GRANARY_METRICS",
        problem: format!("cannot listen on {addr}: {e}"),
    })
}

/// The dashboard of cluster `cluster`, behind `token`: it reads the membership table, the
/// heartbeats and the event streams `<prefix><type>` from `store`'s Redis.
pub(crate) fn dashboard(
    cluster: &str,
    token: String,
    store: &Arc<RedisStore>,
    prefix: &str,
) -> Arc<dashboard::Dashboard> {
    Arc::new(dashboard::Dashboard::new(
        cluster,
        token,
        RedisMembership::new(store.clone()),
        RedisStreamsSink::new(store.clone(), prefix),
    ))
}

/// The text `/metrics` serves: the silo's metrics, then its relay's; `None` once the silo is
/// gone.
fn render_metrics(silo: &granary::SiloMetrics, relay: &RelayMetrics) -> Option<String> {
    let mut text = String::new();
    if !silo.encode(&mut text) {
        return None;
    }
    relay.encode(&mut text);
    text.push_str("# EOF\n");
    Some(text)
}

/// Serves `/metrics` (Prometheus text: the silo's and its relay's), and the dashboard if there
/// is one, on `listener`; returns the handle that stops the server.
pub(crate) fn serve_http(
    silo: granary::SiloMetrics,
    relay: RelayMetrics,
    dashboard: Option<Arc<dashboard::Dashboard>>,
    listener: std::net::TcpListener,
) -> Result<actix_web::dev::ServerHandle, NodeError> {
    use actix_web::{App, HttpResponse, HttpServer, web};
    let addr = listener
        .local_addr()
        .map_or_else(|_| "?".to_owned(), |a| a.to_string());
    let with_dashboard = dashboard.is_some();
    let server = HttpServer::new(move || {
        let (silo, relay) = (silo.clone(), relay.clone());
        let dashboard = dashboard.clone();
        App::new()
            .route(
                "/metrics",
                web::get().to(move || {
                    let text = render_metrics(&silo, &relay);
                    async move {
                        match text {
                            Some(text) => HttpResponse::Ok()
                                // prometheus-client writes OpenMetrics text (`# EOF`
                                // ends it): Prometheus parses it by this content type.
                                .content_type(
                                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                                )
                                .body(text),
                            None => HttpResponse::ServiceUnavailable().body("the silo stopped"),
                        }
                    }
                }),
            )
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
    #[allow(clippy::print_stdout, reason = "the process's interface")]
    {
        if with_dashboard {
            println!("dashboard at http://{addr}/dashboard?token=<GRANARY_DASHBOARD_TOKEN>");
        } else {
            println!("dashboard off: set GRANARY_DASHBOARD_TOKEN to serve it");
        }
    }
    Ok(handle)
}

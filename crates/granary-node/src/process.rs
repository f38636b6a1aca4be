//! The silo process: [`run`] and [`run_with`] (checks, Redis, relay, silo), the ready line,
//! the clean stop on SIGINT/SIGTERM, and [`NodeError::DeclaredDead`] (exit status 3) when the
//! cluster declares the silo dead.

use std::sync::Arc;

use granary::{ClusterConfig, Silo, SiloBuilder, SiloConfig, SiloEvent};
use granary_events::{Relay, RelayBuilder, RelayConfig};
use granary_redis::{RedisConfig, RedisMembership, RedisStore};

use crate::health::Probes;
use crate::settings::{Resolved, resolve};
use crate::{NodeError, Settings, http, telemetry};

/// Runs a silo until SIGINT or SIGTERM (then stops it cleanly) or until the cluster declares it
/// dead. `register` registers the grain types.
///
/// Everything that can be checked before the silo joins is checked first, in this order: the
/// settings, the metrics address (bound), Redis, the event queues. A silo that fails one of
/// them never joins the cluster.
///
/// It installs the process's tracing subscriber (unless one is installed already): log lines
/// by `RUST_LOG`, and the OpenTelemetry export when `GRANARY_OTLP` is set, flushed when the
/// silo stops.
///
/// # Errors
/// A [`NodeError`] saying what stopped the silo.
pub async fn run(
    settings: Settings,
    register: impl FnOnce(SiloBuilder) -> SiloBuilder,
) -> Result<(), NodeError> {
    run_with(settings, register, |_| {}).await
}

/// As [`run`], and hands the silo to `started` once it is active, before the ready line: a
/// test harness reaches the running silo through it (the chaos suite's `chaos-silo` injects
/// partitions into its transport).
///
/// # Errors
/// As [`run`].
pub async fn run_with(
    settings: Settings,
    register: impl FnOnce(SiloBuilder) -> SiloBuilder,
    started: impl FnOnce(&Silo),
) -> Result<(), NodeError> {
    let resolved = resolve(&settings);
    let silo_name = resolved.as_ref().map_or("silo", |r| r.name.as_str());
    let otlp = resolved.as_ref().ok().and_then(|r| r.otlp.as_deref());
    let telemetry = telemetry::install(silo_name, otlp)?;
    // Boxed: the running silo's future is large (16 KiB), and callers' futures hold it.
    let result = Box::pin(serve(&settings, resolved?, register, started)).await;
    telemetry.shutdown().await;
    result
}

/// [`run`] once the settings are resolved and the subscriber installed.
async fn serve(
    settings: &Settings,
    r: Resolved,
    register: impl FnOnce(SiloBuilder) -> SiloBuilder,
    started: impl FnOnce(&Silo),
) -> Result<(), NodeError> {
    let http_listener = r.http.map(http::bind).transpose()?;
    let bootstrap = if r.create {
        granary_redis::Bootstrap::CreateIfMissing
    } else {
        granary_redis::Bootstrap::RequireExisting
    };
    let mut redis = RedisConfig::new(&r.redis, &r.cluster).bootstrap(bootstrap);
    if let Some(tls) = &r.redis_tls {
        redis = redis.tls(tls.redis());
    }
    if let Some((replicas, wait)) = r.redis_wait_replicas {
        redis = redis.wait_replicas(replicas, wait);
    }
    let store = match RedisStore::connect(redis).await {
        Ok(store) => Arc::new(store),
        Err(granary_redis::ConnectError::NoCluster { cluster, url }) => {
            return Err(NodeError::Setting {
                name: "GRANARY_BOOTSTRAP",
                problem: format!(
                    "Redis at {url} holds no cluster {cluster:?}, and a silo only joins an \
                     existing cluster by default. To start a new cluster, start its first silo \
                     with GRANARY_BOOTSTRAP=create (or `bootstrap = \"create\"` in the settings \
                     file). If the cluster existed, Redis lost its data: restore it rather than \
                     starting an empty cluster"
                ),
            });
        }
        Err(err) => return Err(err.into()),
    };
    let prefix = settings.events_prefix.as_deref().unwrap_or("events:");
    let relay = r
        .routing
        .apply(
            settings,
            store.clone(),
            prefix,
            Relay::builder(store.clone()).config(RelayConfig {
                max_refusals: r
                    .relay_max_refusals
                    .unwrap_or(RelayConfig::default().max_refusals),
                ..RelayConfig::default()
            }),
        )
        .await?;
    let mut cluster = ClusterConfig::new(&r.cluster, r.secret.as_bytes(), r.listen);
    cluster.advertise = r.advertise;
    cluster.placement = r.placement;
    cluster.tls = r.tls;
    for role in &r.roles {
        cluster = cluster.role(role.clone());
    }
    for (grain_type, role) in &r.type_roles {
        cluster = cluster.require_role(grain_type, role.clone());
    }
    let mut config = SiloConfig {
        name: r.name,
        ..SiloConfig::default()
    };
    if r.test_profile {
        cluster = cluster.test_profile();
        config = SiloConfig {
            name: config.name,
            ..SiloConfig::test_profile()
        };
    }
    if let Some(size) = r.max_event_size {
        config.max_event_size = size;
    }
    if let Some(idle) = r.idle_after {
        config.idle_timeout = idle;
        config.collection_quantum = config.collection_quantum.min(idle);
    }
    let builder = Silo::builder()
        .config(config)
        .storage(store.clone())
        .membership(Arc::new(RedisMembership::new(store.clone())))
        .cluster(cluster);
    let builder = host_only(register(builder), &r.hosts)?;
    // The HTTP server answers from here, before the silo joins: the probes say it is starting
    // (not ready), `/metrics` that there is nothing yet.
    let metrics = http::MetricsSlot::default();
    let probes = Probes::new(store.clone());
    let http = match http_listener {
        Some(listener) => {
            let dashboard = r
                .dashboard_token
                .clone()
                .map(|token| http::dashboard(&r.cluster, token, &store, prefix));
            let with_dashboard = dashboard.is_some();
            let server = http::serve_http(metrics.clone(), probes.clone(), dashboard, listener)?;
            Some((server, with_dashboard))
        }
        None => None,
    };
    let announce = r
        .http
        .zip(http.as_ref().map(|(_, with_dashboard)| *with_dashboard));
    let membership = RedisMembership::new(store.clone());
    let result = Box::pin(run_silo(
        builder,
        relay,
        &metrics,
        &probes,
        (announce, &membership),
        started,
    ))
    .await;
    if let Some((server, _)) = http {
        server.stop(true).await;
    }
    result
}

/// Starts the silo and its relay, fills in what the HTTP server serves, prints the ready line
/// (then where the HTTP server at `announce` serves, and whether with the dashboard), publishes
/// that address in `membership` for the dashboards, and runs until a stop signal (a clean
/// stop) or until the cluster declares the silo dead.
async fn run_silo(
    builder: SiloBuilder,
    relay: RelayBuilder,
    metrics: &http::MetricsSlot,
    probes: &Probes,
    (announce, membership): (Option<(std::net::SocketAddr, bool)>, &RedisMembership),
    started: impl FnOnce(&Silo),
) -> Result<(), NodeError> {
    let silo = builder.start().await?;
    started(&silo);
    // The relay of the shards this silo owns, with its subscribed grains as one more sink.
    let relay = silo
        .deliver_subscriptions(relay.owner(silo.shard_owner()))
        .start();
    let _ = metrics.set((silo.metrics(), relay.metrics()));
    probes.joined(silo.health());
    if let Some((addr, _)) = announce {
        http::publish_address(membership, &silo, addr).await;
    }
    let mut events = silo.events();
    #[allow(
        clippy::print_stdout,
        reason = "the ready line is the process's interface"
    )]
    {
        println!(
            "granary silo {} ready at {}",
            silo.id(),
            silo.address().map_or_else(String::new, |a| a.to_string())
        );
        if let Some((addr, with_dashboard)) = announce {
            println!("metrics at http://{addr}/metrics; probes at /health/live and /health/ready");
            if with_dashboard {
                println!("dashboard at http://{addr}/dashboard?token=<GRANARY_DASHBOARD_TOKEN>");
            } else {
                println!("dashboard off: set GRANARY_DASHBOARD_TOKEN to serve it");
            }
        }
    }
    let dead = events.next_where(|e| matches!(e, SiloEvent::DeclaredDead));
    let result = tokio::select! {
        () = stop_signal() => {
            silo.shutdown().await?;
            Ok(())
        }
        Some(_) = dead => Err(NodeError::DeclaredDead),
    };
    relay.stop().await;
    result
}

async fn stop_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handlers can be installed");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Limits the silo to the grain types `hosts` names (`GRANARY_HOSTS`); all registered types if
/// it names none.
fn host_only(mut builder: SiloBuilder, hosts: &[String]) -> Result<SiloBuilder, NodeError> {
    let registered = builder.grain_types();
    for name in hosts {
        let Some(known) = registered.iter().find(|t| **t == name.as_str()) else {
            return Err(NodeError::Setting {
                name: "GRANARY_HOSTS",
                problem: format!(
                    "{name:?} is not a grain type of this silo; it registers {}",
                    registered.join(", ")
                ),
            });
        };
        builder = builder.hosts_type(known);
    }
    Ok(builder)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosting_a_type_the_silo_does_not_register_is_a_setting_error() {
        assert!(host_only(Silo::builder(), &[]).is_ok());
        let err = host_only(Silo::builder(), &["game".into()]).err().unwrap();
        assert!(err.to_string().contains("GRANARY_HOSTS"), "{err}");
        assert!(err.to_string().contains("\"game\""), "{err}");
        assert_eq!(err.exit_code(), 2);
    }
}

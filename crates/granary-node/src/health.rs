//! The health probes on the metrics address, for an orchestrator (no dashboard token):
//! `/health/live` answers while the process's HTTP server does; `/health/ready` answers 200
//! only while the silo is `Active` in its own view of membership (its lease holding) and its
//! Redis answers a `PING` within [`STORE_PING_TIMEOUT`].

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use actix_web::{HttpResponse, http::header, web};
use granary::{NotReady, SiloHealth};
use granary_redis::RedisStore;
use serde::Serialize;

/// How long the readiness probe waits for the state store's `PING`: well under the probe
/// timeouts an orchestrator uses (Kubernetes: 1 s by default).
pub(crate) const STORE_PING_TIMEOUT: Duration = Duration::from_millis(800);

/// What the probes read: the state store from the start, the silo once it has joined.
#[derive(Debug)]
pub(crate) struct Probes {
    store: Arc<RedisStore>,
    silo: OnceLock<SiloHealth>,
}

impl Probes {
    /// The probes of a silo that has not joined yet: not ready until [`joined`](Self::joined).
    pub(crate) fn new(store: Arc<RedisStore>) -> Arc<Self> {
        Arc::new(Self {
            store,
            silo: OnceLock::new(),
        })
    }

    /// The silo joined: readiness follows its health from now on.
    pub(crate) fn joined(&self, silo: SiloHealth) {
        let _ = self.silo.set(silo);
    }

    /// The silo's check: `None` before it joined.
    fn silo(&self) -> Option<Result<(), NotReady>> {
        self.silo.get().map(SiloHealth::readiness)
    }

    /// The state store's check: a `PING` within [`STORE_PING_TIMEOUT`].
    async fn store(&self) -> Result<(), String> {
        match tokio::time::timeout(STORE_PING_TIMEOUT, self.store.ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(err.to_string()),
            Err(_) => Err(format!(
                "Redis did not answer a PING within {STORE_PING_TIMEOUT:?}"
            )),
        }
    }

    /// Adds `/health/live` and `/health/ready` to an actix-web app.
    pub(crate) fn routes(self: &Arc<Self>, config: &mut web::ServiceConfig) {
        let probes = self.clone();
        config.route("/health/live", web::get().to(live)).route(
            "/health/ready",
            web::get().to(move || {
                let probes = probes.clone();
                async move {
                    let store = probes.store().await;
                    respond(&verdict(probes.silo(), store))
                }
            }),
        );
    }
}

/// `/health/ready`'s answer: what each check found.
#[derive(Debug, Serialize, PartialEq, Eq)]
struct Verdict {
    /// `ready` or `not ready`.
    status: &'static str,
    /// The checks that failed, by name (`silo`, `store`); empty when ready.
    failed: Vec<&'static str>,
    /// `ok`, or why the silo is not ready.
    silo: String,
    /// `ok`, or why the state store is not ready.
    store: String,
}

impl Verdict {
    fn ready(&self) -> bool {
        self.failed.is_empty()
    }
}

/// Combines the silo's check (`None`: it has not joined yet) and the store's.
fn verdict(silo: Option<Result<(), NotReady>>, store: Result<(), String>) -> Verdict {
    let mut failed = Vec::new();
    let silo = match silo {
        Some(Ok(())) => "ok".to_owned(),
        Some(Err(err)) => {
            failed.push("silo");
            err.to_string()
        }
        None => {
            failed.push("silo");
            "starting: the silo has not joined the cluster yet".to_owned()
        }
    };
    let store = match store {
        Ok(()) => "ok".to_owned(),
        Err(err) => {
            failed.push("store");
            err
        }
    };
    Verdict {
        status: if failed.is_empty() {
            "ready"
        } else {
            "not ready"
        },
        failed,
        silo,
        store,
    }
}

fn respond(verdict: &Verdict) -> HttpResponse {
    let mut response = if verdict.ready() {
        HttpResponse::Ok()
    } else {
        HttpResponse::ServiceUnavailable()
    };
    response
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(verdict)
}

/// `GET /health/live`: the process answers.
async fn live() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .content_type("application/json")
        .body(r#"{"status":"live"}"#)
}

#[cfg(test)]
mod tests;

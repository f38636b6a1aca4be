//! The dashboard: a web page of the live cluster (silos and their status, activations per grain
//! type, calls per second, recent events) and charts of its last 10 minutes, served beside
//! `/metrics` when a token is set.
//!
//! The tables of the moment come from Redis, so any silo shows the whole cluster: the
//! membership table and the heartbeats (`RedisMembership`), and the newest entries of the event
//! streams (`RedisStreamsSink::recent`). A silo's call rate there is the difference between the
//! `calls` counters of two heartbeats this server has seen, over the time between them.
//!
//! The charts come from the server's [`History`]: every [`SAMPLE_EVERY`] the dashboard reads
//! the membership table, the heartbeats, and the `/metrics` of every silo that is not dead, at
//! the HTTP address each silo process publishes in Redis
//! (`RedisMembership::publish_http_address`), and keeps the sample in a bounded ring. A page
//! opened late shows the last 10 minutes at once.
//!
//! Routes, each requiring the token (`Authorization: Bearer <token>` or `?token=<token>`):
//! `/dashboard` (the page, one static file; it polls the API every second and the history
//! every sample), `/dashboard/api/cluster` (the JSON of the tables) and
//! `/dashboard/history.json` (the samples and the per-method table).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use granary::SiloId;
use granary::provider::{MembershipTable, SiloStatus};
use granary_redis::{RedisMembership, RedisStreamsSink};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use self::history::{History, Reading, SAMPLE_EVERY};

mod history;
mod scrape;

/// The page: HTML with its CSS and JavaScript inline, no build step.
const PAGE: &str = include_str!("dashboard/page.html");

/// How many recent events the API returns.
const RECENT_EVENTS: usize = 20;

/// At most this many event streams are read.
const MAX_TOPICS: usize = 64;

/// How long the list of event streams is kept before the keyspace is scanned again (sooner
/// while none is known).
const TOPICS_REFRESH: Duration = Duration::from_secs(5);
const TOPICS_REFRESH_WHILE_NONE: Duration = Duration::from_secs(1);

/// The dashboard's state: what it reads from, its token, and the heartbeat readings it keeps to
/// compute call rates.
pub(crate) struct Dashboard {
    cluster: String,
    token: String,
    membership: RedisMembership,
    streams: RedisStreamsSink,
    rates: Mutex<Rates>,
    topics: Mutex<Option<(Instant, Vec<String>)>>,
    history: Mutex<History>,
}

impl std::fmt::Debug for Dashboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("Dashboard")
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

impl Dashboard {
    /// A dashboard of `cluster`, reading `membership` and the event streams of `streams`,
    /// served to whoever presents `token`.
    pub(crate) fn new(
        cluster: &str,
        token: String,
        membership: RedisMembership,
        streams: RedisStreamsSink,
    ) -> Self {
        Self {
            cluster: cluster.to_owned(),
            token,
            membership,
            streams,
            rates: Mutex::new(Rates::default()),
            topics: Mutex::new(None),
            history: Mutex::new(History::default()),
        }
    }

    /// Samples the cluster into the history every [`SAMPLE_EVERY`], from now until the
    /// dashboard is dropped.
    pub(crate) fn start_sampling(self: &Arc<Self>) {
        let dashboard = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(dashboard) = dashboard.upgrade() else {
                    return;
                };
                dashboard.sample().await;
            }
        });
    }

    /// Takes one sample: the table and heartbeats from Redis, each live silo's `/metrics`.
    async fn sample(&self) {
        match self.readings().await {
            Ok(readings) => self
                .history
                .lock()
                .expect("no panic while the lock is held")
                .record(now_ms(), Instant::now(), readings),
            Err(err) => {
                tracing::warn!(cause = %err, "the dashboard could not sample the cluster");
                self.history
                    .lock()
                    .expect("no panic while the lock is held")
                    .failed(format!("the cluster cannot be read: {err}"));
            }
        }
    }

    async fn readings(&self) -> Result<Vec<Reading>, granary::StorageError> {
        let snapshot = self.membership.read().await?;
        let beats = self.membership.heartbeats().await?;
        let addresses = self.membership.http_addresses().await?;
        let now = now_ms();
        // The scrapes run side by side: a silo that does not answer delays the sample by the
        // scrape timeout once, not once per silo.
        let scrapes: Vec<_> = snapshot
            .entries
            .iter()
            .map(|entry| {
                let address = addresses
                    .iter()
                    .find(|(silo, _)| *silo == entry.silo)
                    .map(|(_, address)| address.clone());
                address
                    .filter(|_| entry.status != SiloStatus::Dead)
                    .map(|address| tokio::spawn(async move { scrape::fetch(&address).await }))
            })
            .collect();
        let mut readings = Vec::with_capacity(snapshot.entries.len());
        for (entry, scrape) in snapshot.entries.iter().zip(scrapes) {
            let scrape = match scrape {
                Some(task) => Some(match task.await {
                    Ok(text) => text.map(|text| scrape::parse(&text)),
                    Err(err) => Err(format!("the scrape failed: {err}")),
                }),
                None => None,
            };
            let beat = beats.iter().find(|(s, _)| *s == entry.silo).map(|(_, b)| b);
            readings.push(Reading {
                silo: entry.silo.clone(),
                status: format!("{:?}", entry.status),
                suspicions: !entry.suspicions.is_empty(),
                heartbeat_age_ms: beat.map(|b| now.saturating_sub(b.at_ms)),
                by_type: beat.map(|b| b.by_type.clone()).unwrap_or_default(),
                scrape,
            });
        }
        Ok(readings)
    }

    /// Adds the dashboard's routes to an actix-web app.
    pub(crate) fn routes(self: &Arc<Self>, config: &mut web::ServiceConfig) {
        config
            .app_data(web::Data::from(self.clone()))
            .route("/dashboard", web::get().to(page))
            .route("/dashboard/api/cluster", web::get().to(api))
            .route("/dashboard/history.json", web::get().to(history));
    }

    fn authorized(&self, req: &HttpRequest) -> bool {
        authorized(req, &self.token)
    }

    /// The cluster as Redis shows it now.
    async fn view(&self) -> Result<ClusterView, granary::StorageError> {
        let snapshot = self.membership.read().await?;
        let beats = self.membership.heartbeats().await?;
        let now = now_ms();
        let mut silos = Vec::with_capacity(snapshot.entries.len());
        {
            let mut rates = self.rates.lock().expect("no panic while the lock is held");
            for entry in &snapshot.entries {
                let beat = beats.iter().find(|(s, _)| *s == entry.silo).map(|(_, b)| b);
                let rate = beat.and_then(|b| rates.observe(&entry.silo, b.at_ms, b.calls));
                silos.push(SiloView {
                    id: entry.silo.to_string(),
                    name: entry.silo.name().to_owned(),
                    generation: entry.silo.generation().to_string(),
                    address: entry.address.clone(),
                    status: format!("{:?}", entry.status),
                    heartbeat_age_ms: beat.map(|b| now.saturating_sub(b.at_ms)),
                    activations: beat.map(|b| b.activations),
                    by_type: beat
                        .map(|b| {
                            b.by_type
                                .iter()
                                .map(|(grain_type, activations)| TypeView {
                                    grain_type: grain_type.clone(),
                                    activations: *activations,
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                    calls: beat.map(|b| b.calls),
                    calls_per_sec: rate.filter(|_| entry.status != SiloStatus::Dead),
                });
            }
            rates.retain(|silo| snapshot.entries.iter().any(|e| e.silo == *silo));
        }
        let (events, events_error) = match self.recent_events().await {
            Ok(events) => (events, None),
            Err(err) => (Vec::new(), Some(err.to_string())),
        };
        Ok(ClusterView {
            cluster: self.cluster.clone(),
            now_ms: now,
            membership_version: snapshot.version,
            silos,
            events,
            events_error,
        })
    }

    async fn recent_events(&self) -> Result<Vec<EventView>, granary::StorageError> {
        let cached = self
            .topics
            .lock()
            .expect("no panic while the lock is held")
            .clone();
        let topics = match cached {
            Some((at, topics))
                if at.elapsed()
                    < if topics.is_empty() {
                        TOPICS_REFRESH_WHILE_NONE
                    } else {
                        TOPICS_REFRESH
                    } =>
            {
                topics
            }
            _ => {
                let topics = self.streams.topics(MAX_TOPICS).await?;
                *self.topics.lock().expect("no panic while the lock is held") =
                    Some((Instant::now(), topics.clone()));
                topics
            }
        };
        let events = self.streams.recent(&topics, RECENT_EVENTS).await?;
        Ok(events
            .into_iter()
            .map(|e| EventView {
                source: format!("{}/{}", e.source.type_name, e.source.key),
                id: e.id,
                event_type: e.type_name,
                time_ms: e.timestamp_ms,
            })
            .collect())
    }
}

/// Whether `req` carries `token`, as a bearer token or a `token` query parameter, compared in
/// constant time (only a length mismatch ends the comparison early).
fn authorized(req: &HttpRequest, token: &str) -> bool {
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let query = web::Query::<TokenQuery>::from_query(req.query_string())
        .ok()
        .and_then(|q| q.into_inner().token);
    [bearer, query]
        .into_iter()
        .flatten()
        .any(|given| bool::from(given.as_bytes().ct_eq(token.as_bytes())))
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// `GET /dashboard`: the page.
async fn page(req: HttpRequest, dashboard: web::Data<Dashboard>) -> HttpResponse {
    if !dashboard.authorized(&req) {
        return unauthorized();
    }
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .body(PAGE)
}

/// `GET /dashboard/api/cluster`: the cluster as JSON ([`ClusterView`]).
async fn api(req: HttpRequest, dashboard: web::Data<Dashboard>) -> HttpResponse {
    if !dashboard.authorized(&req) {
        return unauthorized();
    }
    match dashboard.view().await {
        Ok(view) => HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .json(view),
        Err(err) => HttpResponse::ServiceUnavailable()
            .content_type("text/plain; charset=utf-8")
            .body(format!("the cluster cannot be read: {err}")),
    }
}

/// `GET /dashboard/history.json`: the samples of the last 10 minutes and the per-method table
/// (`history::HistoryView`).
async fn history(req: HttpRequest, dashboard: web::Data<Dashboard>) -> HttpResponse {
    if !dashboard.authorized(&req) {
        return unauthorized();
    }
    let history = dashboard
        .history
        .lock()
        .expect("no panic while the lock is held");
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(history.view(&dashboard.cluster, now_ms()))
}

fn unauthorized() -> HttpResponse {
    HttpResponse::Unauthorized()
        .insert_header((
            header::WWW_AUTHENTICATE,
            "Bearer realm=\"granary-dashboard\"",
        ))
        .content_type("text/plain; charset=utf-8")
        .body(
            "the dashboard needs its token (the silo's GRANARY_DASHBOARD_TOKEN): open \
             /dashboard?token=<token>, or send the header `Authorization: Bearer <token>`\n",
        )
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What `/dashboard/api/cluster` answers.
#[derive(Debug, Serialize)]
struct ClusterView {
    /// The cluster id.
    cluster: String,
    /// The server's clock, milliseconds since the Unix epoch.
    now_ms: u64,
    /// The membership table's version.
    membership_version: u64,
    /// Every row of the membership table (dead silos included until cleaned up).
    silos: Vec<SiloView>,
    /// The newest events across the event streams, newest first.
    events: Vec<EventView>,
    /// Why the events could not be read, if they could not (the silos are still shown).
    events_error: Option<String>,
}

#[derive(Debug, Serialize)]
struct SiloView {
    /// `<name>@<generation>`.
    id: String,
    name: String,
    /// A string: generations exceed what a JavaScript number holds exactly (2^53).
    generation: String,
    address: String,
    /// `Joining`, `Active`, `ShuttingDown` or `Dead`.
    status: String,
    /// Milliseconds since its last heartbeat; none if it never sent one.
    heartbeat_age_ms: Option<u64>,
    activations: Option<u64>,
    by_type: Vec<TypeView>,
    /// Calls handled since it started.
    calls: Option<u64>,
    /// Calls per second between the last two heartbeats seen; none until two were seen.
    calls_per_sec: Option<f64>,
}

#[derive(Debug, Serialize)]
struct TypeView {
    grain_type: String,
    activations: u64,
}

#[derive(Debug, Serialize)]
struct EventView {
    id: String,
    #[serde(rename = "type")]
    event_type: String,
    /// `<grain type>/<key>`.
    source: String,
    /// Commit time, milliseconds since the Unix epoch.
    time_ms: u64,
}

/// Call rates from the `calls` counters of successive heartbeats.
#[derive(Debug, Default)]
struct Rates {
    last: HashMap<SiloId, Sample>,
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    at_ms: u64,
    calls: u64,
    rate: Option<f64>,
}

/// A previous reading older than this is not used for a rate: the rate shown is recent.
const RATE_WINDOW_MS: u64 = 30_000;

impl Rates {
    /// Records `silo`'s heartbeat (`calls` at `at_ms`); returns its calls per second since the
    /// previous heartbeat seen, or the last rate if this heartbeat was already seen.
    fn observe(&mut self, silo: &SiloId, at_ms: u64, calls: u64) -> Option<f64> {
        let fresh = Sample {
            at_ms,
            calls,
            rate: None,
        };
        let Some(last) = self.last.get_mut(silo) else {
            self.last.insert(silo.clone(), fresh);
            return None;
        };
        if at_ms <= last.at_ms {
            return last.rate;
        }
        let elapsed = at_ms - last.at_ms;
        *last = if elapsed > RATE_WINDOW_MS || calls < last.calls {
            fresh
        } else {
            #[allow(
                clippy::cast_precision_loss,
                reason = "call counts and milliseconds far below 2^52"
            )]
            let rate = (calls - last.calls) as f64 * 1000.0 / elapsed as f64;
            Sample {
                rate: Some(rate),
                ..fresh
            }
        };
        last.rate
    }

    /// Forgets the silos `keep` rejects (rows gone from the table).
    fn retain(&mut self, keep: impl Fn(&SiloId) -> bool) {
        self.last.retain(|silo, _| keep(silo));
    }
}

#[cfg(test)]
mod tests;

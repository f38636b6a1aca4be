//! The dashboard's history: a bounded ring of samples of the cluster, one every
//! [`SAMPLE_EVERY`], the last [`KEPT_SAMPLES`] of them (10 minutes), served as
//! `/dashboard/history.json` for the page's charts.
//!
//! Each sample holds, per silo of the membership table, its state (its membership status, or
//! `Suspected` when other silos voted against it, its heartbeat is stale or its `/metrics` does
//! not answer) and, from two successive reads of its `/metrics`, its calls per second and the
//! p99 latency of the calls it handled in between; the activations per grain type over the
//! cluster (from the heartbeats); and per event sink, the events per second its relays
//! delivered and its largest lag. Beside the ring, the per-method call and error counts of the
//! last sample. Memory is bounded: at most [`KEPT_SAMPLES`] samples of at most [`MAX_SERIES`]
//! silos, grain types and sinks each, and [`MAX_METHODS`] method rows.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use granary::SiloId;
use serde::Serialize;

use super::scrape::Scrape;

/// How often the cluster is sampled.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_secs(2);

/// How many samples are kept: 10 minutes at one every [`SAMPLE_EVERY`].
pub(crate) const KEPT_SAMPLES: usize = 300;

/// At most this many silos, grain types and sinks (each) are kept per sample; the rest are
/// left out (and the history says so).
pub(crate) const MAX_SERIES: usize = 32;

/// At most this many rows of the per-method table.
pub(crate) const MAX_METHODS: usize = 200;

/// A heartbeat older than this makes its silo `Suspected` (the failure detector's own verdict,
/// `Dead`, comes later and from the table).
pub(crate) const STALE_HEARTBEAT_MS: u64 = 10_000;

/// The quantile of the latency chart.
const QUANTILE: f64 = 0.99;

/// What one sample reads of one silo (a row of the membership table).
#[derive(Debug, Clone)]
pub(crate) struct Reading {
    pub(crate) silo: SiloId,
    /// Its membership status (`Joining`, `Active`, `ShuttingDown`, `Dead`).
    pub(crate) status: String,
    /// Whether other silos voted it suspected.
    pub(crate) suspicions: bool,
    /// Milliseconds since its last heartbeat; none if it never sent one.
    pub(crate) heartbeat_age_ms: Option<u64>,
    /// Its activations per grain type, from its heartbeat.
    pub(crate) by_type: Vec<(String, u64)>,
    /// Its `/metrics`: none if it was not read (a dead silo, or one that published no HTTP
    /// address), else what was read or why nothing was.
    pub(crate) scrape: Option<Result<Scrape, String>>,
}

/// One sample of the cluster.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Sample {
    /// When, milliseconds since the Unix epoch.
    pub(crate) at_ms: u64,
    pub(crate) silos: Vec<SiloPoint>,
    /// Activations per grain type over the cluster's live silos.
    pub(crate) types: Vec<TypePoint>,
    pub(crate) sinks: Vec<SinkPoint>,
}

/// A silo in one sample.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SiloPoint {
    /// `<name>@<generation>`.
    pub(crate) id: String,
    pub(crate) name: String,
    /// Its membership status, or `Suspected` (see [`Reading`]).
    pub(crate) state: String,
    /// Calls per second since the previous sample; none without two reads of its metrics.
    pub(crate) calls_per_sec: Option<f64>,
    /// The p99 latency of the two-way calls it handled since the previous sample, in
    /// milliseconds: the upper bound of the histogram bucket holding the 99th percentile (the
    /// buckets double, so it is within 2× of the true figure). None if it handled none.
    pub(crate) p99_ms: Option<f64>,
}

/// A grain type's activations in one sample.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TypePoint {
    pub(crate) grain_type: String,
    pub(crate) activations: u64,
}

/// An event sink in one sample, over the relays of the silos read.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SinkPoint {
    pub(crate) sink: String,
    /// Events delivered per second since the previous sample, summed over the silos.
    pub(crate) events_per_sec: Option<f64>,
    /// The largest lag of the silos' relays for this sink, in seconds.
    pub(crate) lag_seconds: f64,
}

/// A silo as the last sample saw it, with why it is suspected.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SiloNow {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) state: String,
    /// Why it is shown `Suspected`; none otherwise.
    pub(crate) why: Option<String>,
}

/// A row of the per-method table: counts since each silo read started, summed over them.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct MethodRow {
    pub(crate) grain_type: String,
    pub(crate) method: String,
    pub(crate) calls: u64,
    pub(crate) errors: u64,
}

/// The ring of samples and what the next sample needs of the last.
#[derive(Debug)]
pub(crate) struct History {
    capacity: usize,
    samples: VecDeque<Sample>,
    /// The previous read of each silo's metrics, and when it was made.
    previous: HashMap<SiloId, (Instant, Scrape)>,
    silos: Vec<SiloNow>,
    methods: Vec<MethodRow>,
    /// Whether the last sample left series or methods out (over the bounds).
    truncated: bool,
    /// Why the last sample could not be taken, if it could not.
    error: Option<String>,
}

impl Default for History {
    fn default() -> Self {
        Self::with_capacity(KEPT_SAMPLES)
    }
}

impl History {
    /// An empty history keeping at most `capacity` samples.
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            samples: VecDeque::with_capacity(capacity.max(1)),
            previous: HashMap::new(),
            silos: Vec::new(),
            methods: Vec::new(),
            truncated: false,
            error: None,
        }
    }

    /// Records a sample of `readings` taken at `at_ms` (wall clock, for display) and `now`
    /// (the monotonic clock the rates are computed with); the oldest sample goes if the ring is
    /// full.
    pub(crate) fn record(&mut self, at_ms: u64, now: Instant, readings: Vec<Reading>) {
        let mut truncated = readings.len() > MAX_SERIES;
        let mut silos = Vec::new();
        let mut points = Vec::new();
        let mut types: BTreeMap<String, u64> = BTreeMap::new();
        let mut sinks: BTreeMap<String, (Option<f64>, f64)> = BTreeMap::new();
        let mut methods: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
        let mut previous = HashMap::new();
        for reading in readings.into_iter().take(MAX_SERIES) {
            let why = suspected(&reading);
            let state = if reading.status == "Dead" || why.is_none() {
                reading.status.clone()
            } else {
                "Suspected".to_owned()
            };
            if reading.status != "Dead" {
                for (grain_type, n) in &reading.by_type {
                    *types.entry(grain_type.clone()).or_default() += n;
                }
            }
            let (mut calls_per_sec, mut p99_ms) = (None, None);
            if let Some(Ok(scrape)) = reading.scrape {
                let last = self.previous.get(&reading.silo);
                if let Some((then, before)) = last {
                    let seconds = now.saturating_duration_since(*then).as_secs_f64();
                    if seconds > 0.0 {
                        calls_per_sec = Some(delta(scrape.calls, before.calls) / seconds);
                        p99_ms = quantile_ms(&before.buckets, &scrape.buckets, QUANTILE);
                    }
                }
                for (sink, figures) in &scrape.sinks {
                    let rate = last.and_then(|(then, before)| {
                        let seconds = now.saturating_duration_since(*then).as_secs_f64();
                        let was = before.sinks.get(sink).copied().unwrap_or_default();
                        (seconds > 0.0).then(|| delta(figures.delivered, was.delivered) / seconds)
                    });
                    let entry = sinks.entry(sink.clone()).or_insert((None, 0.0));
                    entry.0 = match (entry.0, rate) {
                        (Some(a), Some(b)) => Some(a + b),
                        (a, b) => a.or(b),
                    };
                    entry.1 = entry.1.max(figures.lag_seconds);
                }
                for (method, (calls, errors)) in &scrape.methods {
                    let row = methods.entry(method.clone()).or_default();
                    row.0 += calls;
                    row.1 += errors;
                }
                previous.insert(reading.silo.clone(), (now, scrape));
            }
            points.push(SiloPoint {
                id: reading.silo.to_string(),
                name: reading.silo.name().to_owned(),
                state: state.clone(),
                calls_per_sec,
                p99_ms,
            });
            silos.push(SiloNow {
                id: reading.silo.to_string(),
                name: reading.silo.name().to_owned(),
                state,
                why,
            });
        }
        truncated |= types.len() > MAX_SERIES || sinks.len() > MAX_SERIES;
        truncated |= methods.len() > MAX_METHODS;
        let sample = Sample {
            at_ms,
            silos: points,
            types: types
                .into_iter()
                .take(MAX_SERIES)
                .map(|(grain_type, activations)| TypePoint {
                    grain_type,
                    activations,
                })
                .collect(),
            sinks: sinks
                .into_iter()
                .take(MAX_SERIES)
                .map(|(sink, (events_per_sec, lag_seconds))| SinkPoint {
                    sink,
                    events_per_sec,
                    lag_seconds,
                })
                .collect(),
        };
        if self.samples.len() == self.capacity {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
        // Only the silos read now: a silo gone from the table is forgotten.
        self.previous = previous;
        self.silos = silos;
        self.methods = methods
            .into_iter()
            .take(MAX_METHODS)
            .map(|((grain_type, method), (calls, errors))| MethodRow {
                grain_type,
                method,
                calls,
                errors,
            })
            .collect();
        self.truncated = truncated;
        self.error = None;
    }

    /// Notes that a sample could not be taken (the ring keeps what it has: the charts show a
    /// gap).
    pub(crate) fn failed(&mut self, why: String) {
        self.error = Some(why);
    }

    /// The samples, oldest first.
    #[cfg(test)]
    pub(crate) fn samples(&self) -> &VecDeque<Sample> {
        &self.samples
    }

    /// The history as `/dashboard/history.json` serves it.
    pub(crate) fn view<'a>(&'a self, cluster: &'a str, now_ms: u64) -> HistoryView<'a> {
        HistoryView {
            cluster,
            now_ms,
            sample_every_ms: u64::try_from(SAMPLE_EVERY.as_millis()).unwrap_or(u64::MAX),
            capacity: self.capacity,
            truncated: self.truncated,
            error: self.error.as_deref(),
            silos: &self.silos,
            methods: &self.methods,
            samples: &self.samples,
        }
    }
}

/// What `/dashboard/history.json` answers.
#[derive(Debug, Serialize)]
pub(crate) struct HistoryView<'a> {
    cluster: &'a str,
    /// The server's clock, milliseconds since the Unix epoch.
    now_ms: u64,
    sample_every_ms: u64,
    /// The most samples kept.
    capacity: usize,
    /// Whether the last sample left silos, types, sinks or methods out (over the bounds).
    truncated: bool,
    /// Why the last sample could not be taken, if it could not.
    error: Option<&'a str>,
    /// The silos as the last sample saw them.
    silos: &'a [SiloNow],
    /// Call and error counts per method, from the last sample.
    methods: &'a [MethodRow],
    /// Oldest first.
    samples: &'a VecDeque<Sample>,
}

/// Why `reading`'s silo is suspected, if it is.
fn suspected(reading: &Reading) -> Option<String> {
    if reading.suspicions {
        return Some("other silos voted it suspected".to_owned());
    }
    match reading.heartbeat_age_ms {
        Some(age) if age > STALE_HEARTBEAT_MS => {
            return Some(format!("no heartbeat for {} s", age / 1_000));
        }
        None if reading.status == "Active" => return Some("no heartbeat yet".to_owned()),
        _ => {}
    }
    match &reading.scrape {
        Some(Err(why)) => Some(format!("its /metrics does not answer: {why}")),
        _ => None,
    }
}

#[allow(
    clippy::cast_precision_loss,
    reason = "counter differences far below 2^52"
)]
fn delta(now: u64, before: u64) -> f64 {
    now.saturating_sub(before) as f64
}

/// The upper bound, in milliseconds, of the bucket holding quantile `q` of the observations
/// made between the cumulative histograms `before` and `now`; none if there were none. An
/// observation over the largest finite bound counts as that bound.
pub(crate) fn quantile_ms(before: &[(f64, u64)], now: &[(f64, u64)], q: f64) -> Option<f64> {
    let count_before = |bound: f64| {
        before
            .iter()
            .find(|(b, _)| b.to_bits() == bound.to_bits())
            .map_or(0, |(_, n)| *n)
    };
    let diffs: Vec<(f64, u64)> = now
        .iter()
        .map(|(bound, n)| (*bound, n.saturating_sub(count_before(*bound))))
        .collect();
    let total = diffs.last()?.1;
    if total == 0 {
        return None;
    }
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "call counts far below 2^52; the rank is positive"
    )]
    let rank = ((total as f64) * q).ceil().max(1.0) as u64;
    let largest_finite = diffs
        .iter()
        .map(|(b, _)| *b)
        .filter(|b| b.is_finite())
        .fold(0.0, f64::max);
    diffs
        .iter()
        .find(|(_, n)| *n >= rank)
        .map(|(bound, _)| bound.min(largest_finite) * 1_000.0)
}

#[cfg(test)]
mod tests;

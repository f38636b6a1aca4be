//! The history's ring and sampling: bounds, rates, the p99 from histogram differences, the
//! suspected marking, sinks and methods summed over silos; and the metrics text parser.

use std::time::{Duration, Instant};

use super::super::scrape::{self, Scrape, SinkFigures};
use super::*;

fn silo(name: &str) -> SiloId {
    SiloId::new(name, 7)
}

fn reading(name: &str, scrape: Option<Result<Scrape, String>>) -> Reading {
    Reading {
        silo: silo(name),
        status: "Active".to_owned(),
        suspicions: false,
        heartbeat_age_ms: Some(500),
        by_type: vec![("player".to_owned(), 2)],
        scrape,
    }
}

fn scrape(calls: u64, buckets: &[(f64, u64)]) -> Scrape {
    Scrape {
        calls,
        buckets: buckets.to_vec(),
        ..Scrape::default()
    }
}

#[test]
fn the_ring_keeps_the_newest_samples_up_to_its_capacity() {
    let mut history = History::with_capacity(3);
    let start = Instant::now();
    for i in 1..=5 {
        history.record(i, start + Duration::from_secs(i), vec![reading("a", None)]);
    }
    let kept: Vec<u64> = history.samples().iter().map(|s| s.at_ms).collect();
    assert_eq!(kept, [3, 4, 5], "the oldest go first");
    assert_eq!(History::default().capacity, KEPT_SAMPLES);
    assert_eq!(
        Duration::from_secs(600),
        SAMPLE_EVERY * u32::try_from(KEPT_SAMPLES).unwrap(),
        "10 minutes"
    );
}

#[test]
fn a_rate_and_a_p99_need_two_reads_of_a_silos_metrics() {
    let mut history = History::default();
    let start = Instant::now();
    let before = scrape(100, &[(0.001, 90), (0.002, 100), (f64::INFINITY, 100)]);
    history.record(1, start, vec![reading("a", Some(Ok(before)))]);
    let first = &history.samples()[0].silos[0];
    assert_eq!(
        (first.calls_per_sec, first.p99_ms),
        (None, None),
        "one read"
    );

    // 200 calls in 2 s; of the 200 timed ones, 60 took ≤ 1 ms, 40 ≤ 2 ms, 100 more: the
    // 198th is over the largest finite bound, shown as that bound.
    let now = scrape(500, &[(0.001, 150), (0.002, 200), (f64::INFINITY, 300)]);
    history.record(
        2,
        start + Duration::from_secs(4),
        vec![reading("a", Some(Ok(now)))],
    );
    let point = &history.samples()[1].silos[0];
    assert_eq!(point.calls_per_sec, Some(100.0), "400 calls in 4 s");
    assert_eq!(point.p99_ms, Some(2.0));
    assert_eq!(point.state, "Active");

    // No call since: zero calls/s and no latency (not a stale one).
    let same = scrape(500, &[(0.001, 150), (0.002, 200), (f64::INFINITY, 300)]);
    history.record(
        3,
        start + Duration::from_secs(6),
        vec![reading("a", Some(Ok(same)))],
    );
    let idle = &history.samples()[2].silos[0];
    assert_eq!((idle.calls_per_sec, idle.p99_ms), (Some(0.0), None));
}

#[test]
fn the_quantile_is_the_bound_of_the_bucket_holding_it() {
    let before = [(0.001, 0), (0.002, 0), (f64::INFINITY, 0)];
    let fast = [(0.001, 199), (0.002, 200), (f64::INFINITY, 200)];
    assert_eq!(
        quantile_ms(&before, &fast, 0.99),
        Some(1.0),
        "198 of 200 ≤ 1 ms"
    );
    let slow = [(0.001, 100), (0.002, 200), (f64::INFINITY, 200)];
    assert_eq!(quantile_ms(&before, &slow, 0.99), Some(2.0));
    assert_eq!(quantile_ms(&before, &before, 0.99), None, "no call");
    assert_eq!(quantile_ms(&before, &[], 0.99), None, "no histogram");
    let one = [(0.001, 0), (0.002, 1), (f64::INFINITY, 1)];
    assert_eq!(
        quantile_ms(&[], &one, 0.99),
        Some(2.0),
        "a silo read for the first time"
    );
}

#[test]
fn a_silo_is_marked_suspected_by_votes_a_stale_heartbeat_or_silent_metrics() {
    let mut history = History::default();
    let voted = Reading {
        suspicions: true,
        ..reading("voted", None)
    };
    let stale = Reading {
        heartbeat_age_ms: Some(STALE_HEARTBEAT_MS + 1),
        ..reading("stale", None)
    };
    let silent = reading("silent", Some(Err("connection refused".to_owned())));
    let dead = Reading {
        status: "Dead".to_owned(),
        heartbeat_age_ms: Some(60_000),
        ..reading("dead", None)
    };
    let fine = reading("fine", Some(Ok(Scrape::default())));
    history.record(1, Instant::now(), vec![voted, stale, silent, dead, fine]);
    let view = &history.silos;
    let state = |name: &str| {
        let silo = view.iter().find(|s| s.name == name).unwrap();
        (silo.state.as_str(), silo.why.clone().unwrap_or_default())
    };
    assert_eq!(state("voted").0, "Suspected");
    assert!(state("voted").1.contains("voted"), "{:?}", state("voted"));
    assert_eq!(state("stale").0, "Suspected");
    assert!(
        state("stale").1.contains("no heartbeat for 10 s"),
        "{:?}",
        state("stale")
    );
    assert_eq!(state("silent").0, "Suspected");
    assert!(
        state("silent").1.contains("connection refused"),
        "{:?}",
        state("silent")
    );
    assert_eq!(state("dead").0, "Dead", "the table's verdict wins");
    assert_eq!(state("fine"), ("Active", String::new()));
    let sample = &history.samples()[0];
    let states: Vec<&str> = sample.silos.iter().map(|s| s.state.as_str()).collect();
    assert_eq!(
        states,
        ["Suspected", "Suspected", "Suspected", "Dead", "Active"]
    );
    // Four live silos of two `player` activations each: the dead one's are not counted.
    assert_eq!(sample.types.len(), 1);
    assert_eq!(sample.types[0].activations, 8);
}

#[test]
fn sinks_and_methods_are_summed_over_the_silos() {
    let figures = |delivered, lag_seconds| SinkFigures {
        delivered,
        lag_seconds,
    };
    let read = |delivered: u64, lag: f64, calls: u64, errors: u64| Scrape {
        sinks: [("nats".to_owned(), figures(delivered, lag))].into(),
        methods: [(("player".to_owned(), "join".to_owned()), (calls, errors))].into(),
        ..Scrape::default()
    };
    let mut history = History::default();
    let start = Instant::now();
    history.record(
        1,
        start,
        vec![
            reading("a", Some(Ok(read(10, 0.0, 5, 1)))),
            reading("b", Some(Ok(read(20, 0.0, 5, 0)))),
        ],
    );
    assert_eq!(history.samples()[0].sinks[0].events_per_sec, None);
    history.record(
        2,
        start + Duration::from_secs(2),
        vec![
            reading("a", Some(Ok(read(30, 0.5, 9, 2)))),
            reading("b", Some(Ok(read(40, 1.5, 7, 0)))),
        ],
    );
    let sink = &history.samples()[1].sinks[0];
    assert_eq!(sink.sink, "nats");
    assert_eq!(sink.events_per_sec, Some(20.0), "(20 + 20) events in 2 s");
    assert!(
        (sink.lag_seconds - 1.5).abs() < f64::EPSILON,
        "the largest lag"
    );
    let method = &history.methods[0];
    assert_eq!(
        (method.grain_type.as_str(), method.method.as_str()),
        ("player", "join")
    );
    assert_eq!((method.calls, method.errors), (16, 2));

    // A silo gone from the table is forgotten: back later, it starts without a rate.
    history.record(3, start + Duration::from_secs(4), vec![]);
    history.record(
        4,
        start + Duration::from_secs(6),
        vec![reading("a", Some(Ok(read(50, 0.0, 9, 2))))],
    );
    assert_eq!(history.samples()[3].sinks[0].events_per_sec, None);
}

#[test]
fn a_sample_holds_at_most_max_series_silos_and_says_so() {
    let mut history = History::default();
    let readings = (0..=MAX_SERIES)
        .map(|i| reading(&format!("s{i}"), None))
        .collect();
    history.record(1, Instant::now(), readings);
    assert_eq!(history.samples()[0].silos.len(), MAX_SERIES);
    assert!(history.truncated);
    let view = history.view("c", 1);
    assert!(view.truncated, "the view says so");
    assert_eq!(view.samples.len(), 1);
}

#[test]
fn the_parser_reads_the_families_the_charts_need() {
    let text = r#"# HELP granary_calls Calls handled, by grain type and method.
# TYPE granary_calls counter
granary_calls_total{grain_type="player",method="join"} 7
granary_calls_total{grain_type="odd \"type\"",method="x"} 3
granary_call_errors_total{grain_type="player",method="join"} 2
granary_call_duration_seconds_bucket{grain_type="player",method="join",le="0.001"} 4
granary_call_duration_seconds_bucket{grain_type="player",method="join",le="+Inf"} 6
granary_call_duration_seconds_bucket{grain_type="odd \"type\"",method="x",le="0.001"} 1
granary_call_duration_seconds_bucket{grain_type="odd \"type\"",method="x",le="+Inf"} 3
granary_call_duration_seconds_count{grain_type="player",method="join"} 6
granary_activations{grain_type="player"} 2
granary_relay_lag_seconds{sink="nats"} 0.25
granary_relay_delivered_total{sink="nats"} 41
not a sample line
granary_calls_total{grain_type="broken" 5
# EOF
"#;
    let read = scrape::parse(text);
    assert_eq!(read.calls, 10);
    assert_eq!(read.buckets, [(0.001, 5), (f64::INFINITY, 9)]);
    assert_eq!(
        read.methods[&("player".to_owned(), "join".to_owned())],
        (7, 2)
    );
    assert_eq!(
        read.methods[&("odd \"type\"".to_owned(), "x".to_owned())],
        (3, 0)
    );
    assert_eq!(
        read.sinks["nats"],
        SinkFigures {
            delivered: 41,
            lag_seconds: 0.25
        }
    );
    assert_eq!(scrape::parse(""), Scrape::default());
}

//! Reading a silo's `/metrics`: the HTTP GET, and the few families of the Prometheus text the
//! dashboard's charts need, summed into one [`Scrape`].

use std::collections::BTreeMap;
use std::time::Duration;

/// How long a silo's `/metrics` has to answer: a silo slower than this is shown as suspected
/// in that sample.
pub(crate) const SCRAPE_TIMEOUT: Duration = Duration::from_millis(1_500);

/// What the dashboard reads of one silo's metrics text.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Scrape {
    /// `granary_calls_total`, summed over the grain types and methods.
    pub(crate) calls: u64,
    /// `granary_call_duration_seconds_bucket`, summed over the grain types and methods:
    /// `(upper bound in seconds, cumulative count)`, by increasing bound, `+Inf` last.
    pub(crate) buckets: Vec<(f64, u64)>,
    /// `(calls, errors)` by `(grain type, method)`: `granary_calls_total` and
    /// `granary_call_errors_total`.
    pub(crate) methods: BTreeMap<(String, String), (u64, u64)>,
    /// `granary_relay_delivered_total` and `granary_relay_lag_seconds` by sink.
    pub(crate) sinks: BTreeMap<String, SinkFigures>,
}

/// One sink's figures in one silo's relay.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct SinkFigures {
    /// Events the sink confirmed (a counter).
    pub(crate) delivered: u64,
    /// The age of the oldest event it has not confirmed, in seconds.
    pub(crate) lag_seconds: f64,
}

/// `GET http://<address>/metrics`: the text, or why there is none.
pub(crate) async fn fetch(address: &str) -> Result<String, String> {
    let url = format!("http://{address}/metrics");
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(SCRAPE_TIMEOUT))
            .build()
            .into();
        let mut response = agent.get(&url).call().map_err(|e| format!("{url}: {e}"))?;
        response
            .body_mut()
            .read_to_string()
            .map_err(|e| format!("{url}: {e}"))
    })
    .await
    .map_err(|e| format!("the scrape of {address} failed: {e}"))?
}

/// The families of `text` the dashboard reads; other lines are skipped, as are malformed ones
/// (a sample is a picture, not an audit: a line this parser does not understand costs that
/// line's figure, not the sample).
pub(crate) fn parse(text: &str) -> Scrape {
    let mut scrape = Scrape::default();
    let mut buckets: BTreeMap<u64, (f64, u64)> = BTreeMap::new();
    for line in text.lines() {
        let Some((name, labels, value)) = sample(line) else {
            continue;
        };
        let label = |key: &str| {
            labels
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let method = || (label("grain_type"), label("method"));
        match name {
            "granary_calls_total" => {
                let n = count(value);
                scrape.calls += n;
                scrape.methods.entry(method()).or_default().0 += n;
            }
            "granary_call_errors_total" => {
                scrape.methods.entry(method()).or_default().1 += count(value)
            }
            "granary_call_duration_seconds_bucket" => {
                let Some(bound) = parse_bound(&label("le")) else {
                    continue;
                };
                // Keyed by the bound's bits: the bounds are positive, so their bits sort as
                // they do.
                buckets.entry(bound.to_bits()).or_insert((bound, 0)).1 += count(value);
            }
            "granary_relay_delivered_total" => {
                scrape.sinks.entry(label("sink")).or_default().delivered = count(value);
            }
            "granary_relay_lag_seconds" => {
                scrape.sinks.entry(label("sink")).or_default().lag_seconds = value.max(0.0);
            }
            _ => {}
        }
    }
    scrape.buckets = buckets.into_values().collect();
    scrape
}

#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "counters are non-negative integers written as numbers"
)]
fn count(value: f64) -> u64 {
    if value.is_finite() && value > 0.0 {
        value as u64
    } else {
        0
    }
}

fn parse_bound(le: &str) -> Option<f64> {
    match le {
        "+Inf" => Some(f64::INFINITY),
        _ => le.parse().ok().filter(|b: &f64| *b >= 0.0),
    }
}

/// A sample line's labels, `(name, value)` in their order.
type Labels = Vec<(String, String)>;

/// One sample line: `name{label="value",…} value [timestamp]`; `None` for comments and
/// malformed lines.
fn sample(line: &str) -> Option<(&str, Labels, f64)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let (name, mut rest) = line.split_at(name_end);
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        rest = inner;
        loop {
            rest = rest.trim_start_matches([',', ' ']);
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let (key, after) = rest.split_once("=\"")?;
            let (value, after) = quoted(after)?;
            labels.push((key.trim().to_owned(), value));
            rest = after;
        }
    }
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some((name, labels, value))
}

/// The label value at the start of `text` (after its opening quote), unescaped, and the text
/// after its closing quote.
fn quoted(text: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, &text[i + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => value.push('\n'),
                other => value.push(other),
            },
            c => value.push(c),
        }
    }
    None
}

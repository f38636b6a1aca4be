//! Medians and the `BENCH` line format.

/// The median of `values` (the mean of the middle two for an even count).
pub(crate) fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => f64::midpoint(v[n / 2 - 1], v[n / 2]),
    }
}

/// One metric's result line.
pub(crate) struct Line<'a> {
    pub(crate) id: &'a str,
    pub(crate) what: &'a str,
    pub(crate) value: f64,
    pub(crate) baseline: f64,
    pub(crate) baseline_name: &'a str,
    pub(crate) unit: &'a str,
    pub(crate) goal: &'a str,
}

impl Line<'_> {
    /// `value / baseline`.
    pub(crate) fn ratio(&self) -> f64 {
        self.value / self.baseline
    }

    /// Prints `BENCH <id> <what> value=… baseline=… ratio=… unit=… baseline_name=… goal=…`.
    pub(crate) fn print(&self) {
        println!("{}", self.format(""));
    }

    /// As [`print`](Self::print), with `extra` (`key=value` words, such as the placement) at
    /// the end.
    pub(crate) fn print_with(&self, extra: &str) {
        println!("{}", self.format(extra));
    }

    fn format(&self, extra: &str) -> String {
        let mut line = format!(
            "BENCH {} {} value={:.1} baseline={:.1} ratio={:.2} unit={} baseline_name={} goal={}",
            self.id,
            self.what,
            self.value,
            self.baseline,
            self.ratio(),
            self.unit,
            self.baseline_name,
            self.goal
        );
        if !extra.is_empty() {
            line.push(' ');
            line.push_str(extra);
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(value: f64, baseline: f64) -> Line<'static> {
        Line {
            id: "P3",
            what: "cross_silo_call_p50",
            value,
            baseline,
            baseline_name: "raw",
            unit: "ns",
            goal: "ratio<=1.3",
        }
    }

    #[test]
    fn median_of_odd_even_and_no_samples() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn the_ratio_is_value_over_baseline() {
        assert_eq!(line(150.0, 100.0).ratio(), 1.5);
        assert_eq!(line(50.0, 200.0).ratio(), 0.25);
    }

    #[test]
    fn a_line_carries_its_figures_and_the_extra_words_last() {
        assert_eq!(
            line(92_000.0, 59_000.0).format("placement=client:0,server:1"),
            "BENCH P3 cross_silo_call_p50 value=92000.0 baseline=59000.0 ratio=1.56 unit=ns \
             baseline_name=raw goal=ratio<=1.3 placement=client:0,server:1"
        );
        assert!(line(1.0, 1.0).format("").ends_with("goal=ratio<=1.3"));
    }
}

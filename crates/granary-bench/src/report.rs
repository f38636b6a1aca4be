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
    /// Prints `BENCH <id> <what> value=… baseline=… ratio=… unit=… baseline_name=… goal=…`.
    pub(crate) fn print(&self) {
        let ratio = self.value / self.baseline;
        println!(
            "BENCH {} {} value={:.1} baseline={:.1} ratio={ratio:.2} unit={} baseline_name={} goal={}",
            self.id, self.what, self.value, self.baseline, self.unit, self.baseline_name, self.goal
        );
    }
}

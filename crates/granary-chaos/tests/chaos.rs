//! The chaos suite, short: `granary-chaos` against three `chaos-silo` processes on the shared
//! Redis, under SIGKILL and SIGSTOP for a minute, under a partition, and through a rolling
//! restart. Each run's summary
//! line is printed (nextest shows it on failure) and must hold no lost, divergent or phantom
//! value.

use std::process::{Command, Stdio};

use serde_json::Value;

/// Runs the driver with `args` and returns its summary.
fn chaos(args: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_granary-chaos"))
        .args(["--silo-bin", env!("CARGO_BIN_EXE_chaos-silo")])
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .expect("granary-chaos runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprintln!("granary-chaos {args:?}: {}\n{stdout}", output.status);
    let line = stdout
        .lines()
        .last()
        .unwrap_or_else(|| panic!("no summary line ({})", output.status));
    let summary: Value = serde_json::from_str(line).expect("the summary is JSON");
    assert_eq!(
        output.status.code(),
        Some(if summary["ok"] == Value::Bool(true) {
            0
        } else {
            1
        }),
        "the exit status says whether there were violations"
    );
    summary
}

fn count(summary: &Value, field: &str) -> u64 {
    summary[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {summary}"))
}

/// What every run must show, whatever its faults: nothing lost, divergent, phantom or
/// duplicated, and every committed value's event delivered once.
fn nothing_lost(summary: &Value) {
    for field in [
        "lost",
        "divergent",
        "phantom",
        "duplicates",
        "events_missing",
        "events_phantom",
        "events_duplicate",
    ] {
        assert_eq!(count(summary, field), 0, "{field}: {summary}");
    }
    assert!(count(summary, "acks") > 0, "the workload ran: {summary}");
}

#[test]
fn a_minute_of_kills_and_stops_loses_nothing() {
    // Restarted at once on their old addresses (the default): the successor's answers to the
    // probes meant for its predecessor get the predecessor declared dead (see docs/chaos.md).
    let summary = chaos(&[
        "--fault",
        "kill,stop",
        "--duration",
        "60",
        "--interval",
        "8",
    ]);
    nothing_lost(&summary);
    let injected = &summary["injected"];
    assert!(
        injected["kill"].as_u64() >= Some(1) && injected["stop"].as_u64() >= Some(1),
        "both faults were injected: {summary}"
    );
    assert_eq!(
        count(&summary, "zombies_not_dead"),
        0,
        "every SIGCONTed silo exited with status 3: {summary}"
    );
}

#[test]
fn a_partitioned_silo_loses_nothing_and_no_healthy_silo_is_declared_dead() {
    let summary = chaos(&[
        "--fault",
        "partition",
        "--duration",
        "30",
        "--interval",
        "8",
    ]);
    nothing_lost(&summary);
    assert!(
        summary["injected"]["partition"].as_u64() >= Some(1),
        "a partition was injected: {summary}"
    );
    // The cut-off silo may be declared dead (the others are a majority); they may not.
    assert_eq!(
        summary["healthy_declared_dead"],
        Value::Array(Vec::new()),
        "{summary}"
    );
}

#[test]
fn a_rolling_restart_loses_nothing_and_fails_no_call_for_good() {
    // Every silo in turn: SIGTERM, exit 0, started again on its address, its ready line
    // awaited before the next. One pass at least (the first after 3 s).
    let summary = chaos(&["--fault", "rolling", "--duration", "20", "--interval", "3"]);
    nothing_lost(&summary);
    assert!(
        summary["injected"]["rolling"].as_u64() >= Some(1),
        "a rolling restart ran: {summary}"
    );
    let exits = summary["graceful_exits"]
        .as_array()
        .unwrap_or_else(|| panic!("graceful_exits in {summary}"));
    assert!(exits.len() >= 3, "every silo was restarted: {summary}");
    assert!(
        exits
            .iter()
            .all(|e| e.as_str().is_some_and(|e| e.ends_with(" exit 0"))),
        "every silo exited with status 0 on SIGTERM: {summary}"
    );
    assert_eq!(count(&summary, "unclean_stops"), 0, "{summary}");
    assert_eq!(
        count(&summary, "non_retryable_failures"),
        0,
        "no call failed with an error it may not retry: {summary}"
    );
}

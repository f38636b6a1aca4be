//! The README's demo command, small: three silos in one process, one killed part-way, and the
//! reconciliation at the end (energy included: every player's refilled by its reminder, no
//! tick applied twice; every player queued by the matchmaker; one forged call refused by the
//! authorization filter).

use std::process::Command;

#[test]
fn the_demo_kills_a_silo_and_still_reconciles() {
    let output = Command::new(env!("CARGO_BIN_EXE_example-player-game"))
        .args(["--matches", "400", "--players", "6", "--concurrency", "16"])
        .output()
        .expect("the demo binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the demo failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("started silo-a, silo-b, silo-c"),
        "{stdout}"
    );
    assert!(
        stdout.contains("*** killing silo-c after 160 matches"),
        "{stdout}"
    );
    let line = |label: &str| {
        stdout
            .lines()
            .find(|l| l.trim_start().starts_with(label))
            .map(|l| {
                l.split_whitespace()
                    .filter_map(|w| w.parse::<u64>().ok())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    assert_eq!(line("MatchEnded events"), [400, 400], "{stdout}");
    assert_eq!(
        line("PlayerDied events"),
        [2000, 2000],
        "5 deaths a match: {stdout}"
    );
    assert_eq!(line("kills in events"), [2000, 2000], "{stdout}");
    assert_eq!(line("winners in events"), [400, 400], "{stdout}");
    assert_eq!(
        line("players still in a match"),
        [0, 0],
        "and 0 duplicates: {stdout}"
    );
    let ticks = line("energy regen ticks");
    assert!(
        ticks.first().is_some_and(|&t| t >= 2400),
        "each of the 2400 players spent energy, and got it back by at least one tick: {stdout}"
    );
    assert_eq!(
        line("players refilled"),
        [2400, 0, 2400],
        "every player full again, no tick applied twice across the kill: {stdout}"
    );
    assert_eq!(
        line("matchmaker queued"),
        [2400, 1],
        "every player queued once through the matchmaker, the one forged call refused: {stdout}"
    );
    assert!(
        stdout.contains("OK: nothing lost, nothing duplicated"),
        "{stdout}"
    );
}

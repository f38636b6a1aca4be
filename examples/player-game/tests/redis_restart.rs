//! The demo on Redis: three silo processes play (one is SIGKILLed part-way), events go through
//! the relays to Redis Streams, and a second run starts new silo processes that reload every
//! player and reconcile their state against the events again.

use std::process::Command;

use granary_testkit::redis_server::{shared_redis_url, unique_name};

fn demo(url: &str, cluster: &str, extra: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_example-player-game"))
        .args(["--matches", "60", "--players", "4", "--concurrency", "8"])
        .args(["--redis", url, "--cluster", cluster])
        .args(extra)
        .output()
        .expect("the demo binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "demo {extra:?} failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test]
async fn a_restarted_process_finds_every_player_as_the_last_one_left_it() {
    let url = shared_redis_url().await;
    let cluster = unique_name("demo");
    let played = demo(&url, &cluster, &[]);
    assert!(played.contains("3 silo processes"), "{played}");
    assert!(played.contains("*** killing silo-c"), "{played}");
    assert!(played.contains("OK: nothing lost"), "{played}");
    let verified = demo(&url, &cluster, &["--verify"]);
    assert!(verified.contains("reloading the 60 matches"), "{verified}");
    assert!(
        verified.contains("MatchEnded events         60"),
        "{verified}"
    );
    assert!(verified.contains("OK: nothing lost"), "{verified}");
}

//! The README's cluster by hand: three `silo` processes on Redis, and the `client` front end
//! playing matches through one gateway while the cluster spreads the grains (its players
//! queued by the matchmaker, a forged call refused by the silos' authorization filter).

#[path = "support/silos.rs"]
mod silos;

use silos::SECRET;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_plays_matches_on_three_silo_processes() {
    let silos::Silos {
        redis,
        cluster,
        prefix,
        processes: mut silos,
    } = silos::start("demo", &["a", "b", "c"]).await;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_client"))
        .env("GRANARY_CLUSTER", &cluster)
        .env("GRANARY_SECRET", SECRET)
        .args(["--gateway", &silos[0].addr.to_string(), "--matches", "6"])
        .output()
        .await
        .expect("the client runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "client failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("played 6 matches through the cluster"),
        "{stdout}"
    );
    assert_eq!(stdout.matches(" won").count(), 6, "{stdout}");
    // The client's forged call (one player's session acting as another) went through the
    // gateway to a silo process, whose authorization filter refused it.
    assert!(
        stdout.contains("forged call refused: user c0-p0 may not act as player c0-p1"),
        "{stdout}"
    );
    // The silos' relays put the events in Redis Streams; the analytics service reads them.
    let board = tokio::process::Command::new(env!("CARGO_BIN_EXE_leaderboard"))
        .args(["--redis", &redis, "--count", "6", "--prefix", &prefix])
        .output();
    let board = tokio::time::timeout(std::time::Duration::from_secs(30), board)
        .await
        .expect("the leaderboard read six matches")
        .expect("the leaderboard runs");
    let board_out = String::from_utf8_lossy(&board.stdout);
    assert!(board.status.success(), "{board_out}");
    assert!(
        board_out.contains("leaderboard after 6 matches"),
        "{board_out}"
    );
    assert!(
        board_out.contains("(6 wins recorded)"),
        "each match counted once: {board_out}"
    );
    // A wrong secret is refused at the handshake.
    let refused = tokio::process::Command::new(env!("CARGO_BIN_EXE_client"))
        .env("GRANARY_CLUSTER", &cluster)
        .env("GRANARY_SECRET", "not the cluster's secret at all")
        .args(["--gateway", &silos[1].addr.to_string(), "--matches", "1"])
        .output()
        .await
        .expect("the client runs");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("handshake"), "{stderr}");
    for silo in &silos {
        silo.signal("-TERM");
    }
    for silo in &mut silos {
        assert_eq!(
            silo.exit_code(std::time::Duration::from_secs(20)).await,
            Some(0)
        );
    }
}

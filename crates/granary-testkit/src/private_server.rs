//! What the private servers of the tests (Redis, moto, tansu, NATS) share: a free loopback
//! port, a kill by the `Child`, and the wait until a started server serves.

use std::net::TcpListener;
use std::process::Child;
use std::time::{Duration, Instant};

/// A loopback port that was free a moment ago.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Kills the server `child` runs, if any (SIGKILL), and waits for it to exit.
pub(crate) fn kill(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Waits until `serves()` holds for the server `child` runs (`server` names it in messages),
/// asking every 20 ms.
///
/// # Panics
/// If the server exits first (the message ends with `exit_hint`), or does not serve within
/// `within`.
pub(crate) async fn wait_until_serving(
    child: &mut Child,
    server: &str,
    within: Duration,
    exit_hint: &str,
    mut serves: impl AsyncFnMut() -> bool,
) {
    let deadline = Instant::now() + within;
    while !serves().await {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{server} exited at start ({status}){exit_hint}");
        }
        assert!(
            Instant::now() < deadline,
            "{server} did not serve within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

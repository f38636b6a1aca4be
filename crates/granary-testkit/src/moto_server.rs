//! A private `moto_server` (an SQS-compatible server, PyPI `moto[server]`) of one test, on a
//! free loopback port, that the test may stop and start again.
//!
//! moto keeps everything in memory: a restarted server has no queues and no messages.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::net::TcpStream;

use crate::private_server::{free_port, kill, wait_until_serving};

/// A `moto_server` process, stopped (SIGKILL, by its `Child`) when dropped.
#[derive(Debug)]
pub struct PrivateMoto {
    port: u16,
    child: Option<Child>,
}

impl PrivateMoto {
    /// Starts `moto_server` (or the program `GRANARY_MOTO_SERVER` names) on a free loopback
    /// port and waits until it accepts connections.
    ///
    /// # Panics
    /// If `moto_server` is not installed (the message says `pip install 'moto[server]'`), or
    /// does not accept connections within 30 s.
    pub async fn start() -> Self {
        let mut server = Self {
            port: free_port(),
            child: None,
        };
        server.restart().await;
        server
    }

    /// The endpoint URL, `http://127.0.0.1:<port>`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops the server (SIGKILL) and waits for it to exit; everything it held is gone.
    pub fn stop(&mut self) {
        kill(&mut self.child);
    }

    /// Starts the server again on the same port (empty: moto keeps nothing), after
    /// [`stop`](Self::stop), and waits until it accepts connections.
    ///
    /// # Panics
    /// As [`start`](Self::start).
    pub async fn restart(&mut self) {
        self.stop();
        let program =
            std::env::var("GRANARY_MOTO_SERVER").unwrap_or_else(|_| "moto_server".to_owned());
        let child = Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| {
                panic!(
                    "cannot start `{program}` ({err}): the SQS tests need moto's server, an \
                     SQS-compatible server: `pip install 'moto[server]'` (`./test` does it)"
                )
            });
        let child = self.child.insert(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let server = format!("`{program}` on port {}", self.port);
        wait_until_serving(child, &server, Duration::from_secs(30), "", async || {
            TcpStream::connect(addr).await.is_ok()
        })
        .await;
    }
}

impl Drop for PrivateMoto {
    fn drop(&mut self) {
        self.stop();
    }
}

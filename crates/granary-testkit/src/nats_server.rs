//! A private `nats-server -js` (NATS with JetStream) of one test, on a free loopback port, with
//! its own store directory, that the test may kill and start again.
//!
//! JetStream keeps its streams in the store directory: a restarted server has the streams and
//! messages it had. Tests that need no outage use the shared server instead (127.0.0.1:4222).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::private_server::{free_port, kill, wait_until_serving};
use crate::redis_server::unique_name;

/// How `nats-server` is installed on Debian (`./test` does it once per machine).
pub const INSTALL: &str = "apt-get install nats-server";

/// A `nats-server -js` process, stopped (SIGKILL, by its `Child`) and its store directory
/// removed when dropped.
#[derive(Debug)]
pub struct PrivateNats {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// The TLS arguments, for a server that requires TLS.
    tls: Vec<std::ffi::OsString>,
}

impl PrivateNats {
    /// Starts `nats-server -js` (or the program `GRANARY_NATS_SERVER` names) on a free loopback
    /// port, with a new store directory, and waits until it greets clients.
    ///
    /// # Panics
    /// If `nats-server` is not installed (the message says how to install it), exits at start,
    /// or does not greet a client within 30 s.
    pub async fn start() -> Self {
        Self::start_with(Vec::new()).await
    }

    /// Starts a server as [`start`](Self::start) does that requires TLS (`--tls`), presenting
    /// `server`; with `verify_clients` it also requires client certificates signed by that CA
    /// (`--tlsverify --tlscacert`). Its URL stays `nats://…`: the server says it requires TLS
    /// in its greeting.
    ///
    /// # Panics
    /// As [`start`](Self::start).
    pub async fn start_tls(
        server: &crate::tls::CertFiles,
        verify_clients: Option<&std::path::Path>,
    ) -> Self {
        let mut args: Vec<std::ffi::OsString> = vec![
            "--tls".into(),
            "--tlscert".into(),
            server.cert.clone().into(),
            "--tlskey".into(),
            server.key.clone().into(),
        ];
        if let Some(ca) = verify_clients {
            args.extend(["--tlsverify".into(), "--tlscacert".into(), ca.into()]);
        }
        Self::start_with(args).await
    }

    async fn start_with(tls: Vec<std::ffi::OsString>) -> Self {
        let mut server = Self {
            port: free_port(),
            dir: std::env::temp_dir().join(unique_name("granary-nats")),
            child: None,
            tls,
        };
        server.restart().await;
        server
    }

    /// The server's URL, `nats://127.0.0.1:<port>`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL) and waits for it to exit; its store directory stays.
    pub fn kill(&mut self) {
        kill(&mut self.child);
    }

    /// Starts the server again on the same port and store directory (after
    /// [`kill`](Self::kill)), and waits until it greets clients.
    ///
    /// # Panics
    /// As [`start`](Self::start).
    pub async fn restart(&mut self) {
        self.kill();
        let program =
            std::env::var("GRANARY_NATS_SERVER").unwrap_or_else(|_| "nats-server".to_owned());
        let child = Command::new(&program)
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string()])
            .arg("-sd")
            .arg(&self.dir)
            .args(&self.tls)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| {
                panic!(
                    "cannot start `{program}` ({err}): this test needs its own NATS server with \
                     JetStream: `{INSTALL}` (Debian), or a release from \
                     https://github.com/nats-io/nats-server/releases on the PATH, or \
                     GRANARY_NATS_SERVER naming it; `./test` installs it for you"
                )
            });
        let child = self.child.insert(child);
        let (port, server) = (self.port, format!("`{program}` on port {}", self.port));
        wait_until_serving(child, &server, Duration::from_secs(30), "", async || {
            greets(port).await
        })
        .await;
    }
}

/// Whether the server on `port` sends its `INFO` greeting to a new connection: a listening
/// socket is not yet a server that serves.
async fn greets(port: u16) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        let mut greeting = [0u8; 5];
        stream.read_exact(&mut greeting).await?;
        Ok::<_, std::io::Error>(&greeting == b"INFO ")
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), attempt).await,
        Ok(Ok(true))
    )
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

//! A private `tansu broker` (a Kafka-protocol broker, `cargo install tansu`) of one test or
//! benchmark, on a free loopback port, that the test may kill and start again.
//!
//! Its storage is memory, which keeps nothing (a restarted broker has no topics, records or
//! offsets), except for a broker that requires SASL SCRAM
//! ([`PrivateTansu::start_with_scram_user`]): its users live in a private SQLite file, since
//! tansu's memory storage does not store SCRAM credentials.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::private_server::{free_port, kill, wait_until_serving};
use crate::redis_server::unique_name;

/// How `tansu` is installed (`./test` does it once per machine).
pub const INSTALL: &str = "cargo install tansu --locked --features dynostore,postgres,libsql";

/// The `tansu` binary: `GRANARY_TANSU`, else `tansu` on the `PATH`, else `~/.cargo/bin/tansu`.
///
/// # Panics
/// If there is none; the message says how to install it.
#[must_use]
pub fn tansu_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("GRANARY_TANSU") {
        return PathBuf::from(path);
    }
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("tansu"))
            .find(|candidate| candidate.is_file())
    });
    let in_cargo = std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".cargo/bin/tansu"))
        .filter(|candidate| candidate.is_file());
    on_path.or(in_cargo).unwrap_or_else(|| {
        panic!(
            "this needs `tansu`, a Kafka-protocol broker: install it with `{INSTALL}` (about 10 \
             minutes; without --locked the postgres feature fails to build, without dynostore \
             the memory:// storage is refused, without libsql the sqlite:// storage that keeps \
             SCRAM users is refused); `./test` does it for you"
        )
    })
}

/// A `tansu broker` process, stopped (SIGKILL, by its `Child`) when dropped.
#[derive(Debug)]
pub struct PrivateTansu {
    port: u16,
    child: Option<Child>,
    /// The address the broker tells clients to use, if not its own.
    advertised: Option<String>,
    /// Whether clients must authenticate (SASL).
    authentication: bool,
    /// The directory of the SQLite storage, removed when dropped; memory storage if none.
    sqlite_dir: Option<PathBuf>,
}

impl PrivateTansu {
    /// Starts a broker on a free loopback port and waits until it answers a Kafka request.
    ///
    /// # Panics
    /// If `tansu` is not installed, exits at start, or does not answer within 30 s.
    pub async fn start() -> Self {
        Self::start_with(None, false).await
    }

    /// Starts a broker as [`start`](Self::start) does that tells its clients to connect to
    /// `advertised` (`host:port`: a TLS-terminating proxy in front of it, say) and, with
    /// `authentication`, requires them to authenticate with SASL (`--authentication`). Its
    /// memory storage keeps no SCRAM users, so no client can authenticate to such a broker:
    /// [`start_with_scram_user`](Self::start_with_scram_user) starts one that has a user.
    ///
    /// # Panics
    /// As [`start`](Self::start).
    pub async fn start_advertising(advertised: &str, authentication: bool) -> Self {
        Self::start_with(Some(advertised.to_owned()), authentication).await
    }

    /// Starts a broker as [`start_advertising`](Self::start_advertising) does that requires
    /// SASL SCRAM, with `user` and `password` valid for both SCRAM-SHA-256 and SCRAM-SHA-512.
    ///
    /// tansu keeps SCRAM users only in a real storage, and refuses every request but the SASL
    /// ones from a client that has not authenticated: so the broker first starts without
    /// `--authentication` on a SQLite file in a private temporary directory (removed when
    /// dropped), `tansu user create` adds the user, and the broker starts again on the same
    /// file requiring SASL. It keeps its topics and records across [`restart`](Self::restart).
    ///
    /// # Panics
    /// As [`start`](Self::start), or if the user cannot be created (a `tansu` built without the
    /// `libsql` feature refuses the SQLite storage: the message says how to install one).
    pub async fn start_with_scram_user(advertised: &str, user: &str, password: &str) -> Self {
        let dir = std::env::temp_dir().join(unique_name("granary-tansu"));
        std::fs::create_dir_all(&dir).expect("the temporary directory is writable");
        let mut broker = Self {
            port: free_port(),
            child: None,
            advertised: Some(advertised.to_owned()),
            authentication: false,
            sqlite_dir: Some(dir),
        };
        broker.restart().await;
        for mechanism in ["scram256", "scram512"] {
            broker.create_user(mechanism, user, password).await;
        }
        broker.authentication = true;
        broker.restart().await;
        broker
    }

    async fn start_with(advertised: Option<String>, authentication: bool) -> Self {
        let mut broker = Self {
            port: free_port(),
            child: None,
            advertised,
            authentication,
            sqlite_dir: None,
        };
        broker.restart().await;
        broker
    }

    /// Creates (or updates) the SCRAM credential of `user` for `mechanism` (`scram256` or
    /// `scram512`) with `tansu user create` (the Kafka `AlterUserScramCredentials` request).
    async fn create_user(&self, mechanism: &str, user: &str, password: &str) {
        let broker = format!("tcp://{}", self.brokers());
        let command = tokio::process::Command::new(tansu_binary())
            .args([
                "user",
                "create",
                "--broker",
                &broker,
                "--mechanism",
                mechanism,
            ])
            .args([user, password])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(Duration::from_secs(30), command)
            .await
            .expect("`tansu user create` finishes within 30 s")
            .unwrap_or_else(|e| panic!("cannot run `tansu user create` ({e})"));
        assert!(
            output.status.success(),
            "`tansu user create --mechanism {mechanism}` failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
    }

    /// The broker's own address (not the advertised one).
    #[must_use]
    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The bootstrap servers, `127.0.0.1:<port>`.
    #[must_use]
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the broker (SIGKILL) and waits for it to exit; everything it held is gone.
    pub fn kill(&mut self) {
        kill(&mut self.child);
    }

    /// Starts the broker (again, on the same port) and waits until it answers an
    /// `ApiVersions` request. With memory storage it starts empty; a broker of
    /// [`start_with_scram_user`](Self::start_with_scram_user) keeps what its SQLite file holds.
    ///
    /// # Panics
    /// As [`start`](Self::start).
    pub async fn restart(&mut self) {
        self.kill();
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let advertised = self
            .advertised
            .as_ref()
            .map_or_else(|| url.clone(), |a| format!("tcp://{a}"));
        let mut command = Command::new(tansu_binary());
        // tansu opens `sqlite://<name>` as `<name>` in its working directory (an absolute path
        // in the URL is made relative to it too).
        let storage = match &self.sqlite_dir {
            Some(dir) => {
                command.current_dir(dir);
                "sqlite://tansu.db"
            }
            None => "memory://tansu/",
        };
        let child = command
            .arg("broker")
            .args([
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &advertised,
            ])
            .args(["--storage-engine", storage])
            .args(self.authentication.then_some("--authentication"))
            .env_remove("CLUSTER_ID")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start tansu ({e}); install it with `{INSTALL}`"));
        let child = self.child.insert(child);
        let (port, server) = (self.port, format!("tansu on port {}", self.port));
        let hint = format!("; is `{INSTALL}` the installed build?");
        wait_until_serving(child, &server, Duration::from_secs(30), &hint, async || {
            answers(port).await
        })
        .await;
    }
}

/// Whether the broker answers an `ApiVersions` (v0) request with its correlation id: a
/// listening socket is not yet a broker that serves.
async fn answers(port: u16) -> bool {
    const CORRELATION: i32 = 0x6772_616e;
    let attempt = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        let client = b"granary-testkit";
        let mut body = Vec::new();
        body.extend_from_slice(&18_i16.to_be_bytes()); // ApiVersions
        body.extend_from_slice(&0_i16.to_be_bytes()); // version 0
        body.extend_from_slice(&CORRELATION.to_be_bytes());
        body.extend_from_slice(&(client.len() as i16).to_be_bytes());
        body.extend_from_slice(client);
        stream.write_all(&(body.len() as i32).to_be_bytes()).await?;
        stream.write_all(&body).await?;
        let size = stream.read_i32().await?;
        let correlation = stream.read_i32().await?;
        Ok::<_, std::io::Error>(size >= 4 && correlation == CORRELATION)
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), attempt).await,
        Ok(Ok(true))
    )
}

impl Drop for PrivateTansu {
    fn drop(&mut self) {
        self.kill();
        if let Some(dir) = &self.sqlite_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

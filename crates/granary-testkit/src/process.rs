//! Silo processes for multi-process tests: start a silo binary built on `granary-node`, wait
//! for its ready line, signal it (SIGKILL, SIGSTOP, SIGCONT), wait for its exit.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// One silo process, killed when dropped.
#[derive(Debug)]
pub struct SiloProcess {
    /// Its `GRANARY_NAME`.
    pub name: String,
    /// Its transport address, from its ready line.
    pub addr: SocketAddr,
    child: Child,
}

impl SiloProcess {
    /// Starts `binary` with the `GRANARY_*` variables in `env` (plus `GRANARY_NAME = name`,
    /// `GRANARY_LISTEN = 127.0.0.1:0`, `GRANARY_PROFILE = test` and `GRANARY_BOOTSTRAP = create`
    /// unless given: a test's cluster is new, and every silo of it may be the first) and waits
    /// for its ready line. A test of what a silo does without a cluster passes
    /// `GRANARY_BOOTSTRAP = join`.
    ///
    /// # Panics
    /// If the process does not start or print its ready line within 20 s.
    pub async fn start(binary: &str, name: &str, env: &[(&str, &str)]) -> Self {
        Self::start_with_args(binary, &[], name, env).await
    }

    /// As [`start`](Self::start), with command-line arguments.
    ///
    /// # Panics
    /// As [`start`](Self::start).
    pub async fn start_with_args(
        binary: &str,
        args: &[&str],
        name: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let mut command = Command::new(binary);
        command.args(args);
        command
            .env("GRANARY_NAME", name)
            .env("GRANARY_LISTEN", "127.0.0.1:0")
            .env("GRANARY_PROFILE", "test")
            .env("GRANARY_BOOTSTRAP", "create");
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{binary} starts: {e}"));
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("silo {name} did not get ready within 20 s"))
            .expect("stdout is readable")
            .unwrap_or_else(|| panic!("silo {name} exited before its ready line"));
        let addr = line
            .rsplit(' ')
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected ready line {line:?}"));
        // Keep draining stdout, so that the process never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self {
            name: name.to_owned(),
            addr,
            child,
        }
    }

    /// Sends `signal` (`-KILL`, `-STOP`, `-CONT`, `-TERM`) to the process.
    ///
    /// # Panics
    /// If the process is gone or `kill` fails.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("the process runs").to_string();
        let status = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// Waits at most `timeout` for the process to exit; returns its exit code.
    ///
    /// # Panics
    /// If it does not exit in time.
    pub async fn exit_code(&mut self, timeout: Duration) -> Option<i32> {
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("silo {} did not exit within {timeout:?}", self.name))
            .expect("wait for the process")
            .code()
    }
}

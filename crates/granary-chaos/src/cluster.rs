//! The silo processes of a run: start (and restart) `chaos-silo`, signal it, send it partition
//! commands on stdin, see whether and how it exited.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::task::JoinHandle;

use crate::error::ChaosError;
use crate::partition::PartitionCommand;

/// How every silo process of a run is started.
#[derive(Debug, Clone)]
pub struct SiloSpec {
    /// The `chaos-silo` binary.
    pub binary: PathBuf,
    /// The `GRANARY_*` variables every silo gets (`GRANARY_NAME` and `GRANARY_LISTEN` are
    /// added per silo).
    pub env: Vec<(String, String)>,
    /// Where each process's stderr goes: `<name>-<incarnation>.log`.
    pub log_dir: PathBuf,
}

/// One running silo process, killed when dropped.
#[derive(Debug)]
pub struct SiloProcess {
    /// Its `GRANARY_NAME`.
    pub name: String,
    /// Its silo id (`name@generation`), from its ready line.
    pub id: String,
    /// Its transport address, from its ready line.
    pub addr: SocketAddr,
    child: Child,
    stdin: Option<ChildStdin>,
    drain: JoinHandle<()>,
}

impl Drop for SiloProcess {
    fn drop(&mut self) {
        self.drain.abort();
    }
}

/// How long a silo process may take to print its ready line.
const READY_WITHIN: Duration = Duration::from_secs(30);

impl SiloProcess {
    /// Starts silo `name` (its `incarnation`-th process) listening on `listen` (a free port
    /// when `None`) and waits for its ready line.
    ///
    /// # Errors
    /// [`ChaosError::SiloStart`] if it cannot be spawned, exits, or is not ready within 30 s.
    pub async fn start(
        spec: &SiloSpec,
        name: &str,
        incarnation: usize,
        listen: Option<SocketAddr>,
    ) -> Result<Self, ChaosError> {
        let failed = |reason: String| ChaosError::SiloStart {
            name: name.to_owned(),
            reason,
        };
        let log = spec.log_dir.join(format!("{name}-{incarnation}.log"));
        let stderr = std::fs::File::create(&log)
            .map_err(|e| failed(format!("cannot create {}: {e}", log.display())))?;
        let mut command = Command::new(&spec.binary);
        command
            .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("GRANARY_NAME", name)
            .env(
                "GRANARY_LISTEN",
                listen.map_or_else(|| "127.0.0.1:0".to_owned(), |a| a.to_string()),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .map_err(|e| failed(format!("cannot run {}: {e}", spec.binary.display())))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        // The ready line, `granary silo <id> ready at <address>` (skipping anything else).
        let ready = async {
            loop {
                match lines.next_line().await {
                    Err(e) => break Err(format!("reading its stdout: {e}")),
                    Ok(None) => {
                        break Err(format!(
                            "it exited before its ready line; see {}",
                            log.display()
                        ));
                    }
                    Ok(Some(line))
                        if line.starts_with("granary silo ") && line.contains(" ready at ") =>
                    {
                        break Ok(line);
                    }
                    Ok(Some(_)) => {}
                }
            }
        };
        let line = match tokio::time::timeout(READY_WITHIN, ready).await {
            Err(_) => return Err(failed(format!("no ready line within {READY_WITHIN:?}"))),
            Ok(result) => result.map_err(failed)?,
        };
        let words: Vec<&str> = line.split_whitespace().collect();
        let (Some(id), Some(addr)) = (
            words.get(2),
            words.last().and_then(|a| a.parse::<SocketAddr>().ok()),
        ) else {
            return Err(failed(format!("unexpected ready line {line:?}")));
        };
        // Keep draining stdout, so that the process never blocks on a full pipe.
        let drain = tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self {
            name: name.to_owned(),
            id: (*id).to_owned(),
            addr,
            stdin: child.stdin.take(),
            child,
            drain,
        })
    }

    /// Sends `signal` (`KILL`, `STOP`, `CONT`) with `kill(1)`.
    ///
    /// # Errors
    /// [`ChaosError::Process`] if the process is gone or `kill` fails.
    pub fn signal(&self, signal: &str) -> Result<(), ChaosError> {
        let what = format!("send SIG{signal} to {}", self.id);
        let pid = self.child.id().ok_or_else(|| ChaosError::Process {
            what: what.clone(),
            source: std::io::Error::other("the process has exited"),
        })?;
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .map_err(|source| ChaosError::Process {
                what: what.clone(),
                source,
            })?;
        if status.success() {
            Ok(())
        } else {
            Err(ChaosError::Process {
                what,
                source: std::io::Error::other(format!("kill exited with {status}")),
            })
        }
    }

    /// Writes `command` to the silo's stdin.
    ///
    /// # Errors
    /// [`ChaosError::Process`] if the silo is gone.
    pub async fn send(&mut self, command: &PartitionCommand) -> Result<(), ChaosError> {
        let what = format!("send {:?} to {}", command.line(), self.id);
        let stdin = self.stdin.as_mut().ok_or_else(|| ChaosError::Process {
            what: what.clone(),
            source: std::io::Error::other("stdin is closed"),
        })?;
        let line = format!("{}\n", command.line());
        let write = async {
            stdin.write_all(line.as_bytes()).await?;
            stdin.flush().await
        };
        write
            .await
            .map_err(|source| ChaosError::Process { what, source })
    }

    /// Waits at most `within` for the process to exit.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        tokio::time::timeout(within, self.child.wait())
            .await
            .ok()
            .and_then(Result::ok)
    }

    /// The exit status, if the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGKILLs the process and waits for it.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }
}

/// An exit status as the summary shows it: the code, or `signal <n>`.
#[must_use]
pub(crate) fn describe(status: Option<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        None => "still running".to_owned(),
        Some(status) => match (status.code(), status.signal()) {
            (Some(code), _) => format!("exit {code}"),
            (None, Some(signal)) => format!("signal {signal}"),
            (None, None) => status.to_string(),
        },
    }
}

//! A headless Chromium driven through chromedriver: the few W3C WebDriver commands the
//! dashboard's browser test needs (open a page, run a script in it, take a screenshot), sent as
//! JSON over HTTP with `ureq`. A WebDriver client crate (fantoccini) would bring hyper and the
//! `webdriver` crate's tree for these five requests.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

/// Chromium's flags that work headless, as root, on a machine without a display or network.
const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1000",
];

/// A browser session: chromedriver (in a process group of its own, with the Chromium it starts)
/// and one session in it. Dropping it kills the process group.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    agent: ureq::Agent,
    profile: PathBuf,
}

/// The path of `program` on `PATH`.
fn which(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session with a fresh profile.
    ///
    /// # Panics
    /// If Chromium or chromedriver is not installed (the message says how to install them), or
    /// if the session does not start within 30 s.
    pub async fn start() -> Self {
        let install = "apt-get install -y chromium chromium-driver (.ci/run installs them)";
        let chromium = which("chromium").unwrap_or_else(|| {
            panic!("chromium is not installed: the dashboard's browser test needs it: {install}")
        });
        let chromedriver = which("chromedriver").unwrap_or_else(|| {
            panic!(
                "chromedriver is not installed: the dashboard's browser test needs it: {install}"
            )
        });
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        let base = format!("http://127.0.0.1:{port}");
        let profile = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "chromium-profile-{}",
            granary_testkit::redis_server::unique_name("dash")
        ));
        std::fs::create_dir_all(&profile).unwrap();
        let mut browser = Self {
            driver,
            base,
            session: String::new(),
            agent,
            profile,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = browser.try_send("GET", "/status", None).await;
            if matches!(&status, Ok(v) if v["ready"] == json!(true)) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver on port {port} is not ready: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut args: Vec<String> = FLAGS.iter().map(|f| (*f).to_owned()).collect();
        args.push(format!("--user-data-dir={}", browser.profile.display()));
        let session = browser
            .send(
                "POST",
                "/session",
                Some(json!({"capabilities": {"alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {"binary": chromium, "args": args},
                }}})),
            )
            .await;
        browser.session = session["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {session}"))
            .to_owned();
        browser
    }

    /// Opens `url` and waits for the page to load.
    pub async fn open(&self, url: &str) {
        self.send(
            "POST",
            &format!("/session/{}/url", self.session),
            Some(json!({ "url": url })),
        )
        .await;
    }

    /// Runs `script` (a function body; `return` gives the result) in the page.
    pub async fn run(&self, script: &str) -> Value {
        self.send(
            "POST",
            &format!("/session/{}/execute/sync", self.session),
            Some(json!({ "script": script, "args": [] })),
        )
        .await
    }

    /// Saves a PNG screenshot of the window to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let png = self
            .send(
                "GET",
                &format!("/session/{}/screenshot", self.session),
                None,
            )
            .await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("a screenshot is base64 text"))
            .expect("a screenshot is base64");
        std::fs::write(path, bytes).unwrap();
    }

    /// Ends the session (chromedriver stops Chromium), then chromedriver (dropped).
    pub async fn close(self) {
        let _ = self
            .try_send("DELETE", &format!("/session/{}", self.session), None)
            .await;
    }

    /// Sends a WebDriver command; returns its `value`.
    ///
    /// # Panics
    /// If the request fails or WebDriver answers an error.
    async fn send(&self, method: &'static str, path: &str, body: Option<Value>) -> Value {
        self.try_send(method, path, body)
            .await
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"))
    }

    async fn try_send(
        &self,
        method: &'static str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let (agent, url) = (self.agent.clone(), format!("{}{path}", self.base));
        tokio::task::spawn_blocking(move || {
            let response = match (method, body) {
                ("POST", Some(body)) => agent.post(&url).send_json(body),
                ("DELETE", _) => agent.delete(&url).call(),
                _ => agent.get(&url).call(),
            };
            let mut response = response.map_err(|e| e.to_string())?;
            let ok = response.status().is_success();
            let reply: Value = response
                .body_mut()
                .with_config()
                .limit(64 << 20)
                .read_json()
                .map_err(|e| e.to_string())?;
            if ok {
                Ok(reply["value"].clone())
            } else {
                Err(reply["value"].to_string())
            }
        })
        .await
        .unwrap()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver and the Chromium it started share its process group: end them all,
        // also when a failed assertion skipped `close`.
        // Beware: procps' `kill -KILL -<pgid>` reads `-<pgid>` as `-1` (every process): the
        // group goes after `--`, the signal in `-s`.
        if let Some(pid) = self.driver.id().filter(|pid| *pid > 1) {
            let _ = std::process::Command::new("kill")
                .args(["-s", "KILL", "--", &format!("-{pid}")])
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

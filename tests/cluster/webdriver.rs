//! A headless Chromium for the dashboard's browser test: a `fantoccini` WebDriver session in a
//! chromedriver of its own. WebDriver (the session, pages, scripts, elements, waits,
//! screenshots) is fantoccini's; this module only finds Chromium and chromedriver, starts
//! chromedriver on a free loopback port with the Chromium flags that work here, and stops it.

use std::ops::Deref;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use fantoccini::error::NewSessionError;
use fantoccini::wd::Capabilities;
use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;
use tokio::process::{Child, Command};
use tokio::runtime::{Handle, RuntimeFlavor};

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

/// How long chromedriver has to answer, and to end the session.
const PATIENCE: Duration = Duration::from_secs(30);

/// A WebDriver session in a headless Chromium, and the chromedriver serving it. It derefs to
/// the session's [`Client`].
///
/// [`close`](Self::close) ends the session (chromedriver then quits Chromium) and stops
/// chromedriver. Dropping it without closing (a failed assertion) does the same: killing
/// chromedriver alone would leave its Chromium running.
pub struct Browser {
    /// `None` once closed.
    client: Option<Client>,
    driver: Child,
    /// Chromium's profile: empty at the start, removed at the end.
    profile: PathBuf,
}

/// The path of `program` on `PATH`.
fn which(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}

impl Browser {
    /// Starts chromedriver and a session in a headless Chromium with a fresh profile.
    ///
    /// # Panics
    /// If Chromium or chromedriver is not installed (the message says how to install them), if
    /// chromedriver does not answer within 30 s, or if it cannot start Chromium.
    pub async fn start() -> Self {
        let install = "apt-get install -y chromium chromium-driver (./test installs them)";
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
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        let profile = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "chromium-profile-{}",
            granary_testkit::redis_server::unique_name("dash")
        ));
        std::fs::create_dir_all(&profile).unwrap();
        // From here on, a panic drops `browser`, which stops chromedriver.
        let mut browser = Self {
            client: None,
            driver,
            profile,
        };

        let mut args: Vec<String> = FLAGS.iter().map(|f| (*f).to_owned()).collect();
        args.push(format!("--user-data-dir={}", browser.profile.display()));
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
        });
        let capabilities: Capabilities = serde_json::from_value(capabilities).unwrap();
        let mut builder = ClientBuilder::new(HttpConnector::new());
        builder.capabilities(capabilities);
        let url = format!("http://127.0.0.1:{port}");

        // chromedriver answers once it listens: until then, connecting is refused (and nothing
        // was sent, so trying again starts no second Chromium).
        let deadline = Instant::now() + PATIENCE;
        let client = loop {
            match builder.connect(&url).await {
                Ok(client) => break client,
                Err(NewSessionError::FailedC(refused)) if refused.is_connect() => {
                    if let Some(status) = browser.driver.try_wait().unwrap() {
                        panic!("chromedriver on port {port} exited: {status}");
                    }
                    assert!(
                        Instant::now() < deadline,
                        "chromedriver on port {port} does not answer after {PATIENCE:?}: {refused}"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(err) => {
                    panic!("chromedriver on port {port} started no Chromium session: {err}")
                }
            }
        };
        browser.client = Some(client);
        browser
    }

    /// Ends the session (chromedriver quits Chromium), then stops chromedriver.
    ///
    /// # Panics
    /// If chromedriver does not end the session.
    pub async fn close(mut self) {
        if let Some(client) = self.client.take() {
            tokio::time::timeout(PATIENCE, client.close())
                .await
                .expect("chromedriver ends the session in time")
                .expect("chromedriver ends the session");
        }
        self.driver.kill().await.expect("chromedriver stops");
    }
}

impl Deref for Browser {
    type Target = Client;

    fn deref(&self) -> &Client {
        self.client
            .as_ref()
            .expect("the session is open until `close`")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Not closed (a test failed): end the session first, for chromedriver to quit Chromium,
        // which outlives a killed chromedriver. The session's connection is a task of the test's
        // runtime: this waits for it on a runtime with worker threads of its own, the tests'.
        if let Some(client) = self.client.take()
            && let Ok(runtime) = Handle::try_current()
            && runtime.runtime_flavor() == RuntimeFlavor::MultiThread
        {
            tokio::task::block_in_place(|| {
                let _ = runtime.block_on(tokio::time::timeout(PATIENCE, client.close()));
            });
        }
        // chromedriver alone, by its own pid (also done by `kill_on_drop`).
        let _ = self.driver.start_kill();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

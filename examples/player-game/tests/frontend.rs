//! The WebSocket front end (`player-game-frontend`, run in this process) over silo processes
//! of the example on the real Redis: two headless Chromium pages play a match against each
//! other on a 2-silo cluster; and, with a raw WebSocket client, the bad input it contains (a
//! frame that does not parse, a browser that stops reading) and a page that reconnects.
#![allow(clippy::unwrap_used, reason = "test helpers fail loudly")]

#[path = "support/silos.rs"]
mod silos;
#[path = "../../../tests/cluster/webdriver.rs"]
#[allow(
    unreachable_pub,
    reason = "the module is shared with the cluster tests, where it is used as is"
)]
mod webdriver;

use std::net::SocketAddr;
use std::time::Duration;

use actix_http::ws::{Codec, Frame, Message};
use fantoccini::Locator;
use futures::{SinkExt, StreamExt};
use granary::{ClientConfig, ClusterClient};
use granary_testkit::process::SiloProcess;
use player_game_api::{GameRef, MatchPhase, MatchView, MatchWatcherRef};
use player_game_frontend::{Frontend, FrontendConfig};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_util::codec::Framed;

use silos::SECRET;
use webdriver::Browser;

/// How long a test waits for what it expects: generous, the machine is loaded.
const PATIENCE: Duration = Duration::from_secs(60);

/// Silo processes of the example, a cluster client connected through the first, and the
/// front end over it.
struct Cluster {
    silos: Vec<SiloProcess>,
    client: ClusterClient,
    frontend: Frontend,
}

async fn cluster(names: &[&str], config: FrontendConfig) -> Cluster {
    let silos::Silos {
        cluster,
        processes: silos,
        ..
    } = silos::start("frontend", names).await;
    let mut client_config = ClientConfig::new(&cluster, SECRET.as_bytes(), vec![silos[0].addr]);
    client_config.call_timeout = Duration::from_secs(20);
    let client = ClusterClient::connect(client_config).await.unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let frontend = Frontend::start(client.clone(), config, listener).unwrap();
    Cluster {
        silos,
        client,
        frontend,
    }
}

impl Cluster {
    async fn stop(self) {
        self.frontend.stop().await;
        self.client.close().await;
        for silo in &self.silos {
            silo.signal("-TERM");
        }
        for mut silo in self.silos {
            assert_eq!(silo.exit_code(Duration::from_secs(20)).await, Some(0));
        }
    }
}

fn tokens() -> FrontendConfig {
    FrontendConfig::default()
        .token("alice-token", "alice")
        .token("bob-token", "bob")
}

/// Clicks the button `id` on `page`.
async fn click(page: &Browser, id: &str) {
    page.find(Locator::Id(id))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// Attacks from `page` (its opponent).
async fn attack(page: &Browser) {
    click(page, "attack").await;
}

/// Waits until `page` shows an element at `xpath`.
async fn see(page: &Browser, what: &str, xpath: &str) {
    page.wait()
        .at_most(PATIENCE)
        .for_element(Locator::XPath(xpath))
        .await
        .unwrap_or_else(|e| panic!("the page never showed {what}: {e}"));
}

/// Waits until `page`'s log has a line containing `text`.
async fn see_log(page: &Browser, text: &str) {
    see(
        page,
        text,
        &format!("//div[@id='log' and contains(., '{text}')]"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_headless_chromium_pages_play_a_match_through_the_front_end_on_two_silo_processes() {
    let cluster = cluster(&["a", "b"], tokens()).await;
    let url = format!("http://{}/", cluster.frontend.addr());
    let alice = Browser::start().await;
    let bob = Browser::start().await;
    for (page, token, name) in [(&alice, "alice-token", "alice"), (&bob, "bob-token", "bob")] {
        page.goto(&url).await.unwrap();
        see(
            page,
            "that it is online",
            "//span[@id='connection' and .='online']",
        )
        .await;
        page.find(Locator::Id("token"))
            .await
            .unwrap()
            .send_keys(token)
            .await
            .unwrap();
        click(page, "login").await;
        see(
            page,
            "the player logged in",
            &format!("//span[@id='me' and @data-player='{name}']"),
        )
        .await;
    }
    click(&alice, "queue").await;
    see(&alice, "the lobby", "//span[@id='phase' and .='Lobby']").await;
    click(&bob, "queue").await;
    // Bob's queueing filled and started the match: alice's page is told by the game grain.
    for page in [&alice, &bob] {
        see(
            page,
            "the match running",
            "//span[@id='phase' and .='Running']",
        )
        .await;
    }
    // Each action is pushed to both pages: 35 damage a hit, 100 health.
    for (attacker, line) in [
        (&alice, "alice hit bob: 65 health left"),
        (&bob, "bob hit alice: 65 health left"),
        (&alice, "alice hit bob: 30 health left"),
        (&alice, "the match ended: alice won"),
    ] {
        attack(attacker).await;
        for page in [&alice, &bob] {
            see_log(page, line).await;
        }
    }
    for page in [&alice, &bob] {
        see(
            page,
            "the winner",
            "//p[@id='winner' and .='Winner: alice']",
        )
        .await;
    }
    // The game grain agrees.
    let game: i64 = alice
        .find(Locator::Id("game"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .parse()
        .unwrap();
    let info = cluster.client.grain::<GameRef>(game).info().await.unwrap();
    assert_eq!(info.phase, MatchPhase::Ended);
    assert_eq!(info.result.and_then(|r| r.winner).as_deref(), Some("alice"));
    alice.close().await;
    bob.close().await;
    cluster.stop().await;
}

/// A minimal WebSocket client (actix-http's codec in client mode), for what a browser cannot
/// be made to do: send a frame that is not JSON, or stop reading.
struct Socket(Framed<TcpStream, Codec>);

impl Socket {
    /// Connects to `addr`'s `/ws`; `receive_buffer` shrinks the socket's receive buffer (a
    /// browser that reads slowly fills it sooner).
    async fn connect(addr: SocketAddr, receive_buffer: Option<u32>) -> Self {
        let socket = TcpSocket::new_v4().unwrap();
        if let Some(size) = receive_buffer {
            socket.set_recv_buffer_size(size).unwrap();
        }
        let mut stream = socket.connect(addr).await.unwrap();
        let request = format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        // The response head, a byte at a time: what follows it is the socket's.
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(stream.read_u8().await.unwrap());
        }
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        Self(Framed::new(
            stream,
            Codec::new().client_mode().max_size(1 << 20),
        ))
    }

    async fn send_text(&mut self, text: &str) {
        self.0
            .send(Message::Text(text.to_owned().into()))
            .await
            .unwrap();
    }

    async fn send(&mut self, message: Value) {
        self.send_text(&message.to_string()).await;
    }

    /// The next text frame as JSON; `None` when the server closed the socket.
    async fn recv(&mut self) -> Option<Value> {
        loop {
            let frame = tokio::time::timeout(PATIENCE, self.0.next())
                .await
                .expect("a frame in time");
            match frame {
                Some(Ok(Frame::Text(text))) => return Some(serde_json::from_slice(&text).unwrap()),
                Some(Ok(Frame::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => {}
            }
        }
    }

    /// The next text frame, which must be of `kind`.
    async fn expect(&mut self, kind: &str) -> Value {
        let reply = self.recv().await.expect("the socket stays open");
        assert_eq!(reply["type"], kind, "{reply}");
        reply
    }

    /// The next text frame, which must be an error saying `what`.
    async fn expect_error(&mut self, what: &str) {
        let error = self.expect("error").await;
        let message = error["message"].as_str().unwrap_or_default();
        assert!(message.contains(what), "{error}");
    }

    /// Reads updates until one whose last line contains `text`.
    async fn see(&mut self, text: &str) -> Value {
        loop {
            let reply = self.expect("update").await;
            if reply["view"]["last"].as_str().unwrap_or("").contains(text) {
                return reply;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_error_frames_and_a_page_that_reconnects_is_subscribed_again() {
    let cluster = cluster(&["a"], tokens()).await;
    let addr = cluster.frontend.addr();
    let mut alice = Socket::connect(addr, None).await;
    alice.send_text("this is not JSON").await;
    alice.expect_error("cannot read the message").await;
    alice.send(json!({"type": "dance"})).await;
    alice.expect_error("unknown variant `dance`").await;
    alice.send(json!({"type": "queue"})).await;
    alice.expect_error("log in first").await;
    alice
        .send(json!({"type": "login", "token": "stolen"}))
        .await;
    alice.expect_error("unknown token").await;
    // After all that, the socket still works.
    alice
        .send(json!({"type": "login", "token": "alice-token"}))
        .await;
    assert_eq!(alice.expect("welcome").await["player"], "alice");
    alice.send(json!({"type": "queue"})).await;
    let lobby = alice.expect("update").await;
    assert_eq!(lobby["view"]["phase"], "Lobby");
    let mut bob = Socket::connect(addr, None).await;
    bob.send(json!({"type": "login", "token": "bob-token"}))
        .await;
    bob.expect("welcome").await;
    bob.send(json!({"type": "queue"})).await;
    assert_eq!(bob.expect("update").await["view"]["phase"], "Running");
    alice.see("the match started").await;
    // No opponent to name: an attack on someone outside the match is refused by the grain.
    alice
        .send(json!({"type": "attack", "target": "mallory"}))
        .await;
    alice.expect_error("cannot attack").await;

    // Alice's page goes away and comes back: it logs in again and is subscribed again.
    drop(alice);
    let mut alice = Socket::connect(addr, None).await;
    alice
        .send(json!({"type": "login", "token": "alice-token"}))
        .await;
    alice.expect("welcome").await;
    assert_eq!(alice.expect("update").await["view"]["phase"], "Running");
    bob.send(json!({"type": "attack"})).await;
    let hit = alice.see("bob hit alice: 65 health left").await;
    assert_eq!(hit["view"]["health"], json!([["alice", 65], ["bob", 100]]));
    bob.see("bob hit alice").await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_that_stops_reading_is_disconnected_and_holds_no_grain() {
    let mut config = tokens();
    config.outbox = 4;
    let cluster = cluster(&["a"], config).await;
    let addr = cluster.frontend.addr();
    let mut bob = Socket::connect(addr, None).await;
    bob.send(json!({"type": "login", "token": "bob-token"}))
        .await;
    bob.expect("welcome").await;
    bob.send(json!({"type": "queue"})).await;
    let game = bob.expect("update").await["view"]["game"].as_i64().unwrap();
    // Alice's browser joins the match, then stops reading (a small receive buffer fills
    // first).
    let mut alice = Socket::connect(addr, Some(4096)).await;
    alice
        .send(json!({"type": "login", "token": "alice-token"}))
        .await;
    alice.expect("welcome").await;
    alice.send(json!({"type": "queue"})).await;
    assert_eq!(alice.expect("update").await["view"]["phase"], "Running");
    bob.see("the match started").await;
    // Push large views to alice's session observer, as her match would, until the front end
    // gives up on her: the socket's buffers fill, then her outgoing queue.
    let screen: MatchWatcherRef = cluster.frontend.screen("alice").expect("alice's session");
    let mut disconnects = cluster.frontend.slow_disconnects();
    let filler = MatchView {
        game,
        seq: u64::MAX,
        phase: MatchPhase::Running,
        players: vec!["alice".into(), "bob".into()],
        alive: vec!["alice".into(), "bob".into()],
        health: Vec::new(),
        last: "x".repeat(16 * 1024),
        result: None,
    };
    // 1,400 pushes taken by the gateway are enough, whatever the front end has processed so
    // far: its session object's queue takes 1,024 (more are dropped only while it holds that
    // many), and 260 of these 16 KiB views already overflow a socket's buffers and the outbox.
    // The front end may still be working through them when the loop ends (a loaded machine):
    // the disconnect is awaited below, not raced.
    let (mut pushed, mut taken) = (0, 0);
    while *disconnects.borrow() == 0 && taken < 1_400 {
        assert!(
            pushed < 100_000,
            "the gateway took {taken} of {pushed} pushes"
        );
        // One-way: returns once queued; a full queue on the way is refused, not waited on.
        if screen.on_update(filler.clone()).await.is_ok() {
            taken += 1;
        }
        pushed += 1;
    }
    tokio::time::timeout(PATIENCE, disconnects.wait_for(|n| *n == 1))
        .await
        .expect("alice is disconnected")
        .unwrap();
    // The match goes on without waiting for her: bob hits her, and sees it pushed.
    bob.send(json!({"type": "attack"})).await;
    bob.see("bob hit alice: 65 health left").await;
    // Alice reads at last: what was buffered, then the end of the socket; far fewer frames
    // than were pushed.
    let mut read = 0;
    while alice.recv().await.is_some() {
        read += 1;
    }
    assert!(read < pushed, "read {read} of {pushed}");
    assert!(cluster.frontend.screen("alice").is_none());
    cluster.stop().await;
}

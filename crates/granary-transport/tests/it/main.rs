//! Tests of the transport over real loopback TCP: requests both ways, the handshake refusing
//! strangers, bad frames closing one link only, cancellation, reconnection and size limits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use granary_core::SiloId;
use granary_transport::{Bytes, Handler, Transport, TransportConfig, TransportError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

/// Echoes requests (prefixed with its silo name), counts everything it was handed, parks
/// requests whose body is `b"park"` until they are cancelled, and answers those starting with
/// `b"later"` only after yielding once (not at the reader's first poll).
#[derive(Default)]
struct Echo {
    name: String,
    seen: AtomicUsize,
    dropped: Arc<Notify>,
    one_way: Arc<Notify>,
    huge_answer: bool,
}

struct DropSignal(Arc<Notify>);
impl Drop for DropSignal {
    fn drop(&mut self) {
        self.0.notify_one();
    }
}

impl Handler for Echo {
    fn request(
        &self,
        _from: &SiloId,
        body: Bytes,
        _timeout: Duration,
    ) -> BoxFuture<'static, Vec<u8>> {
        self.seen.fetch_add(1, Ordering::SeqCst);
        let name = self.name.clone();
        let dropped = DropSignal(self.dropped.clone());
        let huge = self.huge_answer;
        Box::pin(async move {
            if body.as_ref() == b"park" {
                std::future::pending::<()>().await;
            }
            if body.starts_with(b"later") {
                // Not ready when the reader first polls it: answered from a task of its own.
                tokio::task::yield_now().await;
            }
            drop(dropped);
            if huge {
                return vec![0; 10_000];
            }
            let mut answer = name.into_bytes();
            answer.push(b':');
            answer.extend_from_slice(&body);
            answer
        })
    }

    fn one_way(&self, _from: &SiloId, _body: Bytes) {
        self.seen.fetch_add(1, Ordering::SeqCst);
        self.one_way.notify_one();
    }
}

fn config(name: &str, secret: &[u8]) -> TransportConfig {
    TransportConfig::new("it", secret.to_vec(), SiloId::new(name, 1))
}

async fn start(name: &str, secret: &[u8]) -> (Transport, Arc<Echo>) {
    start_with(config(name, secret), false).await
}

async fn start_with(config: TransportConfig, huge_answer: bool) -> (Transport, Arc<Echo>) {
    let echo = Arc::new(Echo {
        name: config.silo.name().to_owned(),
        huge_answer,
        ..Echo::default()
    });
    let transport = Transport::bind(
        config,
        "127.0.0.1:0".parse().expect("an address"),
        echo.clone(),
    )
    .await
    .expect("bind");
    (transport, echo)
}

const T: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_travel_both_ways_and_many_share_a_link() {
    let (a, _) = start("a", SECRET).await;
    let (b, b_echo) = start("b", SECRET).await;
    assert_eq!(
        a.request(b.local_addr(), b"hi".to_vec(), T).await.unwrap(),
        &b"b:hi"[..]
    );
    assert_eq!(
        b.request(a.local_addr(), b"yo".to_vec(), T).await.unwrap(),
        &b"a:yo"[..]
    );
    assert_eq!(
        a.peer_id(b.local_addr()).await.unwrap(),
        SiloId::new("b", 1)
    );
    let calls: Vec<_> = (0..2_000)
        .map(|i| {
            let a = a.clone();
            let addr = b.local_addr();
            tokio::spawn(async move { a.request(addr, format!("{i}").into_bytes(), T).await })
        })
        .collect();
    for (i, call) in calls.into_iter().enumerate() {
        assert_eq!(call.await.unwrap().unwrap(), format!("b:{i}").into_bytes());
    }
    assert_eq!(b_echo.seen.load(Ordering::SeqCst), 2_001);
    a.send(b.local_addr(), b"note".to_vec()).await.unwrap();
    b_echo.one_way.notified().await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_to_a_named_silo_reach_only_that_silo() {
    let (a, _) = start("a", SECRET).await;
    let (b, b_echo) = start("b", SECRET).await;
    let (addr, b_id) = (b.local_addr(), SiloId::new("b", 1));
    assert_eq!(
        a.request_to(&b_id, addr, b"hi".to_vec(), T).await.unwrap(),
        &b"b:hi"[..]
    );
    a.send_to(&b_id, addr, b"note".to_vec(), T).await.unwrap();
    b_echo.one_way.notified().await;
    // Another generation of `b` (a restarted process) is asked for: nothing is sent.
    let gone = SiloId::new("b", 0);
    let err = a
        .request_to(&gone, addr, b"hi".to_vec(), T)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        TransportError::OtherSilo {
            addr: addr.to_string(),
            silo: b_id.clone()
        }
    );
    let err = a
        .send_to(&gone, addr, b"note".to_vec(), T)
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::OtherSilo { silo, .. } if silo == b_id));
    assert_eq!(
        b_echo.seen.load(Ordering::SeqCst),
        2,
        "only the two sent to b"
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_without_the_secret_or_of_another_cluster_is_refused_before_any_dispatch() {
    let (b, b_echo) = start("b", SECRET).await;
    let (stranger, _) = start("stranger", b"not the secret, not at all, no").await;
    let err = stranger
        .request(b.local_addr(), b"let me in".to_vec(), T)
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::Handshake { .. }), "{err}");
    let mut other = config("other", SECRET);
    other.cluster = "another-cluster".into();
    let (other, _) = start_with(other, false).await;
    let err = other
        .request(b.local_addr(), b"hi".to_vec(), T)
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::Handshake { .. }), "{err}");
    assert_eq!(
        b_echo.seen.load(Ordering::SeqCst),
        0,
        "nothing was dispatched"
    );
    // The listener itself is unharmed.
    let (a, _) = start("a", SECRET).await;
    assert_eq!(
        a.request(b.local_addr(), b"ok".to_vec(), T).await.unwrap(),
        &b"b:ok"[..]
    );
}

/// Waits until the server closes `stream` (read returns 0 or an error).
async fn closed_by_peer(stream: &mut TcpStream) {
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(T, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server kept the connection open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bytes_before_the_handshake_close_that_connection_only() {
    let (b, b_echo) = start("b", SECRET).await;
    let (a, _) = start("a", SECRET).await;
    assert_eq!(
        a.request(b.local_addr(), b"1".to_vec(), T).await.unwrap(),
        &b"b:1"[..]
    );
    // A length prefix of 4 GiB: refused from the header, nothing allocated.
    let mut huge = TcpStream::connect(b.local_addr()).await.unwrap();
    huge.write_all(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3])
        .await
        .unwrap();
    closed_by_peer(&mut huge).await;
    // Garbage that is a well-formed frame of no known type.
    let mut garbage = TcpStream::connect(b.local_addr()).await.unwrap();
    garbage
        .write_all(&[0, 0, 0, 4, 0xde, 0xad, 0xbe, 0xef])
        .await
        .unwrap();
    closed_by_peer(&mut garbage).await;
    // An HTTP client, say.
    let mut http = TcpStream::connect(b.local_addr()).await.unwrap();
    http.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    closed_by_peer(&mut http).await;
    assert_eq!(b_echo.seen.load(Ordering::SeqCst), 1);
    assert_eq!(
        a.request(b.local_addr(), b"2".to_vec(), T).await.unwrap(),
        &b"b:2"[..],
        "the good link lives on"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_frames_after_the_handshake_close_that_link_only() {
    let (b, b_echo) = start("b", SECRET).await;
    let (a, _) = start("a", SECRET).await;
    assert_eq!(
        a.request(b.local_addr(), b"1".to_vec(), T).await.unwrap(),
        &b"b:1"[..]
    );
    let rogue = config("rogue", SECRET);
    for bad in [
        vec![0xc1, 0xff, 0x00, 0x13, 0x37], // not a frame
        vec![0u8; granary_core::codec::MAX_MESSAGE_BYTES + 64 * 1024], // over the frame limit
    ] {
        let mut wire = granary_transport::__private::handshaken(&rogue, b.local_addr())
            .await
            .expect("the rogue holds the secret");
        let _ = granary_transport::__private::send_raw(&mut wire, bad).await;
        let end =
            tokio::time::timeout(T, async { while let Some(Ok(_)) = wire.next().await {} }).await;
        assert!(end.is_ok(), "the link was closed");
    }
    assert_eq!(
        b_echo.seen.load(Ordering::SeqCst),
        1,
        "no bad frame was dispatched"
    );
    assert_eq!(
        a.request(b.local_addr(), b"2".to_vec(), T).await.unwrap(),
        &b"b:2"[..]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_caller_gave_up_is_cancelled_at_the_peer() {
    let (b, b_echo) = start("b", SECRET).await;
    let (a, _) = start("a", SECRET).await;
    let err = a
        .request(b.local_addr(), b"park".to_vec(), Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::Timeout { .. }), "{err}");
    // The handler's future is dropped: by the Cancel frame, or at the deadline it was given.
    tokio::time::timeout(T, b_echo.dropped.notified())
        .await
        .expect("the parked request was dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_peer_is_reached_again_after_the_backoff() {
    let (a, _) = start("a", SECRET).await;
    let (b, _) = start("b", SECRET).await;
    let addr: SocketAddr = b.local_addr();
    assert_eq!(
        a.request(addr, b"1".to_vec(), T).await.unwrap(),
        &b"b:1"[..]
    );
    b.shutdown().await;
    let err = a.request(addr, b"2".to_vec(), T).await.unwrap_err();
    assert!(
        matches!(
            err,
            TransportError::ConnectionLost { .. } | TransportError::Unreachable { .. }
        ),
        "{err}"
    );
    // The restarted silo, on the old port.
    let echo = Arc::new(Echo {
        name: "b2".into(),
        ..Echo::default()
    });
    let b2 = Transport::bind(config("b2", SECRET), addr, echo)
        .await
        .expect("rebind");
    let answer = tokio::time::timeout(T, async {
        loop {
            match a.request(addr, b"3".to_vec(), T).await {
                Ok(answer) => return answer,
                // Failing fast during the backoff.
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await
    .expect("reconnected within the backoff");
    assert_eq!(answer, &b"b2:3"[..]);
    b2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_over_the_limit_fail_without_breaking_the_link() {
    let mut small = config("b", SECRET);
    small.frame_limit = 4_096;
    let (b, _) = start_with(small, true).await;
    let mut small_a = config("a", SECRET);
    small_a.frame_limit = 4_096;
    let (a, _) = start_with(small_a, false).await;
    let err = a
        .request(b.local_addr(), vec![1; 8_192], T)
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::TooLarge { .. }), "{err}");
    // b's answer (10 kB) is over its limit: the caller learns at once.
    let err = a
        .request(b.local_addr(), b"x".to_vec(), T)
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::Refused { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_silo_loses_its_links_both_ways_and_cannot_handshake_again() {
    let (a, _) = start("a", SECRET).await;
    let (b, _) = start("b", SECRET).await;
    // Links both ways: a dialed b, b dialed a.
    assert_eq!(
        a.request(b.local_addr(), b"1".to_vec(), T).await.unwrap(),
        &b"b:1"[..]
    );
    assert_eq!(
        b.request(a.local_addr(), b"2".to_vec(), T).await.unwrap(),
        &b"a:2"[..]
    );
    // A request of b's in flight on the link b dialed to a (a's accepted link).
    let parked = {
        let b = b.clone();
        let addr = a.local_addr();
        tokio::spawn(async move { b.request(addr, b"park".to_vec(), T * 12).await })
    };
    a.refuse(&SiloId::new("b", 1));
    // In flight on the closed link, or not yet sent and refused at the new handshake: it
    // fails long before its deadline either way.
    let lost = tokio::time::timeout(T, parked)
        .await
        .expect("the parked request failed before its deadline")
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(
            lost,
            TransportError::ConnectionLost { .. } | TransportError::Handshake { .. }
        ),
        "{lost}"
    );
    // a dials b no more, and b's new links to a are refused at the handshake.
    let err = a
        .request(b.local_addr(), b"3".to_vec(), T)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            TransportError::Handshake { .. } | TransportError::ConnectionLost { .. }
        ),
        "{err}"
    );
    let err = tokio::time::timeout(T, async {
        loop {
            match b.request(a.local_addr(), b"4".to_vec(), T).await {
                Err(
                    err @ (TransportError::Handshake { .. } | TransportError::Unreachable { .. }),
                ) => return err,
                // The link's close reaching b, then its backoff: b tries again.
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                Ok(answer) => panic!("a refused silo was answered: {answer:?}"),
            }
        }
    })
    .await
    .expect("b's handshake was refused");
    assert!(matches!(err, TransportError::Handshake { .. }), "{err}");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_drops_frames_both_ways_until_healed() {
    let (a, _) = start("a", SECRET).await;
    let (b, _) = start("b", SECRET).await;
    assert_eq!(
        a.request(b.local_addr(), b"1".to_vec(), T).await.unwrap(),
        &b"b:1"[..]
    );
    assert_eq!(
        b.request(a.local_addr(), b"2".to_vec(), T).await.unwrap(),
        &b"a:2"[..]
    );
    // Cut on a's side only: both directions go silent.
    a.faults().cut_silo(&SiloId::new("b", 1));
    let short = Duration::from_millis(100);
    let err = a
        .request(b.local_addr(), b"3".to_vec(), short)
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::Timeout { .. }), "{err}");
    let err = b
        .request(a.local_addr(), b"4".to_vec(), short)
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::Timeout { .. }), "{err}");
    a.faults().heal();
    assert_eq!(
        a.request(b.local_addr(), b"5".to_vec(), T).await.unwrap(),
        &b"b:5"[..]
    );
    assert_eq!(
        b.request(a.local_addr(), b"6".to_vec(), T).await.unwrap(),
        &b"a:6"[..]
    );
    // A cut address fails new dials at once.
    let (c, _) = start("c", SECRET).await;
    a.faults().cut_address(c.local_addr());
    let err = a
        .request(c.local_addr(), b"7".to_vec(), T)
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::Unreachable { .. }), "{err}");
    a.shutdown().await;
    b.shutdown().await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_stuck_in_their_handshake_are_capped_and_the_cluster_still_connects() {
    let mut capped = config("b", SECRET);
    capped.max_pending_handshakes = 2;
    // Long enough that only the cap, not the handshake deadline, can close a connection here.
    capped.handshake_timeout = Duration::from_secs(600);
    let (b, _) = start_with(capped, false).await;
    let (a, _) = start("a", SECRET).await;
    let (c, _) = start("c", SECRET).await;
    assert_eq!(
        a.request(b.local_addr(), b"before".to_vec(), T)
            .await
            .unwrap(),
        &b"b:before"[..]
    );

    // Two connections that never say a word hold both places; the third is closed at once.
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(TcpStream::connect(b.local_addr()).await.unwrap());
    }
    let mut third = TcpStream::connect(b.local_addr()).await.unwrap();
    closed_by_peer(&mut third).await;

    // Authenticated links keep working, and b still connects to other silos.
    assert_eq!(
        a.request(b.local_addr(), b"during".to_vec(), T)
            .await
            .unwrap(),
        &b"b:during"[..]
    );
    assert_eq!(
        b.request(c.local_addr(), b"out".to_vec(), T).await.unwrap(),
        &b"c:out"[..]
    );

    // Once the stuck connections go, a new silo's handshake gets a place again.
    drop(held);
    let answer = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match c.request(b.local_addr(), b"in".to_vec(), T).await {
                Ok(answer) => return answer,
                // Refused while b had not yet noticed the stuck connections closing.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await
    .expect("c connects once the places are free");
    assert_eq!(answer, &b"b:in"[..]);
    for t in [a, b, c] {
        t.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_a_timeout_of_duration_max_is_answered() {
    let (a, _) = start("a", SECRET).await;
    let (b, _) = start("b", SECRET).await;
    // `Instant::now() + Duration::MAX` panicked the caller's task.
    assert_eq!(
        a.request(b.local_addr(), b"forever".to_vec(), Duration::MAX)
            .await
            .unwrap(),
        &b"b:forever"[..]
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_tiny_send_buffer_senders_wait_for_room_and_every_answer_finds_its_caller() {
    let mut tiny = config("b", SECRET);
    tiny.send_queue = 2;
    let (b, b_echo) = start_with(tiny, false).await;
    let mut tiny = config("a", SECRET);
    tiny.send_queue = 2;
    let (a, _) = start_with(tiny, false).await;
    // Answers ready at the reader's first poll and answers from tasks of their own, mixed,
    // many more than the buffer holds, and a large body among them (written in parts).
    let calls: Vec<_> = (0..1_000)
        .map(|i| {
            let a = a.clone();
            let addr = b.local_addr();
            let body = match i % 3 {
                0 => format!("{i}").into_bytes(),
                1 => format!("later{i}").into_bytes(),
                _ => {
                    let mut big = format!("{i}:").into_bytes();
                    big.resize(200_000, b'x');
                    big
                }
            };
            tokio::spawn(async move {
                let answer = a.request(addr, body.clone(), T).await;
                (body, answer)
            })
        })
        .collect();
    for call in calls {
        let (body, answer) = call.await.unwrap();
        let mut expected = b"b:".to_vec();
        expected.extend_from_slice(&body);
        assert_eq!(answer.unwrap(), expected);
    }
    assert_eq!(b_echo.seen.load(Ordering::SeqCst), 1_000);
    a.shutdown().await;
    b.shutdown().await;
}

/// Blocks its runtime's thread in the first one-way message it is handed, until released:
/// a peer that stops reading. Counts the one-way messages.
struct Stall {
    release: std::sync::Mutex<Option<std::sync::mpsc::Receiver<()>>>,
    seen: Arc<AtomicUsize>,
    all: Arc<Notify>,
    expect: Arc<AtomicUsize>,
}

impl Handler for Stall {
    fn request(&self, _: &SiloId, body: Bytes, _: Duration) -> BoxFuture<'static, Vec<u8>> {
        Box::pin(async move { body.to_vec() })
    }

    fn one_way(&self, _: &SiloId, _: Bytes) {
        if let Some(release) = self.release.lock().ok().and_then(|mut r| r.take()) {
            let _ = release.recv();
        }
        let seen = self.seen.fetch_add(1, Ordering::SeqCst) + 1;
        if seen == self.expect.load(Ordering::SeqCst) {
            self.all.notify_one();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_without_waiting_to_a_peer_that_stops_reading_is_refused_at_once_and_nothing_accepted_is_lost()
 {
    let (b, _) = start("b", SECRET).await;
    // `a` runs on a runtime of its own, whose one thread its handler blocks.
    let (release, released) = std::sync::mpsc::channel();
    let seen = Arc::new(AtomicUsize::new(0));
    let all = Arc::new(Notify::new());
    let expect = Arc::new(AtomicUsize::new(usize::MAX));
    let stall = Arc::new(Stall {
        release: std::sync::Mutex::new(Some(released)),
        seen: seen.clone(),
        all: all.clone(),
        expect: expect.clone(),
    });
    let a_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let b_addr = b.local_addr();
    let a = a_runtime
        .spawn(async move {
            let a = Transport::bind(config("a", SECRET), "127.0.0.1:0".parse().unwrap(), stall)
                .await
                .unwrap();
            // `a` dials: `b` holds the link `a` opened.
            a.request(b_addr, b"hi".to_vec(), T).await.unwrap();
            a
        })
        .await
        .unwrap();
    let a_id = SiloId::new("a", 1);
    assert!(b.is_connected(&a_id));

    // 64 KiB frames until one is refused: once 8 wait to be written (the socket's buffers
    // full, or the writer busy), a send is refused at once.
    let frame = vec![7; 64 * 1024];
    let mut accepted = 0;
    let refused = loop {
        match b.try_send_peer(&a_id, &frame[..], 8) {
            Ok(()) => accepted += 1,
            Err(err) => break err,
        }
        assert!(accepted < 100_000, "a peer that reads nothing took 6 GiB");
    };
    assert!(
        matches!(refused, TransportError::Backlogged { waiting: 8, .. }),
        "{refused:?}"
    );
    assert!(
        refused.to_string().contains("does not keep up"),
        "{refused}"
    );
    assert!(accepted >= 8, "accepted {accepted}");
    assert!(b.is_connected(&a_id), "a refusal leaves the link open");

    // The peer reads again: every accepted frame arrives.
    expect.store(accepted, Ordering::SeqCst);
    let arrived = all.notified();
    release.send(()).unwrap();
    if seen.load(Ordering::SeqCst) < accepted {
        tokio::time::timeout(Duration::from_secs(30), arrived)
            .await
            .expect("every accepted frame arrives");
    }
    assert_eq!(seen.load(Ordering::SeqCst), accepted);
    b.shutdown().await;
    a_runtime
        .spawn(async move { a.shutdown().await })
        .await
        .unwrap();
    a_runtime.shutdown_background();
}

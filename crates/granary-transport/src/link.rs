//! [`Link`]: one authenticated connection, carrying requests both ways.
//!
//! A link has a reader task and a writer task. The writer drains the bounded send queue and
//! writes every frame waiting in it before one flush, so that under load many frames share a
//! syscall. A full queue makes senders wait (backpressure). The reader dispatches requests to
//! the handler, matches responses to their requests, and cancels requests whose caller gave up.
//! Any bad frame closes this link only: its requests in flight fail as `ConnectionLost`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use granary_core::{SiloId, codec};
use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{Framed, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::TransportError;
use crate::faults::Faults;
use crate::frame::Frame;
use crate::handshake::frame_name;

/// What a silo does with the requests and messages that arrive.
pub trait Handler: Send + Sync + 'static {
    /// Answers a request from `from`; `timeout` is how long its caller still waits. The future
    /// is dropped if the caller gives up first.
    fn request(
        &self,
        from: &SiloId,
        body: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'static, Vec<u8>>;

    /// Takes a message that expects no answer.
    fn one_way(&self, from: &SiloId, body: Vec<u8>);
}

type Wire = Framed<TcpStream, LengthDelimitedCodec>;

/// Where a response goes: the body, or why the peer could not send it.
type Waiter = oneshot::Sender<Result<Vec<u8>, String>>;

/// Frames a writer takes at most before it flushes.
const COALESCE: usize = 256;

/// An established, authenticated connection to one peer silo.
pub(crate) struct Link {
    peer: SiloId,
    addr: String,
    queue: mpsc::Sender<Bytes>,
    pending: Mutex<HashMap<u64, Waiter>>,
    inflight: Mutex<HashMap<u64, CancellationToken>>,
    next_id: AtomicU64,
    open: AtomicBool,
    closed: CancellationToken,
    frame_limit: usize,
    faults: Faults,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("peer", &self.peer)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Link {
    /// Starts the reader and writer tasks of an authenticated connection.
    pub(crate) fn start(
        wire: Wire,
        peer: SiloId,
        addr: String,
        handler: Arc<dyn Handler>,
        config: &LinkConfig,
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
    ) -> Arc<Self> {
        let mut wire = wire;
        wire.codec_mut().set_max_frame_length(config.frame_limit);
        let (sink, stream) = wire.split();
        let (queue, rx) = mpsc::channel(config.send_queue);
        let link = Arc::new(Self {
            peer,
            addr,
            queue,
            pending: Mutex::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            open: AtomicBool::new(true),
            closed: shutdown.child_token(),
            frame_limit: config.frame_limit,
            faults: config.faults.clone(),
        });
        tracker.spawn(write_loop(sink, rx, link.clone()));
        tracker.spawn(read_loop(stream, link.clone(), handler, tracker.clone()));
        link
    }

    /// The peer silo.
    pub(crate) fn peer(&self) -> &SiloId {
        &self.peer
    }

    /// Whether the link still carries frames.
    pub(crate) fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// Closes the link: its tasks end, requests in flight fail as `ConnectionLost`.
    pub(crate) fn close(&self, why: &str) {
        if self.open.swap(false, Ordering::AcqRel) {
            tracing::debug!(peer = %self.peer, addr = %self.addr, why, "link closed");
            self.closed.cancel();
            // Dropping the senders wakes the waiting callers with `ConnectionLost`.
            self.pending.lock().clear();
            for (_, cancel) in self.inflight.lock().drain() {
                cancel.cancel();
            }
        }
    }

    fn encode(&self, frame: &Frame) -> Result<Bytes, TransportError> {
        let bytes = codec::encode(frame).map_err(|_| TransportError::TooLarge {
            size: codec::MAX_MESSAGE_BYTES + 1,
            limit: self.frame_limit,
        })?;
        if bytes.len() > self.frame_limit {
            return Err(TransportError::TooLarge {
                size: bytes.len(),
                limit: self.frame_limit,
            });
        }
        Ok(Bytes::from(bytes))
    }

    async fn enqueue(&self, frame: Bytes) -> Result<(), TransportError> {
        if self.faults.is_cut(&self.peer, &self.addr) {
            // A simulated partition: the frame is lost on the way.
            return Ok(());
        }
        self.queue
            .send(frame)
            .await
            .map_err(|_| TransportError::ConnectionLost {
                addr: self.addr.clone(),
            })
    }

    /// Sends a request and waits for its response, at most `timeout`.
    pub(crate) async fn request(
        &self,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, TransportError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = self.encode(&Frame::Request {
            id,
            timeout_us: u64::try_from(timeout.as_micros()).unwrap_or(u64::MAX),
            body,
        })?;
        let (tx, rx) = oneshot::channel();
        self.pending.lock().insert(id, tx);
        if !self.is_open() {
            self.pending.lock().remove(&id);
            return Err(TransportError::ConnectionLost {
                addr: self.addr.clone(),
            });
        }
        let exchange = async {
            self.enqueue(frame).await?;
            match rx.await {
                Ok(Ok(body)) => Ok(body),
                Ok(Err(reason)) => Err(TransportError::Refused {
                    addr: self.addr.clone(),
                    reason,
                }),
                Err(_) => Err(TransportError::ConnectionLost {
                    addr: self.addr.clone(),
                }),
            }
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => {
                self.pending.lock().remove(&id);
                // Best effort: a full queue means the peer is slow; it drops the request at its
                // own deadline anyway.
                if let Ok(cancel) = self.encode(&Frame::Cancel { id }) {
                    let _ = self.queue.try_send(cancel);
                }
                Err(TransportError::Timeout {
                    addr: self.addr.clone(),
                    timeout,
                })
            }
        }
    }

    /// Sends a message that expects no answer.
    pub(crate) async fn one_way(&self, body: Vec<u8>) -> Result<(), TransportError> {
        let frame = self.encode(&Frame::OneWay { body })?;
        self.enqueue(frame).await
    }
}

/// Sizes of one link.
#[derive(Debug, Clone)]
pub(crate) struct LinkConfig {
    pub(crate) frame_limit: usize,
    pub(crate) send_queue: usize,
    /// The transport's test fault switch.
    pub(crate) faults: Faults,
}

async fn write_loop(
    mut sink: SplitSink<Wire, Bytes>,
    mut rx: mpsc::Receiver<Bytes>,
    link: Arc<Link>,
) {
    let result: Result<(), std::io::Error> = async {
        loop {
            let first = tokio::select! {
                frame = rx.recv() => frame,
                () = link.closed.cancelled() => None,
            };
            let Some(first) = first else { return Ok(()) };
            sink.feed(first).await?;
            let mut taken = 1;
            // Take what is queued. Under load (other requests in flight on this link), let the
            // tasks that are about to send run once (they are often already woken) and take
            // what they queued too: one flush for all of it. A lone request goes out at once.
            let busy = link.pending.lock().len() + link.inflight.lock().len() > 1;
            for round in 0..2 {
                while taken < COALESCE {
                    match rx.try_recv() {
                        Ok(frame) => {
                            sink.feed(frame).await?;
                            taken += 1;
                        }
                        Err(_) => break,
                    }
                }
                if round == 0 && busy && taken < COALESCE {
                    tokio::task::yield_now().await;
                } else {
                    break;
                }
            }
            sink.flush().await?;
        }
    }
    .await;
    let why = match &result {
        Ok(()) => "closed".to_owned(),
        Err(e) => format!("write failed: {e}"),
    };
    link.close(&why);
    let _ = sink.close().await;
}

async fn read_loop(
    mut stream: SplitStream<Wire>,
    link: Arc<Link>,
    handler: Arc<dyn Handler>,
    tracker: TaskTracker,
) {
    let why = loop {
        let next = tokio::select! {
            next = stream.next() => next,
            () = link.closed.cancelled() => break "closed".to_owned(),
        };
        let bytes = match next {
            Some(Ok(bytes)) => bytes,
            Some(Err(e)) => break format!("bad frame: {e}"),
            None => break "the peer closed the connection".to_owned(),
        };
        if link.faults.is_cut(&link.peer, &link.addr) {
            // A simulated partition: the frame never arrived.
            continue;
        }
        let frame: Frame = match codec::decode(&bytes) {
            Ok(frame) => frame,
            Err(e) => break format!("malformed frame: {e}"),
        };
        match frame {
            Frame::Response { id, body } => {
                if let Some(waiter) = link.pending.lock().remove(&id) {
                    let _ = waiter.send(Ok(body));
                }
            }
            Frame::Refused { id, reason } => {
                if let Some(waiter) = link.pending.lock().remove(&id) {
                    let _ = waiter.send(Err(reason));
                }
            }
            Frame::Request {
                id,
                timeout_us,
                body,
            } => {
                let timeout = Duration::from_micros(timeout_us);
                let cancel = link.closed.child_token();
                link.inflight.lock().insert(id, cancel.clone());
                let answer = handler.request(&link.peer, body, timeout);
                let link = link.clone();
                tracker.spawn(async move {
                    let body = tokio::select! {
                        body = answer => Some(body),
                        () = cancel.cancelled() => None,
                        () = tokio::time::sleep(timeout) => None,
                    };
                    link.inflight.lock().remove(&id);
                    if let Some(body) = body {
                        let frame = link.encode(&Frame::Response { id, body }).or_else(|e| {
                            tracing::warn!(peer = %link.peer, %e, "response refused");
                            link.encode(&Frame::Refused {
                                id,
                                reason: e.to_string(),
                            })
                        });
                        if let Ok(frame) = frame {
                            let _ = link.enqueue(frame).await;
                        }
                    }
                });
            }
            Frame::OneWay { body } => handler.one_way(&link.peer, body),
            Frame::Cancel { id } => {
                if let Some(cancel) = link.inflight.lock().remove(&id) {
                    cancel.cancel();
                }
            }
            other @ (Frame::Hello { .. } | Frame::Proof { .. }) => {
                break format!("unexpected {} after the handshake", frame_name(&other));
            }
        }
    };
    match why.as_str() {
        "closed" => {}
        "the peer closed the connection" => {
            tracing::debug!(peer = %link.peer, addr = %link.addr, "the peer closed the link");
        }
        _ => tracing::warn!(peer = %link.peer, addr = %link.addr, %why, "closing the link"),
    }
    link.close(&why);
}

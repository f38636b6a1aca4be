//! [`Link`]: one authenticated connection, carrying requests both ways.
//!
//! **Writing.** Every frame is encoded straight into the link's one write buffer (no buffer,
//! allocation or queue entry of its own), under a short lock. Whoever holds the socket's write
//! half writes the whole buffer with one syscall; the half is in the buffer's lock while nobody
//! writes, so frames never interleave and never reorder. Who writes:
//! - a request sent on a quiet link (no other request in flight) is written by its caller's task
//!   at once: no hop to another task on the latency path;
//! - under load, the link's writer task: woken by the first frame of a batch, it lets the tasks
//!   that are about to send run once, then writes everything they queued in one syscall;
//! - the answers of requests that the reader answered at once are written by the reader after
//!   it handled everything one read brought: many responses, one syscall.
//!
//! A buffer holding [`LinkConfig::send_queue`] frames makes senders wait (backpressure).
//!
//! **Reading.** The reader task reads as much as the socket has, then handles every complete
//! frame in it: responses wake their callers, requests go to the [`Handler`]. A handler's
//! answer that is ready when first polled (a turn that ran inline) is answered by the reader
//! itself; only an answer that has to wait gets a task of its own, dropped if its caller gives
//! up (a `Cancel` frame, or its deadline passing). Any bad frame closes this link only: its
//! requests in flight fail as `ConnectionLost`.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures::future::BoxFuture;
use granary_core::SiloId;
use granary_core::codec::{self, CodecError};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::{Notify, oneshot};
use tokio_util::codec::{Framed, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::TransportError;
use crate::faults::Faults;
use crate::frame::{self, Frame, Header};
use crate::stream::{ReadHalf, Stream, WriteHalf};

/// What a silo does with the requests and messages that arrive.
pub trait Handler: Send + Sync + 'static {
    /// Answers a request from `from`; `timeout` is how long its caller still waits. The future
    /// is polled once by the link's reader: one that is ready then is answered at once, in the
    /// same write as the other answers of the batch. One that is not moves to a task of its
    /// own, and is dropped if the caller gives up first. `body` is a slice of the read buffer
    /// (no copy).
    fn request(&self, from: &SiloId, body: Bytes, timeout: Duration)
    -> BoxFuture<'static, Vec<u8>>;

    /// Takes a message that expects no answer.
    fn one_way(&self, from: &SiloId, body: Bytes);
}

/// What a request or message carries, written straight into the link's write buffer.
pub trait Body {
    /// Appends the body to `out`.
    ///
    /// # Errors
    /// Why it cannot be encoded (too large, a `Serialize` implementation failing).
    fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), CodecError>;
}

impl Body for [u8] {
    fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), CodecError> {
        out.extend_from_slice(self);
        Ok(())
    }
}

impl Body for Vec<u8> {
    fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), CodecError> {
        self.as_slice().encode_into(out)
    }
}

impl Body for Bytes {
    fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), CodecError> {
        self.as_ref().encode_into(out)
    }
}

/// A value sent encoded with the wire codec ([`granary_core::codec`]), written straight into
/// the link's write buffer: no buffer of its own, no copy.
#[derive(Debug)]
pub struct Encoded<'a, T: ?Sized>(pub &'a T);

impl<T: Serialize + ?Sized> Body for Encoded<'_, T> {
    fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), CodecError> {
        codec::encode_into(self.0, out).map(drop)
    }
}

/// Hashes this link's own request ids (a counter, never chosen by the peer) with one
/// multiplication instead of SipHash: the pending map is touched twice per request.
#[derive(Debug, Default, Clone, Copy)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Not reached for `u64` keys; fold anything else in.
        for b in bytes {
            self.write_u64(self.0 ^ u64::from(*b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        // Fibonacci hashing: spreads a counter over the high bits the map's buckets use.
        self.0 = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type BuildIdHasher = BuildHasherDefault<IdHasher>;

/// Where a response goes: the body, or why the peer could not send it.
type Waiter = oneshot::Sender<Result<Bytes, String>>;

/// What the reader asks of the socket at once, and the room it keeps free for a read.
const READ_CHUNK: usize = 64 * 1024;

/// A spare write buffer larger than this is given back after a burst.
const KEEP_BUFFER: usize = 1024 * 1024;

/// Who writes a frame just added to the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flush {
    /// This task, now, unless another is writing (which then writes this frame too).
    Now,
    /// The writer task, once the tasks about to send have added theirs.
    Writer,
    /// The reader, once it handled everything its last read brought.
    Batch,
}

/// An established, authenticated connection to one peer silo.
pub(crate) struct Link {
    peer: SiloId,
    addr: String,
    out: Outbox,
    pending: Mutex<HashMap<u64, Waiter, BuildIdHasher>>,
    inflight: Mutex<HashMap<u64, CancellationToken>>,
    next_id: AtomicU64,
    open: AtomicBool,
    closed: CancellationToken,
    frame_limit: usize,
    faults: Faults,
    /// Whether the connection is TLS: then only the writer task writes.
    tls: bool,
}

/// The write side: one buffer of encoded frames, and the socket when nobody is writing.
struct Outbox {
    state: Mutex<Out>,
    /// Wakes the writer task.
    wake: Notify,
    /// Wakes senders waiting for room.
    room: Notify,
    /// Frames the buffer holds before senders wait.
    max_frames: usize,
}

struct Out {
    /// Encoded frames not yet handed to a writer.
    buf: Vec<u8>,
    /// The other buffer: written from while `buf` fills.
    spare: Vec<u8>,
    /// Frames in `buf`.
    frames: usize,
    /// The write half; `None` while a task writes with it (it writes what `buf` gained
    /// meanwhile before putting it back).
    socket: Option<WriteHalf>,
    /// The link closed: nothing more is accepted, and the socket is dropped when returned.
    closed: bool,
}

/// What a writer took from the buffer.
struct Taken {
    socket: WriteHalf,
    bytes: Vec<u8>,
    /// Senders may be waiting for room: wake them.
    was_full: bool,
}

impl Outbox {
    /// Takes the socket and everything to write (see [`Out::take`]), waking the senders that
    /// wait for room.
    fn take(&self) -> Option<(WriteHalf, Vec<u8>)> {
        let taken = self.state.lock().take(self.max_frames)?;
        if taken.was_full {
            self.room.notify_waiters();
        }
        Some((taken.socket, taken.bytes))
    }
}

impl Out {
    /// Appends one frame: the length, the header, the body.
    fn append<B: Body + ?Sized>(
        &mut self,
        header: Header,
        body: &B,
        limit: usize,
    ) -> Result<(), TransportError> {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        header.write(&mut self.buf);
        let encoded = body.encode_into(&mut self.buf);
        let size = self.buf.len() - start - 4;
        let error = match encoded {
            Ok(()) => match u32::try_from(size) {
                Ok(len) if size <= limit => {
                    self.buf[start..start + 4].copy_from_slice(&len.to_be_bytes());
                    self.frames += 1;
                    return Ok(());
                }
                _ => TransportError::TooLarge { size, limit },
            },
            Err(CodecError::TooLarge { size, .. }) => TransportError::TooLarge { size, limit },
            Err(other) => TransportError::Encode {
                reason: other.to_string(),
            },
        };
        self.buf.truncate(start);
        Err(error)
    }

    /// Takes the socket and everything to write, if nobody is writing and there is something.
    fn take(&mut self, max_frames: usize) -> Option<Taken> {
        if self.buf.is_empty() || self.closed {
            return None;
        }
        let socket = self.socket.take()?;
        let bytes = std::mem::replace(&mut self.buf, std::mem::take(&mut self.spare));
        // Senders wait only on a full buffer, and saw it full under this lock.
        let was_full = self.frames >= max_frames;
        self.frames = 0;
        Some(Taken {
            socket,
            bytes,
            was_full,
        })
    }

    /// Gives back the socket and the buffer just written; whether frames wait again.
    fn give_back(&mut self, socket: WriteHalf, mut written: Vec<u8>) -> bool {
        written.clear();
        if written.capacity() > KEEP_BUFFER {
            written.shrink_to(READ_CHUNK);
        }
        if written.capacity() > self.spare.capacity() {
            self.spare = written;
        }
        if self.closed {
            return false;
        }
        self.socket = Some(socket);
        !self.buf.is_empty()
    }

    /// Gives back the socket after a write that wrote only `written` bytes of `bytes`: the rest
    /// goes before what was added meanwhile.
    fn give_back_rest(&mut self, socket: WriteHalf, mut bytes: Vec<u8>, written: usize) {
        bytes.drain(..written);
        bytes.extend_from_slice(&self.buf);
        self.buf = bytes;
        self.frames += 1;
        if !self.closed {
            self.socket = Some(socket);
        }
    }
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
        wire: Framed<Stream, LengthDelimitedCodec>,
        peer: SiloId,
        addr: String,
        handler: Arc<dyn Handler>,
        config: &LinkConfig,
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
    ) -> Arc<Self> {
        // What the handshake's framing read past its last frame is the start of the next.
        let parts = wire.into_parts();
        let tls = matches!(parts.io, Stream::Tls(_));
        let (read, write) = parts.io.into_split();
        let link = Arc::new(Self {
            peer,
            addr,
            out: Outbox {
                state: Mutex::new(Out {
                    buf: Vec::new(),
                    spare: Vec::new(),
                    frames: 0,
                    socket: Some(write),
                    closed: false,
                }),
                wake: Notify::new(),
                room: Notify::new(),
                max_frames: config.send_queue.max(1),
            },
            pending: Mutex::new(HashMap::default()),
            inflight: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            open: AtomicBool::new(true),
            closed: shutdown.child_token(),
            frame_limit: config.frame_limit,
            faults: config.faults.clone(),
            tls,
        });
        tracker.spawn(write_loop(link.clone()));
        tracker.spawn(read_loop(
            read,
            parts.read_buf,
            link.clone(),
            handler,
            tracker.clone(),
        ));
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
            let socket = {
                let mut out = self.out.state.lock();
                out.closed = true;
                out.buf = Vec::new();
                out.spare = Vec::new();
                out.socket.take()
            };
            // The peer sees the connection end (or, if a task is writing, once it stops).
            drop(socket);
            self.out.room.notify_waiters();
            // Dropping the senders wakes the waiting callers with `ConnectionLost`.
            self.pending.lock().clear();
            for (_, cancel) in self.inflight.lock().drain() {
                cancel.cancel();
            }
        }
    }

    /// Whether other requests are in flight on this link, either way: then frames are left
    /// to the writer task, which writes many at once.
    fn busy(&self) -> bool {
        self.pending.lock().len() + self.inflight.lock().len() > 1
    }

    fn lost(&self) -> TransportError {
        TransportError::ConnectionLost {
            addr: self.addr.clone(),
        }
    }

    /// Adds a frame to the write buffer, waiting for room, and sees that it gets written.
    async fn send<B: Body + ?Sized>(
        &self,
        header: Header,
        body: &B,
        flush: Flush,
    ) -> Result<(), TransportError> {
        loop {
            // Created before the check: a `notify_waiters` after it is not missed.
            let room = self.out.room.notified();
            if self.add(header, body, flush, self.out.max_frames)? {
                return Ok(());
            }
            // Someone must write for room to come.
            self.out.wake.notify_one();
            room.await;
        }
    }

    /// Adds a frame to the write buffer if it holds fewer than `max` frames, and sees that it
    /// gets written; whether it was added (`false`: the buffer holds `max`, nothing changed).
    fn add<B: Body + ?Sized>(
        &self,
        header: Header,
        body: &B,
        flush: Flush,
        max: usize,
    ) -> Result<bool, TransportError> {
        if self.faults.is_cut(&self.peer, &self.addr) {
            // A simulated partition: the frame is lost on the way.
            return Ok(true);
        }
        // `first`: the frame is the first of the buffer.
        let first = {
            let mut out = self.out.state.lock();
            if out.closed {
                return Err(self.lost());
            }
            if out.frames >= max {
                return Ok(false);
            }
            let first = out.buf.is_empty();
            out.append(header, body, self.frame_limit)?;
            first
        };
        // A TLS link's frames are all written by the writer task, which flushes the
        // records (see `WriteHalf::try_write`).
        let write_now = match flush {
            Flush::Now if !self.tls => self.out.take(),
            Flush::Now | Flush::Writer | Flush::Batch => None,
        };
        match write_now {
            Some((socket, bytes)) => self.write_now(socket, bytes),
            None if flush != Flush::Batch && first => self.out.wake.notify_one(),
            None => {}
        }
        Ok(true)
    }

    /// Adds a frame without waiting: dropped if the buffer is full (best effort).
    fn try_send(&self, header: Header) {
        let mut out = self.out.state.lock();
        if out.closed || out.frames >= self.out.max_frames {
            return;
        }
        let first = out.buf.is_empty();
        if out.append(header, &[][..], self.frame_limit).is_ok() && first {
            drop(out);
            self.out.wake.notify_one();
        }
    }

    /// Writes what the reader's batch of answers added, if nobody else is writing.
    fn flush_batch(&self) {
        if self.tls {
            if !self.out.state.lock().buf.is_empty() {
                self.out.wake.notify_one();
            }
            return;
        }
        if let Some((socket, bytes)) = self.out.take() {
            self.write_now(socket, bytes);
        }
    }

    /// Writes `bytes` from this task without waiting; what the socket does not take now goes
    /// back to the buffer, for the writer task.
    fn write_now(&self, socket: WriteHalf, bytes: Vec<u8>) {
        let mut written = 0;
        while written < bytes.len() {
            match socket.try_write(&bytes[written..]) {
                Ok(0) => {
                    drop(socket);
                    return self.close("write failed: the socket took no bytes");
                }
                Ok(n) => written += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    drop(socket);
                    return self.close(&format!("write failed: {e}"));
                }
            }
        }
        let mut out = self.out.state.lock();
        let more = if written < bytes.len() {
            out.give_back_rest(socket, bytes, written);
            true
        } else {
            out.give_back(socket, bytes)
        };
        drop(out);
        if more {
            self.out.wake.notify_one();
        }
    }

    /// Sends a request and waits for its response, at most `timeout`.
    pub(crate) async fn request<B: Body + ?Sized>(
        &self,
        body: &B,
        timeout: Duration,
    ) -> Result<Bytes, TransportError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().insert(id, tx);
        if !self.is_open() {
            self.pending.lock().remove(&id);
            return Err(self.lost());
        }
        let flush = self.flush();
        let header = Header::Request {
            id,
            timeout_us: u64::try_from(timeout.as_micros()).unwrap_or(u64::MAX),
        };
        let exchange = async {
            self.send(header, body, flush).await?;
            match rx.await {
                Ok(Ok(body)) => Ok(body),
                Ok(Err(reason)) => Err(TransportError::Refused {
                    addr: self.addr.clone(),
                    reason,
                }),
                Err(_) => Err(self.lost()),
            }
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(body)) => Ok(body),
            Ok(Err(err)) => {
                self.pending.lock().remove(&id);
                Err(err)
            }
            Err(_) => {
                self.pending.lock().remove(&id);
                // Best effort: a full buffer means the peer is slow; it drops the request at
                // its own deadline anyway.
                self.try_send(Header::Cancel { id });
                Err(TransportError::Timeout {
                    addr: self.addr.clone(),
                    timeout,
                })
            }
        }
    }

    /// Sends a message that expects no answer.
    pub(crate) async fn one_way<B: Body + ?Sized>(&self, body: &B) -> Result<(), TransportError> {
        self.send(Header::OneWay, body, self.flush()).await
    }

    /// Sends a message that expects no answer without waiting: refused with `Backlogged` if
    /// `max_waiting` frames (or the buffer's bound) already wait to be written.
    pub(crate) fn try_one_way<B: Body + ?Sized>(
        &self,
        body: &B,
        max_waiting: usize,
    ) -> Result<(), TransportError> {
        let max = max_waiting.clamp(1, self.out.max_frames);
        if self.add(Header::OneWay, body, self.flush(), max)? {
            Ok(())
        } else {
            Err(TransportError::Backlogged {
                peer: self.peer.to_string(),
                waiting: max,
            })
        }
    }

    /// How a frame sent now gets written: from the sender's task when the link is idle, by
    /// the writer task (many frames at once) when other requests are in flight.
    fn flush(&self) -> Flush {
        if self.busy() {
            Flush::Writer
        } else {
            Flush::Now
        }
    }

    /// Sends the answer to request `id`, or a `Refused` frame if it cannot be sent.
    async fn respond(&self, id: u64, body: &[u8], flush: Flush) {
        let sent = match self.send(Header::Response { id }, body, flush).await {
            Err(e @ (TransportError::TooLarge { .. } | TransportError::Encode { .. })) => {
                tracing::warn!(peer = %self.peer, %e, "response refused");
                let reason = e.to_string();
                self.send(Header::Refused { id }, reason.as_bytes(), flush)
                    .await
            }
            other => other,
        };
        // Otherwise the link closed: the caller learns it from its side.
        drop(sent);
    }

    /// Handles one frame the reader took.
    async fn dispatch(
        self: &Arc<Self>,
        frame: Frame,
        handler: &dyn Handler,
        tracker: &TaskTracker,
    ) {
        match frame {
            Frame::Response { id, body } => {
                if let Some(waiter) = self.pending.lock().remove(&id) {
                    let _ = waiter.send(Ok(body));
                }
            }
            Frame::Refused { id, reason } => {
                if let Some(waiter) = self.pending.lock().remove(&id) {
                    let _ = waiter.send(Err(reason));
                }
            }
            Frame::Request {
                id,
                timeout_us,
                body,
            } => {
                let timeout = Duration::from_micros(timeout_us);
                let mut answer = handler.request(&self.peer, body, timeout);
                // Polled once here, outside the cooperative budget (the batch is bounded by
                // what one read brought): most answers are ready at once.
                let polled = futures::poll!(tokio::task::coop::unconstrained(&mut answer));
                if let Poll::Ready(body) = polled {
                    return self.respond(id, &body, Flush::Batch).await;
                }
                let cancel = self.closed.child_token();
                self.inflight.lock().insert(id, cancel.clone());
                let link = self.clone();
                tracker.spawn(async move {
                    let body = tokio::select! {
                        body = answer => Some(body),
                        () = cancel.cancelled() => None,
                        () = tokio::time::sleep(timeout) => None,
                    };
                    link.inflight.lock().remove(&id);
                    if let Some(body) = body {
                        link.respond(id, &body, link.flush()).await;
                    }
                });
            }
            Frame::OneWay { body } => handler.one_way(&self.peer, body),
            Frame::Cancel { id } => {
                if let Some(cancel) = self.inflight.lock().remove(&id) {
                    cancel.cancel();
                }
            }
        }
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

/// The writer task: writes what senders left to it, many frames at once.
async fn write_loop(link: Arc<Link>) {
    let result: std::io::Result<()> = async {
        loop {
            tokio::select! {
                () = link.out.wake.notified() => {}
                () = link.closed.cancelled() => return Ok(()),
            }
            // Under load, let the tasks that are about to send run once (they are often
            // already woken) and take what they add too: one write for all of it.
            if link.busy() {
                tokio::task::yield_now().await;
            }
            loop {
                let Some((mut socket, bytes)) = link.out.take() else {
                    break;
                };
                let written = tokio::select! {
                    written = socket.write_all(&bytes) => written,
                    () = link.closed.cancelled() => return Ok(()),
                };
                written?;
                link.out.state.lock().give_back(socket, bytes);
            }
        }
    }
    .await;
    if let Err(e) = result {
        link.close(&format!("write failed: {e}"));
    }
}

/// The reader task: reads what the socket has, then handles every complete frame in it.
async fn read_loop(
    mut socket: ReadHalf,
    mut buf: BytesMut,
    link: Arc<Link>,
    handler: Arc<dyn Handler>,
    tracker: TaskTracker,
) {
    let why = loop {
        if let Err(why) = take_frames(&mut buf, &link, &*handler, &tracker).await {
            break why;
        }
        link.flush_batch();
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
        let read = tokio::select! {
            biased;
            read = socket.read_buf(&mut buf) => read,
            () = link.closed.cancelled() => break "closed".to_owned(),
        };
        match read {
            Ok(0) => break "the peer closed the connection".to_owned(),
            Ok(_) => {}
            Err(e) => break format!("read failed: {e}"),
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

/// Handles every complete frame at the start of `buf`; checks each length against the frame
/// limit before reserving room for it.
async fn take_frames(
    buf: &mut BytesMut,
    link: &Arc<Link>,
    handler: &dyn Handler,
    tracker: &TaskTracker,
) -> Result<(), String> {
    while let Some(prefix) = buf.first_chunk::<4>() {
        let len = u32::from_be_bytes(*prefix) as usize;
        if len > link.frame_limit {
            return Err(format!(
                "bad frame: {len} bytes, over the frame limit of {} bytes",
                link.frame_limit
            ));
        }
        if buf.len() < 4 + len {
            buf.reserve(4 + len - buf.len());
            break;
        }
        buf.advance(4);
        let bytes = buf.split_to(len).freeze();
        if link.faults.is_cut(&link.peer, &link.addr) {
            // A simulated partition: the frame never arrived.
            continue;
        }
        let frame = frame::decode(bytes).map_err(|e| format!("malformed frame: {e}"))?;
        link.dispatch(frame, handler, tracker).await;
    }
    Ok(())
}

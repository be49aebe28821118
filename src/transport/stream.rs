//! The stream of one connected user, over its transport (chunked "comet", WebSocket or
//! Server-Sent Events) and codec (JSON or MessagePack): one task per stream on the user's core
//! reads the client's frames; the core's flusher task writes queued messages as frames.
//!
//! Memory per idle stream is the point here: the task holds no read buffer while waiting (it
//! reads into a per-core scratch buffer only when the socket is readable), no write buffer and
//! no queue allocation, so an idle stream costs its task, its socket and its `Conn`.
//!
//! Writes go through one per-core flusher rather than each stream's task: a publish only queues
//! and marks the stream dirty, and the flusher, letting the reactor run every few streams, sends
//! everything queued for a stream in one `send`. Under fan-out load, publishes arriving while a
//! flush pass runs pile up behind it, so each send carries several messages (one syscall and one
//! loopback segment per stream per pass instead of per delivery); when idle, a message is sent
//! as soon as the publishing task yields. A socket that takes less than offered leaves the rest
//! in `Conn::unsent` and the stream's task waits for it to become writable.

use std::cell::RefCell;
use std::future::Future;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt};
use glommio::net::TcpStream;

use super::decode::{Decoder, Input};
use super::ws;
use crate::http::chunk::{encode_chunk, LAST_CHUNK};
use crate::http::cors;
use crate::http::response::{
    write_error_with, write_sse_head, write_stream_head, write_upgrade_head,
};
use crate::msg::Opening;
use crate::protocol::close;
use crate::protocol::{codec, ClientMessage, Codec, Mode, Transport};
use crate::router::Router;
use crate::shard::conn::{Conn, Out};
use crate::shard::{AttachError, Shard};
use crate::stats::Lat;

/// Bytes coalesced into one write.
const WRITE_BATCH: usize = 64 * 1024;

thread_local! {
    /// Every read of this core lands here first; only an incomplete chunk is copied out.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; 64 * 1024]);
    /// Where one message's JSON is built before it is framed.
    static JSON: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(1024));
    /// Where a stream's queued frames are encoded for one `send`.
    static OUT: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(WRITE_BATCH + 4096));
}

/// A socket on its owner core whose stream has not started yet.
pub struct NewStream {
    pub stream: TcpStream,
    pub opening: Opening,
}

/// Starts a stream: registration, 200 head and offline replay run in this (short-lived)
/// task; the stream itself then lives in a task of its own whose state is only `StreamTask`.
pub async fn run(router: Rc<Router>, new: Box<NewStream>) {
    let uid = new.opening.uid.clone();
    if let Some((stream, conn, io)) = open(router.shard(), new).await {
        router.recheck_stream(&uid);
        glommio::spawn_local(StreamTask {
            router,
            conn,
            stream,
            io,
            handling: None,
        })
        .detach();
    }
}

/// What `write_queued` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wrote {
    /// Everything queued is written (or the stream does not stream yet).
    Idle,
    /// The socket took less than offered: the rest is in `Conn::unsent`.
    Blocked,
    /// The final item is written: the stream closes.
    Finished,
    /// The socket failed.
    Failed,
}

/// Writes what is queued for `conn` straight to its socket, up to `WRITE_BATCH` bytes per
/// `send`; never waits.
pub fn write_queued(shard: &Shard, conn: &Conn) -> Wrote {
    let Some(fd) = conn.fd() else {
        return Wrote::Idle;
    };
    if conn.is_aborted() {
        return Wrote::Failed;
    }
    if conn.has_unsent() {
        return Wrote::Blocked;
    }
    if conn.is_replaying() || conn.final_encoded.get() {
        return Wrote::Idle;
    }
    let mode = conn.mode.get();
    OUT.with(|out| {
        let mut out = out.borrow_mut();
        loop {
            out.clear();
            let ending = fill(&mut out, shard, conn, mode);
            if ending {
                conn.final_encoded.set(true);
            }
            if out.is_empty() {
                return if ending { Wrote::Finished } else { Wrote::Idle };
            }
            shard.bump(&shard.stats().send_writes);
            match send_now(fd, &out) {
                Ok(n) => {
                    conn.sent_at(shard.clock());
                    if n < out.len() {
                        shard.bump(&shard.stats().send_blocked);
                        conn.keep_unsent(&out[n..]);
                        return Wrote::Blocked;
                    }
                    if ending {
                        return Wrote::Finished;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    shard.bump(&shard.stats().send_blocked);
                    conn.keep_unsent(&out);
                    return Wrote::Blocked;
                }
                Err(_) => return Wrote::Failed,
            }
        }
    })
}

/// One non-blocking `send` (no SIGPIPE), retried only when interrupted.
fn send_now(fd: RawFd, buf: &[u8]) -> std::io::Result<usize> {
    loop {
        // SAFETY: `buf` is valid for `buf.len()` bytes; `fd` is the stream's open socket
        // (`Conn::fd` is cleared before the stream's socket is closed).
        let n = unsafe {
            libc::send(
                fd,
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Streams written between two reactor turns in a long flush pass.
const STREAMS_PER_TURN: usize = 32;

/// This core's writer: sends what publishes queued, stream by stream. Every
/// `STREAMS_PER_TURN` streams it lets the reactor run, so that publishes arriving meanwhile
/// are read and queued behind the pass: the streams not yet written then carry several
/// messages in one send, the ones already written are dirty again for the next pass.
/// (`yield_if_needed` alone rarely polled I/O during a pass: a 10,000-member fan-out then went
/// out at ~1.7 messages per send and ~300k deliveries/s; with a reactor turn every 32 streams,
/// ~10 per send and ~1M/s on the same box. perf/RESULTS.md.)
pub async fn flusher(shard: Rc<Shard>) {
    let mut spare = Vec::new();
    loop {
        let mut batch = shard.take_dirty(spare).await;
        for (i, conn) in batch.drain(..).enumerate() {
            conn.dirty.set(false);
            match write_queued(&shard, &conn) {
                Wrote::Idle => {}
                // The stream's task waits for writability, or closes.
                Wrote::Blocked | Wrote::Finished => conn.wake(),
                Wrote::Failed => conn.abort(),
            }
            if i % STREAMS_PER_TURN == STREAMS_PER_TURN - 1 {
                reactor_turn().await;
            } else {
                glommio::yield_if_needed().await;
            }
        }
        spare = batch;
    }
}

/// Returns after the executor has polled I/O and timers at least once: glommio 0.9 polls only
/// when its task queues run dry or a preemption is due, and yielding a task or a task queue
/// does neither. A timer that cannot fire before the next poll does.
async fn reactor_turn() {
    glommio::timer::sleep(Duration::from_micros(1)).await;
}

/// An open stream's task, written by hand so that its idle state is exactly these fields
/// (an `async fn` would also keep iterators, closures and await slots).
pub struct StreamTask {
    router: Rc<Router>,
    conn: Rc<Conn>,
    stream: TcpStream,
    io: StreamIo,
    /// Client messages being acted on (rarely pending: most complete in one poll).
    handling: Option<Pin<Box<dyn Future<Output = ()>>>>,
}

impl Future for StreamTask {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            if let Some(h) = this.handling.as_mut() {
                if h.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.handling = None;
            }
            let shard = this.router.shard();
            match this.io.step(cx, shard, &this.conn, &mut this.stream) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Event::Msgs(msgs)) => {
                    let (router, conn) = (this.router.clone(), this.conn.clone());
                    this.handling = Some(Box::pin(async move {
                        for m in msgs {
                            if let Err(e) = router.client_message(&conn.uid, Some(&conn), m).await {
                                tracing::warn!(uid = %conn.uid, error = %e, "client message failed");
                            }
                        }
                    }));
                }
                Poll::Ready(Event::Done) => {
                    if !this.conn.is_aborted() {
                        // glommio's close is a synchronous shutdown(SHUT_WR): ready at once.
                        let _ = Pin::new(&mut this.stream).poll_close(cx);
                    }
                    return Poll::Ready(());
                }
            }
        }
    }
}

impl Drop for StreamTask {
    /// However the task ends (done, or dropped at shutdown), no write reaches its socket's
    /// descriptor number again, and the stream is forgotten by its core.
    fn drop(&mut self) {
        self.conn.set_fd(None);
        self.conn.clear_waker();
        self.router.shard().detach(&self.conn);
    }
}

/// Registers the stream, writes its response head and replays offline messages.
async fn open(shard: &Rc<Shard>, new: Box<NewStream>) -> Option<(TcpStream, Rc<Conn>, StreamIo)> {
    let NewStream {
        mut stream,
        opening,
    } = *new;
    super::tune_socket(
        &stream,
        Duration::from_secs(shard.cfg().heartbeat_interval_s),
    );
    if let Some(id) = opening.last_event_id {
        // The browser says what it has: that is an ack.
        if let Err(e) = shard.ack(&opening.uid, id).await {
            tracing::warn!(uid = %opening.uid, error = %e, "Last-Event-ID ack failed");
        }
    }
    let cors = cors::answer_headers(opening.allow_origin.as_deref());
    let attached = match shard.attach(&opening.uid).await {
        Ok(x) => x,
        Err(e) => {
            let status = match e {
                AttachError::Limit | AttachError::Closing => 503,
                AttachError::Storage(_) => 500,
            };
            let mut out = Vec::new();
            write_error_with(&mut out, status, &e.to_string(), &cors, false);
            let _ = stream.write_all(&out).await;
            return None;
        }
    };
    let conn = attached.conn;
    let mut head = Vec::with_capacity(200);
    match opening.mode.transport {
        Transport::Chunked => write_stream_head(&mut head, &cors),
        Transport::WebSocket => {
            write_upgrade_head(&mut head, opening.ws_accept.as_deref().unwrap_or_default())
        }
        Transport::Sse => write_sse_head(&mut head, &cors),
    }
    conn.mode.set(opening.mode);
    if stream.write_all(&head).await.is_err() {
        conn.clear_waker();
        shard.detach(&conn);
        return None;
    }
    // From here on, the flusher writes queued messages (once the replay is in front of them).
    conn.set_fd(Some(stream.as_raw_fd()));
    shard.replay(&conn, attached.after, attached.upto).await;
    shard.latency().since(Lat::ConnectStreaming, opening.at);
    let leftover = opening.leftover;
    let io = StreamIo {
        pending_input: !leftover.is_empty(),
        bufs: (!leftover.is_empty()).then(|| {
            Box::new(Bufs {
                inbuf: leftover,
                decoder: Decoder::default(),
            })
        }),
    };
    Some((stream, conn, io))
}

enum Event {
    Msgs(Vec<ClientMessage>),
    Done,
}

/// What a stream's task keeps between polls: 16 bytes while idle.
struct StreamIo {
    /// Buffers, allocated only while a client frame is incomplete.
    bufs: Option<Box<Bufs>>,
    pending_input: bool,
}

#[derive(Default)]
struct Bufs {
    /// Bytes of an incomplete frame from the client.
    inbuf: Vec<u8>,
    decoder: Decoder,
}

impl StreamIo {
    fn bufs(&mut self) -> &mut Bufs {
        self.bufs.get_or_insert_with(Box::default)
    }

    /// Frees the buffers once nothing is in flight, so an idle stream holds none.
    fn release(&mut self) {
        if self
            .bufs
            .as_ref()
            .is_some_and(|b| b.inbuf.is_empty() && b.decoder.is_idle())
        {
            self.bufs = None;
        }
    }

    fn step(
        &mut self,
        cx: &mut Context<'_>,
        shard: &Shard,
        conn: &Rc<Conn>,
        stream: &mut TcpStream,
    ) -> Poll<Event> {
        conn.set_waker(cx.waker());
        if conn.is_aborted() || write_pending(cx, shard, conn, stream).is_err() {
            return Poll::Ready(Event::Done);
        }
        if conn.final_encoded.get() || conn.is_ending() {
            // Reading stops once the stream is ending; only the final write remains.
            self.release();
            return Poll::Pending;
        }
        // Read what the client sent.
        let mut msgs = Vec::new();
        if self.pending_input {
            self.pending_input = false;
            let mut data = std::mem::take(&mut self.bufs().inbuf);
            self.feed(&mut data, &mut msgs, shard, conn);
        }
        for _ in 0..4 {
            if !msgs.is_empty() || conn.is_ending() {
                break;
            }
            let read = SCRATCH.with(|s| {
                let mut s = s.borrow_mut();
                match Pin::new(&mut *stream).poll_read(cx, &mut s[..]) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => Some(false),
                    Poll::Ready(Ok(n)) => {
                        self.feed(&mut s[..n], &mut msgs, shard, conn);
                        Some(true)
                    }
                    Poll::Pending => None,
                }
            });
            match read {
                Some(true) => continue,
                Some(false) => return Poll::Ready(Event::Done),
                None => break,
            }
        }
        self.release();
        if !msgs.is_empty() {
            return Poll::Ready(Event::Msgs(msgs));
        }
        if conn.is_ending() {
            // Bad input queued a final chunk: come back to write it.
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }

    /// Takes `data` (read just now) through the transport's decoder and acts on what it says.
    fn feed(
        &mut self,
        data: &mut [u8],
        msgs: &mut Vec<ClientMessage>,
        shard: &Shard,
        conn: &Rc<Conn>,
    ) {
        let mode = conn.mode.get();
        let max = shard.cfg().max_message_bytes;
        let mut inputs = Vec::new();
        let Bufs { inbuf, decoder } = self.bufs();
        let progress = if inbuf.is_empty() {
            let p = decoder.decode(mode, data, max, &mut inputs);
            if p.used < data.len() && !inputs.last().is_some_and(Input::is_final) {
                inbuf.extend_from_slice(&data[p.used..]);
            }
            p
        } else {
            inbuf.extend_from_slice(data);
            let p = decoder.decode(mode, &mut inbuf[..], max, &mut inputs);
            inbuf.drain(..p.used);
            if inbuf.is_empty() {
                *inbuf = Vec::new();
            }
            p
        };
        let stats = shard.stats();
        shard.add(&stats.recv_number, progress.payloads);
        shard.add(&stats.recv_bytes, progress.payload_bytes);
        for input in inputs {
            match input {
                Input::Message(m) => msgs.push(m),
                Input::Ping(payload) => shard.push(conn, Out::Pong(payload)),
                Input::Close(code) => conn.end(code),
                Input::Fail(reason, code) => {
                    shard.bump(&stats.bad_request);
                    conn.fail(&reason, code);
                }
            }
        }
    }
}

/// The stream task's writes: first what the socket did not take before (this waits until it
/// is writable), then anything queued (the flusher usually got there first). `Err` when the
/// stream is done: its final item is written, or the socket failed.
fn write_pending(
    cx: &mut Context<'_>,
    shard: &Shard,
    conn: &Conn,
    stream: &mut TcpStream,
) -> Result<(), ()> {
    loop {
        {
            let mut slot = conn.unsent.borrow_mut();
            if let Some(lo) = slot.as_mut() {
                match Pin::new(&mut *stream).poll_write(cx, lo) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Err(()),
                    Poll::Ready(Ok(n)) => {
                        conn.sent_at(shard.clock());
                        if n == lo.len() {
                            *slot = None;
                        } else {
                            lo.drain(..n);
                        }
                        continue;
                    }
                    Poll::Pending => return Ok(()),
                }
            }
        }
        if conn.final_encoded.get() {
            return Err(());
        }
        match write_queued(shard, conn) {
            Wrote::Idle => return Ok(()),
            Wrote::Blocked => continue,
            Wrote::Finished | Wrote::Failed => return Err(()),
        }
    }
}

/// Encodes queued items into `out`, up to one write batch; true when the final item is in.
fn fill(out: &mut Vec<u8>, shard: &Shard, conn: &Conn, mode: Mode) -> bool {
    let mut ending = false;
    // One clock read for the whole batch, and only when it holds a live message.
    let mut now = None;
    JSON.with(|payload| {
        let mut payload = payload.borrow_mut();
        while out.len() < WRITE_BATCH {
            let Some(item) = conn.pop() else { break };
            payload.clear();
            let seq = match &item {
                Out::Msg { body, seq, at } => {
                    codec::encode(&mut payload, mode.codec, &conn.uid, body, *seq);
                    if let Some(at) = at {
                        let lat = shard.latency();
                        lat.between(
                            Lat::PubWritten,
                            *at,
                            *now.get_or_insert_with(|| lat.stamp()),
                        );
                    }
                    *seq
                }
                Out::Heartbeat => {
                    codec::encode_heartbeat(&mut payload, mode.codec);
                    None
                }
                Out::Error(reason, _) => {
                    codec::encode_error(&mut payload, mode.codec, reason);
                    None
                }
                Out::Pong(p) => {
                    if mode.transport == Transport::WebSocket {
                        ws::encode_frame(out, ws::PONG, p);
                    }
                    continue;
                }
                Out::Moved(location) => {
                    encode_moved(out, &mut payload, mode, location);
                    shard.bump(&shard.stats().send_number);
                    ending = true;
                    break;
                }
                Out::End(_) => None,
            };
            if !payload.is_empty() {
                frame_message(out, mode, &payload, seq);
                shard.bump(&shard.stats().send_number);
                shard.add(&shard.stats().send_bytes, payload.len() as u64);
            }
            if item.is_final() {
                match (mode.transport, &item) {
                    (Transport::Chunked, _) => out.extend_from_slice(LAST_CHUNK),
                    (Transport::WebSocket, Out::Error(reason, code)) => {
                        ws::encode_close(out, *code, reason)
                    }
                    (Transport::WebSocket, Out::End(code)) => ws::encode_close(out, *code, ""),
                    _ => {}
                }
                ending = true;
                break;
            }
        }
    });
    ending
}

/// The move signal and the end of the stream, in the transport's form (docs/protocol.md §8):
/// chunked, a final chunk (in the stream's codec) and the last chunk; SSE, `event: moved` with
/// the JSON; WebSocket, a close 1012 whose reason is the JSON. A close reason holds 123 bytes:
/// a longer signal goes first as a data frame, and the close reason is then just `moved`.
fn encode_moved(out: &mut Vec<u8>, payload: &mut Vec<u8>, mode: Mode, location: &str) {
    match mode.transport {
        Transport::Chunked => {
            codec::encode_moved(payload, mode.codec, location);
            encode_chunk(out, payload);
            out.extend_from_slice(LAST_CHUNK);
        }
        Transport::Sse => {
            codec::encode_moved(payload, Codec::Json, location);
            out.extend_from_slice(b"event: moved\ndata: ");
            out.extend_from_slice(payload);
            out.extend_from_slice(b"\n\n");
        }
        Transport::WebSocket => {
            codec::encode_moved(payload, Codec::Json, location);
            if payload.len() <= ws::MAX_CLOSE_REASON {
                let reason = std::str::from_utf8(payload).expect("our JSON is UTF-8");
                ws::encode_close(out, close::SERVICE_RESTART, reason);
            } else {
                payload.clear();
                codec::encode_moved(payload, mode.codec, location);
                frame_message(out, mode, payload, None);
                ws::encode_close(out, close::SERVICE_RESTART, "moved");
            }
        }
    }
}

/// Frames one message for the transport: a chunk, a WebSocket data frame, or an SSE event
/// whose `id:` is the seq.
fn frame_message(out: &mut Vec<u8>, mode: Mode, payload: &[u8], seq: Option<u64>) {
    match mode.transport {
        Transport::Chunked => encode_chunk(out, payload),
        Transport::WebSocket => {
            let op = match mode.codec {
                Codec::Json => ws::TEXT,
                Codec::MsgPack => ws::BINARY,
            };
            ws::encode_frame(out, op, payload);
        }
        Transport::Sse => {
            if let Some(s) = seq {
                out.extend_from_slice(b"id: ");
                let mut b = itoa::Buffer::new();
                out.extend_from_slice(b.format(s).as_bytes());
                out.push(b'\n');
            }
            // JSON from our encoders never holds a raw newline.
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(payload);
            out.extend_from_slice(b"\n\n");
        }
    }
}

//! The chunked "comet" stream of one connected user: writes its queue as chunks and reads the
//! client's chunks; one task per stream on the user's core.
//!
//! Memory per idle stream is the point here: the task holds no read buffer while waiting (it
//! reads into a per-core scratch buffer only when the socket is readable), no write buffer and
//! no queue allocation, so an idle stream costs its task, its socket and its `Conn`.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt};
use glommio::net::TcpStream;

use crate::http::chunk::{encode_chunk, parse_chunk, Chunk, LAST_CHUNK};
use crate::http::response::{write_error, write_stream_head};
use crate::protocol::{decode_client_message, encode_error, ClientMessage, MsgType, HEARTBEAT};
use crate::shard::conn::{Conn, Out};
use crate::shard::ids::ShardId;
use crate::shard::msg::Req;
use crate::shard::{encode_msg, AttachError, Shard, DEFAULT_TTL};

/// Bytes coalesced into one write.
const WRITE_BATCH: usize = 64 * 1024;

thread_local! {
    /// Every read of this core lands here first; only an incomplete chunk is copied out.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; 64 * 1024]);
    /// Where one message's JSON is built before it is framed.
    static JSON: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(1024));
}

/// A socket on its owner core whose stream has not started yet.
pub struct NewStream {
    pub stream: TcpStream,
    pub uid: String,
    /// Bytes the client sent after its request head.
    pub leftover: Vec<u8>,
}

/// Starts a stream: registration, 200 head and offline replay run in this (short-lived)
/// task; the stream itself then lives in a task of its own whose state is only `StreamTask`.
pub async fn run(shard: Rc<Shard>, new: Box<NewStream>) {
    if let Some((stream, conn, io)) = open(&shard, new).await {
        glommio::spawn_local(StreamTask {
            shard,
            conn,
            stream,
            io,
            handling: None,
        })
        .detach();
    }
}

/// An open stream's task, written by hand so that its idle state is exactly these fields
/// (an `async fn` would also keep iterators, closures and await slots).
pub struct StreamTask {
    shard: Rc<Shard>,
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
            match this.io.step(cx, &this.shard, &this.conn, &mut this.stream) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Event::Msgs(msgs)) => {
                    let (shard, conn) = (this.shard.clone(), this.conn.clone());
                    this.handling = Some(Box::pin(async move {
                        for m in msgs {
                            handle(&shard, &conn, m).await;
                        }
                    }));
                }
                Poll::Ready(Event::Done) => {
                    if !this.conn.is_aborted() {
                        // glommio's close is a synchronous shutdown(SHUT_WR): ready at once.
                        let _ = Pin::new(&mut this.stream).poll_close(cx);
                    }
                    this.conn.clear_waker();
                    this.shard.detach(&this.conn);
                    return Poll::Ready(());
                }
            }
        }
    }
}

/// Registers the stream, writes the 200 head and replays offline messages.
async fn open(shard: &Rc<Shard>, new: Box<NewStream>) -> Option<(TcpStream, Rc<Conn>, StreamIo)> {
    let NewStream {
        mut stream,
        uid,
        leftover,
    } = *new;
    super::tune_socket(&stream, Duration::from_secs(shard.cfg.heartbeat_interval_s));
    let (conn, after, upto) = match shard.attach(&uid).await {
        Ok(x) => x,
        Err(e) => {
            let status = match e {
                AttachError::Limit | AttachError::Closing => 503,
                AttachError::Storage(_) => 500,
            };
            let mut out = Vec::new();
            write_error(&mut out, status, &e.to_string(), false);
            let _ = stream.write_all(&out).await;
            return None;
        }
    };
    let mut head = Vec::with_capacity(160);
    write_stream_head(&mut head);
    if stream.write_all(&head).await.is_err() {
        conn.clear_waker();
        shard.detach(&conn);
        return None;
    }
    shard.replay(&conn, after, upto).await;
    let io = StreamIo {
        pending_input: !leftover.is_empty(),
        bufs: (!leftover.is_empty()).then(|| {
            Box::new(Bufs {
                inbuf: leftover,
                ..Bufs::default()
            })
        }),
        ending: false,
    };
    Some((stream, conn, io))
}

enum Event {
    Msgs(Vec<ClientMessage>),
    Done,
}

/// What a stream keeps between polls: 16 bytes while idle.
struct StreamIo {
    /// Buffers, allocated only while bytes are in flight.
    bufs: Option<Box<Bufs>>,
    pending_input: bool,
    /// The final chunk is in `out`: stop after writing it.
    ending: bool,
}

#[derive(Default)]
struct Bufs {
    /// Bytes of an incomplete chunk from the client.
    inbuf: Vec<u8>,
    /// Encoded chunks being written.
    out: Vec<u8>,
    written: usize,
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
            .is_some_and(|b| b.inbuf.is_empty() && b.written == b.out.len())
        {
            self.bufs = None;
        }
    }

    fn step(
        &mut self,
        cx: &mut Context<'_>,
        shard: &Shard,
        conn: &Conn,
        stream: &mut TcpStream,
    ) -> Poll<Event> {
        conn.set_waker(cx.waker());
        if conn.is_aborted() {
            return Poll::Ready(Event::Done);
        }
        // Write what is queued, coalesced.
        loop {
            let flushed = self.bufs.as_ref().is_none_or(|b| b.written == b.out.len());
            if flushed {
                if let Some(b) = self.bufs.as_mut() {
                    b.out = Vec::new();
                    b.written = 0;
                }
                if self.ending {
                    return Poll::Ready(Event::Done);
                }
                if conn.is_replaying() || conn.queue_len() == 0 {
                    break;
                }
                self.fill(shard, conn);
            }
            let b = self.bufs();
            match Pin::new(&mut *stream).poll_write(cx, &b.out[b.written..]) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(Event::Done),
                Poll::Ready(Ok(n)) => {
                    b.written += n;
                    conn.last_send.set(shard.clock());
                }
                Poll::Pending => break,
            }
        }
        if self.ending || conn.is_ending() {
            // Reading stops once the stream is ending; only the final write remains.
            self.release();
            return Poll::Pending;
        }
        // Read what the client sent.
        let mut msgs = Vec::new();
        if self.pending_input {
            self.pending_input = false;
            let data = std::mem::take(&mut self.bufs().inbuf);
            self.feed(&data, &mut msgs, shard, conn);
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
                        self.feed(&s[..n], &mut msgs, shard, conn);
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

    /// Encodes queued items into the write buffer, up to one write batch.
    fn fill(&mut self, shard: &Shard, conn: &Conn) {
        let mut ending = false;
        let out = &mut self.bufs().out;
        JSON.with(|json| {
            let mut json = json.borrow_mut();
            while out.len() < WRITE_BATCH {
                let Some(item) = conn.pop() else { break };
                json.clear();
                match &item {
                    Out::Msg { body, seq } => encode_msg(&mut json, &conn.uid, body, *seq),
                    Out::Heartbeat => json.extend_from_slice(HEARTBEAT),
                    Out::Error(reason) => encode_error(&mut json, reason),
                    Out::End => {}
                }
                if !json.is_empty() {
                    encode_chunk(out, &json);
                    shard.bump(&shard.stats.send_number);
                    let b = &shard.stats.send_bytes;
                    b.set(b.get() + json.len() as u64);
                }
                if item.is_final() {
                    out.extend_from_slice(LAST_CHUNK);
                    ending = true;
                    break;
                }
            }
        });
        self.ending |= ending;
    }

    /// Takes `data` (read just now) through the chunk decoder.
    fn feed(&mut self, data: &[u8], msgs: &mut Vec<ClientMessage>, shard: &Shard, conn: &Conn) {
        let b = self.bufs();
        if b.inbuf.is_empty() {
            let used = decode(data, msgs, shard, conn);
            if used < data.len() && !conn.is_ending() {
                b.inbuf.extend_from_slice(&data[used..]);
            }
        } else {
            b.inbuf.extend_from_slice(data);
            let used = decode(&b.inbuf, msgs, shard, conn);
            b.inbuf.drain(..used);
            if b.inbuf.is_empty() {
                b.inbuf = Vec::new();
            }
        }
    }
}

/// Decodes whole chunks from `buf` into messages; returns the bytes used. Bad input ends the
/// stream (with its reason) and only this stream.
fn decode(buf: &[u8], msgs: &mut Vec<ClientMessage>, shard: &Shard, conn: &Conn) -> usize {
    let max = shard.cfg.max_message_bytes;
    let mut pos = 0;
    while pos < buf.len() {
        match parse_chunk(&buf[pos..], max) {
            Ok(None) => break,
            Ok(Some((Chunk::End, used))) => {
                pos += used;
                conn.finish(None);
                break;
            }
            Ok(Some((Chunk::Data(payload), used))) => {
                pos += used;
                shard.bump(&shard.stats.recv_number);
                let b = &shard.stats.recv_bytes;
                b.set(b.get() + payload.len() as u64);
                match decode_client_message(payload) {
                    Ok(m) => msgs.push(m),
                    Err(e) => {
                        shard.bump(&shard.stats.bad_request);
                        conn.finish(Some(&e.to_string()));
                        break;
                    }
                }
            }
            Err(e) => {
                shard.bump(&shard.stats.bad_request);
                conn.finish(Some(e.reason()));
                break;
            }
        }
    }
    pos
}

/// Acts on one client message. `f` is always the stream's own uid, whatever the client wrote.
async fn handle(shard: &Rc<Shard>, conn: &Rc<Conn>, m: ClientMessage) {
    let uid = &conn.uid;
    let stats = &shard.stats;
    let res = match m.y {
        Some(MsgType::Heartbeat) => {
            shard.bump(&stats.recv_hb);
            shard.push(conn, Out::Heartbeat);
            Ok(())
        }
        Some(MsgType::Subscribe) => {
            shard.bump(&stats.recv_sub);
            shard.subscribe(uid, &m.c.unwrap_or_default(), true).await
        }
        Some(MsgType::Unsubscribe) => {
            shard.bump(&stats.recv_unsub);
            shard.subscribe(uid, &m.c.unwrap_or_default(), false).await
        }
        Some(MsgType::User) => {
            shard.bump(&stats.recv_msg);
            let to = m.t.unwrap_or_default();
            let req = Req::PubUser {
                to: to.clone(),
                from: uid.to_string(),
                body: m.b.unwrap_or_default(),
                ttl: DEFAULT_TTL,
            };
            shard.cast(shard.owner(&to), req).await;
            Ok(())
        }
        Some(MsgType::Channel) => {
            shard.bump(&stats.recv_cmsg);
            let req = Req::PubChannel {
                channel: m.c.unwrap_or_default(),
                from: uid.to_string(),
                body: m.b.unwrap_or_default(),
                ttl: DEFAULT_TTL,
            };
            for core in 0..shard.cores {
                shard.cast(ShardId(core), req.clone()).await;
            }
            Ok(())
        }
        Some(MsgType::Ack) => {
            shard.bump(&stats.recv_ack);
            shard.ack(uid, m.s.unwrap_or(0)).await
        }
        None => Ok(()),
    };
    if let Err(e) = res {
        tracing::warn!(%uid, error = %e, "client message failed");
    }
}

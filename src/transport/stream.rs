//! The chunked "comet" stream of one connected user: writes its queue as chunks and reads the
//! client's chunks; one task per stream on the user's core.
//!
//! Memory per idle stream is the point here: the task holds no read buffer while waiting (it
//! reads into a per-core scratch buffer only when the socket is readable), no write buffer and
//! no queue allocation, so an idle stream costs its task, its socket and its `Conn`.

use std::cell::RefCell;
use std::future::poll_fn;
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

pub async fn run(shard: Rc<Shard>, mut stream: TcpStream, uid: String, leftover: Vec<u8>) {
    super::tune_socket(&stream, Duration::from_secs(shard.cfg.heartbeat_interval_s));
    let (conn, after, upto) = match Box::pin(shard.attach(&uid)).await {
        Ok(x) => x,
        Err(e) => {
            let status = match e {
                AttachError::Limit | AttachError::Closing => 503,
                AttachError::Storage(_) => 500,
            };
            let mut out = Vec::new();
            write_error(&mut out, status, &e.to_string(), false);
            let _ = stream.write_all(&out).await;
            return;
        }
    };
    drop(uid);
    let mut head = Vec::with_capacity(160);
    write_stream_head(&mut head);
    let ok = stream.write_all(&head).await.is_ok();
    drop(head);
    if ok {
        Box::pin(shard.replay(&conn, after, upto)).await;
        let mut io = StreamIo {
            pending_input: !leftover.is_empty(),
            inbuf: leftover,
            out: Vec::new(),
            written: 0,
            ending: false,
        };
        while let Event::Msgs(msgs) = poll_fn(|cx| io.step(cx, &shard, &conn, &mut stream)).await {
            for m in msgs {
                Box::pin(handle(&shard, &conn, m)).await;
            }
        }
        if !conn.is_aborted() {
            let _ = stream.close().await;
        }
    }
    conn.clear_waker();
    shard.detach(&conn);
}

enum Event {
    Msgs(Vec<ClientMessage>),
    Done,
}

struct StreamIo {
    /// Bytes of an incomplete chunk (empty, unallocated, between messages).
    inbuf: Vec<u8>,
    pending_input: bool,
    /// Encoded chunks being written; freed once written.
    out: Vec<u8>,
    written: usize,
    /// The final chunk is in `out`: stop after writing it.
    ending: bool,
}

impl StreamIo {
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
            if self.written == self.out.len() {
                self.out = Vec::new();
                self.written = 0;
                if self.ending {
                    return Poll::Ready(Event::Done);
                }
                if conn.is_replaying() {
                    break;
                }
                self.fill(shard, conn);
                if self.out.is_empty() {
                    break;
                }
            }
            match Pin::new(&mut *stream).poll_write(cx, &self.out[self.written..]) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(Event::Done),
                Poll::Ready(Ok(n)) => {
                    self.written += n;
                    conn.last_send.set(shard.clock());
                }
                Poll::Pending => break,
            }
        }
        if self.ending || conn.is_ending() {
            // Reading stops once the stream is ending; only the final write remains.
            return Poll::Pending;
        }
        // Read what the client sent.
        let mut msgs = Vec::new();
        if self.pending_input {
            self.pending_input = false;
            let data = std::mem::take(&mut self.inbuf);
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
        if !msgs.is_empty() {
            return Poll::Ready(Event::Msgs(msgs));
        }
        Poll::Pending
    }

    /// Encodes queued items into `out`, up to one write batch.
    fn fill(&mut self, shard: &Shard, conn: &Conn) {
        JSON.with(|json| {
            let mut json = json.borrow_mut();
            while self.out.len() < WRITE_BATCH {
                let Some(item) = conn.pop() else { break };
                json.clear();
                match &item {
                    Out::Msg { body, seq } => encode_msg(&mut json, &conn.uid, body, *seq),
                    Out::Heartbeat => json.extend_from_slice(HEARTBEAT),
                    Out::Error(reason) => encode_error(&mut json, reason),
                    Out::End => {}
                }
                if !json.is_empty() {
                    encode_chunk(&mut self.out, &json);
                    shard.bump(&shard.stats.send_number);
                    let b = &shard.stats.send_bytes;
                    b.set(b.get() + json.len() as u64);
                }
                if item.is_final() {
                    self.out.extend_from_slice(LAST_CHUNK);
                    self.ending = true;
                    break;
                }
            }
        });
    }

    /// Takes `data` (read just now) through the chunk decoder.
    fn feed(&mut self, data: &[u8], msgs: &mut Vec<ClientMessage>, shard: &Shard, conn: &Conn) {
        if self.inbuf.is_empty() {
            let used = decode(data, msgs, shard, conn);
            if used < data.len() && !conn.is_ending() {
                self.inbuf.extend_from_slice(&data[used..]);
            }
        } else {
            self.inbuf.extend_from_slice(data);
            let used = decode(&self.inbuf, msgs, shard, conn);
            self.inbuf.drain(..used);
            if self.inbuf.is_empty() {
                self.inbuf = Vec::new();
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

//! The three stream transports of `/connect` (chunked, WebSocket, server-sent events)
//! and the two codecs: request building, and incremental counters for WebSocket frames
//! and SSE events (the chunked one is [`crate::http::ChunkCounter`]). Pure code, unit
//! tested at every split point like the chunk counter.

use crate::http::{ChunkCounter, Counts, StreamStatus};

/// How the stream is carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// `200` + `Transfer-Encoding: chunked`, one chunk per message.
    Chunked,
    /// `101 Switching Protocols`, one WebSocket data frame per message.
    Ws,
    /// `200` + `Content-Type: text/event-stream`, one event per message.
    Sse,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Chunked => "chunked",
            Transport::Ws => "ws",
            Transport::Sse => "sse",
        }
    }
}

/// How each message is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Codec {
    Json,
    /// `&codec=msgpack`; chunked and WebSocket only.
    Msgpack,
}

impl Codec {
    pub fn name(self) -> &'static str {
        match self {
            Codec::Json => "json",
            Codec::Msgpack => "msgpack",
        }
    }

    /// The server's heartbeat `{"y":0}` in this codec.
    pub fn heartbeat(self) -> &'static [u8] {
        match self {
            Codec::Json => b"{\"y\":0}",
            // fixmap(1), fixstr "y", positive fixint 0
            Codec::Msgpack => &[0x81, 0xa1, b'y', 0x00],
        }
    }
}

/// The request that opens a stream. `ws_key` is the `Sec-WebSocket-Key` (only used for
/// [`Transport::Ws`]); it must be the same every time a connection's request is rebuilt.
pub fn connect_request(
    path_and_query: &str,
    host: &str,
    transport: Transport,
    ws_key: &str,
) -> Vec<u8> {
    let extra = match transport {
        Transport::Chunked => String::new(),
        Transport::Ws => format!(
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {ws_key}\r\n"
        ),
        Transport::Sse => "Accept: text/event-stream\r\n".to_string(),
    };
    format!("GET {path_and_query} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n").into_bytes()
}

/// A `Sec-WebSocket-Key`: base64 of 16 bytes derived from `seed` and the connection index
/// (splitmix64), so a rebuilt request carries the same key.
pub fn ws_key(seed: u64, i: u64) -> String {
    let mut s = seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut bytes = [0u8; 16];
    for half in bytes.chunks_mut(8) {
        half.copy_from_slice(&splitmix64(&mut s).to_le_bytes());
    }
    base64(&bytes)
}

fn splitmix64(s: &mut u64) -> u64 {
    *s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *s;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Standard base64 with padding.
pub fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for k in 0..4 {
            if k <= c.len() {
                out.push(A[(n >> (18 - 6 * k)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Per-connection message counter for the chosen transport.
#[derive(Debug, Clone, Copy)]
pub enum Counter {
    Chunked(ChunkCounter),
    Ws(WsCounter),
    Sse(SseCounter),
}

impl Counter {
    pub fn new(t: Transport) -> Self {
        match t {
            Transport::Chunked => Counter::Chunked(ChunkCounter::new()),
            Transport::Ws => Counter::Ws(WsCounter::new()),
            Transport::Sse => Counter::Sse(SseCounter::new()),
        }
    }

    /// Feed received bytes; `hb` is the heartbeat payload to recognise.
    pub fn feed(&mut self, buf: &[u8], hb: &[u8], counts: &mut Counts) -> StreamStatus {
        match self {
            Counter::Chunked(c) => c.feed_with(buf, hb, counts),
            Counter::Ws(c) => c.feed(buf, hb, counts),
            Counter::Sse(c) => c.feed(buf, hb, counts),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WsSt {
    /// First header byte: FIN, RSV, opcode.
    B0,
    /// Second header byte: MASK, 7-bit length.
    B1,
    /// Extended length bytes (2 or 8, big endian).
    Ext,
    /// Masking key bytes (4); only a misbehaving server sends them.
    Mask,
    /// Payload bytes, skipped (only compared against the heartbeat).
    Payload,
    /// Close frame seen.
    End,
    Bad,
}

const TEXT: u8 = 1;
const BINARY: u8 = 2;
const CONT: u8 = 0;
const CLOSE: u8 = 8;

/// Incremental WebSocket frame counter for server-to-client frames: parses each 2-14 byte
/// header, skips the payload, counts complete data messages (heartbeats among them) and
/// the close frame. A masked server frame, RSV bits (no extension is negotiated), a
/// reserved opcode, a fragmented or oversized control frame, a continuation without a
/// start or a new message inside a fragmented one are protocol errors ([`StreamStatus::Bad`]).
#[derive(Debug, Clone, Copy)]
pub struct WsCounter {
    remaining: u64,
    st: WsSt,
    /// First header byte of the current frame.
    b0: u8,
    /// Header bytes still to come in `Ext` / `Mask`.
    left: u8,
    /// Heartbeat match position in the current payload; 0xff = no match.
    hb: u8,
    /// Inside a fragmented data message.
    frag: bool,
    /// The current frame is masked (a protocol error once the header is complete).
    masked: bool,
}

impl Default for WsCounter {
    fn default() -> Self {
        Self::new()
    }
}

impl WsCounter {
    pub fn new() -> Self {
        WsCounter {
            remaining: 0,
            st: WsSt::B0,
            b0: 0,
            left: 0,
            hb: 0xff,
            frag: false,
            masked: false,
        }
    }

    pub fn status(&self) -> StreamStatus {
        match self.st {
            WsSt::End => StreamStatus::Ended,
            WsSt::Bad => StreamStatus::Bad,
            _ => StreamStatus::Open,
        }
    }

    fn opcode(&self) -> u8 {
        self.b0 & 0x0f
    }

    fn fin(&self) -> bool {
        self.b0 & 0x80 != 0
    }

    /// Header complete: check it, then payload (or straight to the frame's end).
    fn header_done(&mut self, hb: &[u8], counts: &mut Counts) {
        if self.masked {
            self.st = WsSt::Bad;
            return;
        }
        let op = self.opcode();
        self.hb = if self.fin() && (op == TEXT || op == BINARY) && self.remaining == hb.len() as u64
        {
            0
        } else {
            0xff
        };
        self.st = WsSt::Payload;
        if self.remaining == 0 {
            self.frame_done(hb, counts);
        }
    }

    fn frame_done(&mut self, hb: &[u8], counts: &mut Counts) {
        self.st = WsSt::B0;
        match self.opcode() {
            CONT | TEXT | BINARY => {
                if self.fin() {
                    counts.messages += 1;
                    if self.hb != 0xff && self.hb as usize == hb.len() {
                        counts.heartbeats += 1;
                    }
                    self.frag = false;
                } else {
                    self.frag = true;
                }
            }
            CLOSE => {
                counts.closes += 1;
                self.st = WsSt::End;
            }
            _ => {} // ping / pong
        }
    }

    /// Feed bytes; complete messages and a close frame are added to `counts`.
    pub fn feed(&mut self, mut buf: &[u8], hb: &[u8], counts: &mut Counts) -> StreamStatus {
        while !buf.is_empty() {
            match self.st {
                WsSt::End | WsSt::Bad => break,
                WsSt::B0 => {
                    let b = buf[0];
                    buf = &buf[1..];
                    self.b0 = b;
                    let op = b & 0x0f;
                    let ok = b & 0x70 == 0
                        && match op {
                            CONT => self.frag,
                            TEXT | BINARY => !self.frag,
                            8..=10 => b & 0x80 != 0,
                            _ => false,
                        };
                    self.st = if ok { WsSt::B1 } else { WsSt::Bad };
                }
                WsSt::B1 => {
                    let b = buf[0];
                    buf = &buf[1..];
                    self.masked = b & 0x80 != 0;
                    let len7 = b & 0x7f;
                    if self.opcode() >= 8 && len7 > 125 {
                        self.st = WsSt::Bad;
                        continue;
                    }
                    self.remaining = 0;
                    match len7 {
                        126 | 127 => {
                            self.left = if len7 == 126 { 2 } else { 8 };
                            self.st = WsSt::Ext;
                        }
                        n => {
                            self.remaining = n as u64;
                            self.after_len(hb, counts);
                        }
                    }
                }
                WsSt::Ext => {
                    let b = buf[0];
                    buf = &buf[1..];
                    if self.left == 8 && b & 0x80 != 0 {
                        // The most significant bit of a 64-bit length must be 0.
                        self.st = WsSt::Bad;
                        continue;
                    }
                    self.remaining = self.remaining << 8 | b as u64;
                    self.left -= 1;
                    if self.left == 0 {
                        self.after_len(hb, counts);
                    }
                }
                WsSt::Mask => {
                    let n = (self.left as usize).min(buf.len());
                    buf = &buf[n..];
                    self.left -= n as u8;
                    if self.left == 0 {
                        self.header_done(hb, counts);
                    }
                }
                WsSt::Payload => {
                    let n = self.remaining.min(buf.len() as u64) as usize;
                    if self.hb != 0xff {
                        for &b in &buf[..n] {
                            if hb.get(self.hb as usize) == Some(&b) {
                                self.hb += 1;
                            } else {
                                self.hb = 0xff;
                                break;
                            }
                        }
                    }
                    buf = &buf[n..];
                    self.remaining -= n as u64;
                    if self.remaining == 0 {
                        self.frame_done(hb, counts);
                    }
                }
            }
        }
        self.status()
    }

    /// Length known: the masking key next, or the header is complete.
    fn after_len(&mut self, hb: &[u8], counts: &mut Counts) {
        if self.masked {
            self.left = 4;
            self.st = WsSt::Mask;
        } else {
            self.header_done(hb, counts);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SseLine {
    /// Matched this many bytes of `data` at the start of the line (0 = line start).
    Name(u8),
    /// Right after `data:` (one optional space is dropped).
    ValStart,
    /// Inside a data value.
    Val,
    /// Another field or a comment; skipped to the end of the line.
    Skip,
}

/// Incremental server-sent-events counter: counts events (blank-line-terminated blocks
/// that carry at least one `data` field, the ones a browser dispatches), and heartbeats
/// among them (a single `data` line equal to the heartbeat). Accepts CRLF, LF and CR line
/// ends. Never fails; the stream ends only with the connection.
#[derive(Debug, Clone, Copy)]
pub struct SseCounter {
    line: SseLine,
    /// The previous byte was CR (a following LF belongs to it).
    after_cr: bool,
    /// The event so far has a data field.
    has_data: bool,
    /// The event so far is exactly one heartbeat data line.
    is_hb: bool,
    /// Heartbeat match position in the current data value; 0xff = no match.
    hb: u8,
}

impl Default for SseCounter {
    fn default() -> Self {
        Self::new()
    }
}

impl SseCounter {
    pub fn new() -> Self {
        SseCounter {
            line: SseLine::Name(0),
            after_cr: false,
            has_data: false,
            is_hb: false,
            hb: 0,
        }
    }

    fn end_line(&mut self, hb: &[u8], counts: &mut Counts) {
        match self.line {
            SseLine::Name(0) => {
                if self.has_data {
                    counts.messages += 1;
                    if self.is_hb {
                        counts.heartbeats += 1;
                    }
                }
                self.has_data = false;
                self.is_hb = false;
            }
            // `data` alone is a data field with an empty value.
            SseLine::Name(4) | SseLine::ValStart | SseLine::Val => {
                let line_hb = self.line != SseLine::Name(4)
                    && self.hb != 0xff
                    && self.hb as usize == hb.len();
                self.is_hb = !self.has_data && line_hb;
                self.has_data = true;
            }
            _ => {}
        }
        self.line = SseLine::Name(0);
    }

    fn match_hb(&mut self, b: u8, hb: &[u8]) {
        if self.hb != 0xff {
            if hb.get(self.hb as usize) == Some(&b) {
                self.hb += 1;
            } else {
                self.hb = 0xff;
            }
        }
    }

    /// Feed bytes; complete events are added to `counts`.
    pub fn feed(&mut self, buf: &[u8], hb: &[u8], counts: &mut Counts) -> StreamStatus {
        for &b in buf {
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            if b == b'\n' || b == b'\r' {
                self.after_cr = b == b'\r';
                self.end_line(hb, counts);
                continue;
            }
            self.line = match self.line {
                SseLine::Name(k) if k < 4 && b == b"data"[k as usize] => SseLine::Name(k + 1),
                SseLine::Name(4) if b == b':' => {
                    self.hb = 0;
                    SseLine::ValStart
                }
                SseLine::Name(_) => SseLine::Skip,
                SseLine::ValStart if b == b' ' => SseLine::Val,
                SseLine::ValStart | SseLine::Val => {
                    self.match_hb(b, hb);
                    SseLine::Val
                }
                SseLine::Skip => SseLine::Skip,
            };
        }
        StreamStatus::Open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HB: &[u8] = b"{\"y\":0}";

    fn counts(messages: u64, heartbeats: u64, closes: u64) -> Counts {
        Counts {
            messages,
            heartbeats,
            closes,
        }
    }

    /// Feeds `s` split into three pieces at every pair of points and checks the result.
    fn every_split<C: Copy>(
        fresh: C,
        feed: impl Fn(&mut C, &[u8], &mut Counts) -> StreamStatus,
        s: &[u8],
        want: Counts,
        status: StreamStatus,
    ) {
        for i in 0..=s.len() {
            for j in i..=s.len() {
                let mut c = fresh;
                let mut n = Counts::default();
                feed(&mut c, &s[..i], &mut n);
                feed(&mut c, &s[i..j], &mut n);
                assert_eq!(feed(&mut c, &s[j..], &mut n), status, "split at {i},{j}");
                assert_eq!(n, want, "split at {i},{j}");
            }
        }
    }

    fn frame(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![b0];
        let n = payload.len();
        if n < 126 {
            f.push(n as u8);
        } else if n < 65536 {
            f.push(126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            f.push(127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
        f.extend_from_slice(payload);
        f
    }

    fn ws_stream() -> Vec<u8> {
        let mut s = Vec::new();
        s.extend(frame(0x81, HB)); // heartbeat
        s.extend(frame(0x81, br#"{"y":3,"f":"op","t":"u1","b":"hi","s":1}"#));
        s.extend(frame(0x81, b"{\"y\":5}")); // heartbeat length, not one
        s.extend(frame(0x89, b"ping")); // control: not a message
        s.extend(frame(0x81, &[b'x'; 300])); // 16-bit length
        s.extend(frame(0x01, b"{\"y\"")); // fragmented heartbeat: a message, not a heartbeat
        s.extend(frame(0x8a, b"")); // pong between fragments
        s.extend(frame(0x80, b":0}"));
        s.extend(frame(0x81, b"")); // empty message
        s.extend(frame(0x81, HB));
        s
    }

    #[test]
    fn ws_whole_and_close() {
        let s = ws_stream();
        let mut c = WsCounter::new();
        let mut n = Counts::default();
        assert_eq!(c.feed(&s, HB, &mut n), StreamStatus::Open);
        assert_eq!(n, counts(7, 2, 0));
        let close = frame(0x88, &[0x03, 0xe8, b'b', b'y', b'e']);
        assert_eq!(c.feed(&close, HB, &mut n), StreamStatus::Ended);
        assert_eq!(n, counts(7, 2, 1));
        // Nothing after the close is read.
        assert_eq!(c.feed(&frame(0x81, HB), HB, &mut n), StreamStatus::Ended);
        assert_eq!(n, counts(7, 2, 1));
    }

    #[test]
    fn ws_split_at_every_boundary() {
        let mut s = ws_stream();
        every_split(
            WsCounter::new(),
            |c, b, n| c.feed(b, HB, n),
            &s,
            counts(7, 2, 0),
            StreamStatus::Open,
        );
        s.extend(frame(0x88, &[0x03, 0xe8]));
        every_split(
            WsCounter::new(),
            |c, b, n| c.feed(b, HB, n),
            &s,
            counts(7, 2, 1),
            StreamStatus::Ended,
        );
    }

    #[test]
    fn ws_64_bit_length_and_msgpack_heartbeat() {
        let mhb = Codec::Msgpack.heartbeat();
        let mut s = frame(0x82, &vec![7u8; 70_000]);
        assert_eq!(s[1], 127);
        s.extend(frame(0x82, mhb));
        s.extend(frame(0x81, HB)); // a JSON heartbeat is not a msgpack one
        let mut c = WsCounter::new();
        let mut n = Counts::default();
        for piece in s.chunks(977) {
            assert_eq!(c.feed(piece, mhb, &mut n), StreamStatus::Open);
        }
        assert_eq!(n, counts(3, 1, 0));
    }

    #[test]
    fn ws_byte_by_byte_counts_only_complete_frames() {
        let s = ws_stream();
        let mut c = WsCounter::new();
        let mut n = Counts::default();
        for (k, b) in s.iter().enumerate() {
            c.feed(std::slice::from_ref(b), HB, &mut n);
            let mut c2 = WsCounter::new();
            let mut n2 = Counts::default();
            c2.feed(&s[..=k], HB, &mut n2);
            assert_eq!(n, n2, "at {k}");
        }
        assert_eq!(n, counts(7, 2, 0));
    }

    #[test]
    fn ws_masked_frame_is_bad_after_its_header() {
        // 2 + 8 + 4 = 14-byte header.
        let mut s = vec![0x82, 0x80 | 127];
        s.extend_from_slice(&5u64.to_be_bytes());
        s.extend_from_slice(&[1, 2, 3]);
        let mut c = WsCounter::new();
        let mut n = Counts::default();
        assert_eq!(c.feed(&s, HB, &mut n), StreamStatus::Open);
        assert_eq!(c.feed(&[4], HB, &mut n), StreamStatus::Bad);
        assert_eq!(n, Counts::default());
    }

    #[test]
    fn ws_bad() {
        let mut big_len = vec![0x82, 127];
        big_len.extend_from_slice(&u64::MAX.to_be_bytes());
        for bad in [
            vec![0xc1, 0x00],       // RSV1 without an extension
            vec![0x83, 0x00],       // reserved data opcode
            vec![0x8b, 0x00],       // reserved control opcode
            vec![0x80, 0x00],       // continuation without a start
            vec![0x09, 0x00],       // fragmented ping
            vec![0x88, 126, 0, 0],  // control frame over 125 bytes
            vec![0x01, 0x00, 0x81], // new message inside a fragmented one
            big_len,
            b"HTTP/1.1 200 OK\r\n".to_vec(),
        ] {
            let mut c = WsCounter::new();
            let mut n = Counts::default();
            assert_eq!(c.feed(&bad, HB, &mut n), StreamStatus::Bad, "{bad:?}");
            assert_eq!(n.messages, 0);
        }
    }

    fn sse_stream() -> Vec<u8> {
        let mut s = Vec::new();
        s.extend_from_slice(b"data: {\"y\":0}\n\n"); // heartbeat
        s.extend_from_slice(b"id: 1\ndata: {\"y\":3,\"b\":\"hi\",\"s\":1}\n\n");
        s.extend_from_slice(b": comment only, not an event\n\n");
        s.extend_from_slice(b"retry: 1000\n\n"); // no data: not dispatched
        s.extend_from_slice(b"data:{\"y\":0}\r\n\r\n"); // no space, CRLF: heartbeat
        s.extend_from_slice(b"data: {\"y\":0}\rdata: x\r\r"); // two data lines, CR: not one
        s.extend_from_slice(b"data: {\"y\":5}\n\n");
        s.extend_from_slice(b"data\n\n"); // empty data field: an event
        s.extend_from_slice(b"database: x\ndat: y\n\n"); // other fields: not an event
        s.extend_from_slice(b"id: 9\r\ndata:  {\"y\":0}\r\n\r\n"); // two spaces: not a heartbeat
        s.extend_from_slice(b"data: {\"y\":0}\n\n");
        s
    }

    #[test]
    fn sse_whole() {
        let mut c = SseCounter::new();
        let mut n = Counts::default();
        assert_eq!(c.feed(&sse_stream(), HB, &mut n), StreamStatus::Open);
        assert_eq!(n, counts(8, 3, 0));
        // An event is counted only at its blank line.
        c.feed(b"data: {\"y\":0}\n", HB, &mut n);
        assert_eq!(n.messages, 8);
        c.feed(b"\n", HB, &mut n);
        assert_eq!(n, counts(9, 4, 0));
    }

    #[test]
    fn sse_split_at_every_boundary() {
        every_split(
            SseCounter::new(),
            |c, b, n| c.feed(b, HB, n),
            &sse_stream(),
            counts(8, 3, 0),
            StreamStatus::Open,
        );
    }

    #[test]
    fn sse_crlf_split_between_cr_and_lf() {
        let mut c = SseCounter::new();
        let mut n = Counts::default();
        for piece in [&b"data: a\r"[..], b"\n", b"\r", b"\n"] {
            c.feed(piece, HB, &mut n);
        }
        assert_eq!(n.messages, 1);
    }

    #[test]
    fn counters_through_the_enum() {
        let mut n = Counts::default();
        let mut c = Counter::new(Transport::Chunked);
        c.feed(b"7\r\n{\"y\":0}\r\n", HB, &mut n);
        let mut w = Counter::new(Transport::Ws);
        w.feed(&frame(0x81, HB), HB, &mut n);
        let mut e = Counter::new(Transport::Sse);
        e.feed(b"data: {\"y\":0}\n\n", HB, &mut n);
        assert_eq!(n, counts(3, 3, 0));
        assert!(std::mem::size_of::<Counter>() <= 24);
    }

    #[test]
    fn requests() {
        let r = connect_request("/connect?uid=a&password=b", "h:1", Transport::Chunked, "");
        assert_eq!(
            r,
            b"GET /connect?uid=a&password=b HTTP/1.1\r\nHost: h:1\r\n\r\n"
        );
        let key = ws_key(1, 2);
        let r = String::from_utf8(connect_request("/c", "h:1", Transport::Ws, &key)).unwrap();
        assert!(r.starts_with("GET /c HTTP/1.1\r\nHost: h:1\r\n"), "{r}");
        assert!(r.contains("\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"));
        assert!(r.contains("\r\nSec-WebSocket-Version: 13\r\n"));
        assert!(r.ends_with(&format!("Sec-WebSocket-Key: {key}\r\n\r\n")));
        let r = connect_request("/c", "h:1", Transport::Sse, "");
        assert_eq!(
            r,
            b"GET /c HTTP/1.1\r\nHost: h:1\r\nAccept: text/event-stream\r\n\r\n"
        );
    }

    #[test]
    fn keys() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        // The RFC 6455 example nonce.
        assert_eq!(base64(b"the sample nonce"), "dGhlIHNhbXBsZSBub25jZQ==");
        let k = ws_key(7, 1);
        assert_eq!(k.len(), 24);
        assert!(k.ends_with("=="));
        assert_eq!(k, ws_key(7, 1));
        assert_ne!(k, ws_key(7, 2));
        assert_ne!(k, ws_key(8, 1));
    }
}

//! Pure pieces of the message scenarios (`fanout`, `unicast`, `chat`): a stream decoder
//! that yields each message's payload (chunked, WebSocket, or newline-separated raw
//! streams such as nchan's `http-raw-stream` and Centrifugo's `uni_http_stream`), a small
//! JSON field scanner for ipush messages and for Centrifugo's pushes, the move signal of the
//! dynamic cluster, a stream's recent seqs (to check a replay after a move), the
//! `lt:<n>:<unix_nanos>` body, URL templates and admin-response parsing. Nothing here touches
//! sockets; all of it is unit tested.

use std::borrow::Cow;
use std::collections::VecDeque;

/// How messages are framed on a subscriber stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// One HTTP chunk per message (ipush's chunked stream).
    Chunked,
    /// One WebSocket data message per message.
    Ws,
    /// The body (dechunked first when the head said `chunked`) split on `\n`
    /// (nchan's `http-raw-stream` subscriber).
    Lines,
}

/// Incremental decoder of one subscriber stream's body.
#[derive(Debug)]
pub struct Decoder {
    framing: Framing,
    /// For [`Framing::Lines`]: the body itself is chunked.
    body_chunked: bool,
    buf: Vec<u8>,
    /// Dechunked body bytes (Lines over a chunked body).
    lines: Vec<u8>,
    /// Fragmented WebSocket message so far.
    frag: Vec<u8>,
    /// Payload of the WebSocket close frame that ended the stream (code, reason).
    close: Option<Vec<u8>>,
    ended: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    BadChunk,
    BadFrame,
    TooLarge,
}

/// Largest message accepted.
pub const MAX_MSG: usize = 16 << 20;

impl Decoder {
    pub fn new(framing: Framing, body_chunked: bool) -> Self {
        Decoder {
            framing,
            body_chunked,
            buf: Vec::new(),
            lines: Vec::new(),
            frag: Vec::new(),
            close: None,
            ended: false,
        }
    }

    /// The payload of the WebSocket close frame that ended the stream, if one did.
    pub fn close_payload(&self) -> Option<&[u8]> {
        self.close.as_deref()
    }

    /// Feed bytes; calls `out` with each complete message payload. Returns whether the
    /// stream ended (terminating chunk, WebSocket close).
    pub fn feed(&mut self, data: &[u8], out: &mut dyn FnMut(&[u8])) -> Result<bool, DecodeError> {
        if self.ended {
            return Ok(true);
        }
        // Fast path: nothing buffered, parse straight from `data`.
        let owned;
        let input: &[u8] = if self.buf.is_empty() {
            data
        } else {
            self.buf.extend_from_slice(data);
            owned = std::mem::take(&mut self.buf);
            &owned
        };
        let used = match self.framing {
            Framing::Chunked => {
                let (used, end) = parse_chunks(input, out)?;
                self.ended = end;
                used
            }
            Framing::Ws => self.parse_ws(input, out)?,
            Framing::Lines => {
                if self.body_chunked {
                    let mut lines = std::mem::take(&mut self.lines);
                    let (used, end) = parse_chunks(input, &mut |p| lines.extend_from_slice(p))?;
                    self.ended = end;
                    let k = split_lines(&lines, out);
                    lines.drain(..k);
                    if lines.len() > MAX_MSG {
                        return Err(DecodeError::TooLarge);
                    }
                    self.lines = lines;
                    used
                } else {
                    split_lines(input, out)
                }
            }
        };
        let rest = &input[used..];
        if rest.len() > MAX_MSG + 16 {
            return Err(DecodeError::TooLarge);
        }
        if !rest.is_empty() && !self.ended {
            let mut b = Vec::with_capacity(rest.len().max(256));
            b.extend_from_slice(rest);
            self.buf = b;
        }
        Ok(self.ended)
    }

    fn parse_ws(&mut self, input: &[u8], out: &mut dyn FnMut(&[u8])) -> Result<usize, DecodeError> {
        let mut pos = 0;
        loop {
            let b = &input[pos..];
            if b.len() < 2 {
                return Ok(pos);
            }
            let fin = b[0] & 0x80 != 0;
            let op = b[0] & 0x0f;
            let masked = b[1] & 0x80 != 0;
            let mut hl = 2usize;
            let mut len = (b[1] & 0x7f) as u64;
            if len == 126 {
                if b.len() < 4 {
                    return Ok(pos);
                }
                len = u16::from_be_bytes([b[2], b[3]]) as u64;
                hl = 4;
            } else if len == 127 {
                if b.len() < 10 {
                    return Ok(pos);
                }
                len = u64::from_be_bytes(b[2..10].try_into().expect("8 bytes"));
                hl = 10;
            }
            if len > MAX_MSG as u64 {
                return Err(DecodeError::TooLarge);
            }
            let mask_at = hl;
            if masked {
                hl += 4;
            }
            let total = hl + len as usize;
            if b.len() < total {
                return Ok(pos);
            }
            let mut payload = Cow::Borrowed(&b[hl..total]);
            if masked {
                let key = &b[mask_at..mask_at + 4];
                payload = Cow::Owned(
                    payload
                        .iter()
                        .enumerate()
                        .map(|(i, x)| x ^ key[i & 3])
                        .collect(),
                );
            }
            pos += total;
            match op {
                0 => {
                    self.frag.extend_from_slice(&payload);
                    if fin {
                        let m = std::mem::take(&mut self.frag);
                        out(&m);
                    }
                }
                1 | 2 => {
                    if fin {
                        out(&payload);
                    } else {
                        self.frag.clear();
                        self.frag.extend_from_slice(&payload);
                    }
                }
                8 => {
                    self.close = Some(payload.into_owned());
                    self.ended = true;
                    return Ok(pos);
                }
                9 | 10 => {}
                _ => return Err(DecodeError::BadFrame),
            }
        }
    }
}

/// Parse complete chunks from `input`; returns (bytes used, terminating chunk seen).
fn parse_chunks(input: &[u8], out: &mut dyn FnMut(&[u8])) -> Result<(usize, bool), DecodeError> {
    let mut pos = 0;
    loop {
        let b = &input[pos..];
        let line_end = match b.iter().position(|&c| c == b'\n') {
            Some(i) => i,
            None => {
                if b.len() > 64 {
                    return Err(DecodeError::BadChunk);
                }
                return Ok((pos, false));
            }
        };
        if line_end == 0 || b[line_end - 1] != b'\r' {
            return Err(DecodeError::BadChunk);
        }
        let line = &b[..line_end - 1];
        let hex = match line.iter().position(|&c| c == b';') {
            Some(i) => &line[..i],
            None => line,
        };
        let hex = trim(hex);
        if hex.is_empty() || hex.len() > 15 {
            return Err(DecodeError::BadChunk);
        }
        let mut size = 0usize;
        for &c in hex {
            let d = (c as char).to_digit(16).ok_or(DecodeError::BadChunk)? as usize;
            size = size * 16 + d;
        }
        if size > MAX_MSG {
            return Err(DecodeError::TooLarge);
        }
        let start = line_end + 1;
        if size == 0 {
            // Position after the zero-size line (trailers follow).
            return Ok((pos + start, true));
        }
        if b.len() < start + size + 2 {
            return Ok((pos, false));
        }
        if &b[start + size..start + size + 2] != b"\r\n" {
            return Err(DecodeError::BadChunk);
        }
        out(&b[start..start + size]);
        pos += start + size + 2;
    }
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Emit every complete `\n`-terminated line (without `\r\n`/`\n`; empty lines skipped);
/// returns bytes used.
fn split_lines(input: &[u8], out: &mut dyn FnMut(&[u8])) -> usize {
    let mut pos = 0;
    while let Some(i) = input[pos..].iter().position(|&c| c == b'\n') {
        let mut line = &input[pos..pos + i];
        if let [rest @ .., b'\r'] = line {
            line = rest;
        }
        if !line.is_empty() {
            out(line);
        }
        pos += i + 1;
    }
    pos
}

/// The fields of an ipush message the checks need.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Msg<'a> {
    pub y: Option<i64>,
    pub s: Option<u64>,
    pub f: Option<Cow<'a, str>>,
    pub t: Option<Cow<'a, str>>,
    pub c: Option<Cow<'a, str>>,
    pub b: Option<Cow<'a, str>>,
    pub error: Option<Cow<'a, str>>,
    /// Where to reconnect, with `"error":"moved"`.
    pub location: Option<Cow<'a, str>>,
}

/// Scan a flat JSON object for the message keys. Strings without escapes are borrowed;
/// anything unusual falls back to serde_json. `None` = not a JSON object.
pub fn scan_msg(p: &[u8]) -> Option<Msg<'_>> {
    match fast_scan(p) {
        Some(m) => Some(m),
        None => slow_scan(p),
    }
}

fn fast_scan(p: &[u8]) -> Option<Msg<'_>> {
    // One UTF-8 check for the whole payload (once per received message: per field it was
    // ~10% of the loadtest's CPU in a 1M msgs/s fan-out); every slice taken below starts and
    // ends next to an ASCII byte, so it is a char boundary.
    let text = std::str::from_utf8(p).ok()?;
    let mut m = Msg::default();
    let mut i = skip_ws(p, 0);
    if p.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_ws(p, i + 1);
    if p.get(i) == Some(&b'}') {
        return Some(m);
    }
    loop {
        // Keys are one letter but for "error": `"k":` is matched in place.
        let (key, ni) = match p.get(i..i + 4) {
            Some([b'"', k, b'"', b':']) if k.is_ascii_alphabetic() => (&text[i + 1..i + 2], i + 3),
            _ => fast_str(text, i)?,
        };
        i = skip_ws(p, ni);
        if p.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(p, i + 1);
        match p.get(i)? {
            b'"' => {
                let (v, ni) = fast_str(text, i)?;
                i = ni;
                let v = Some(Cow::Borrowed(v));
                match key {
                    "f" => m.f = v,
                    "t" => m.t = v,
                    "c" => m.c = v,
                    "b" => m.b = v,
                    "error" => m.error = v,
                    "location" => m.location = v,
                    _ => {}
                }
            }
            b'-' | b'0'..=b'9' => {
                let st = i;
                i += 1;
                while p.get(i).is_some_and(|c| c.is_ascii_digit()) {
                    i += 1;
                }
                if matches!(p.get(i), Some(b'.' | b'e' | b'E')) {
                    return None;
                }
                let n = parse_i64(&p[st..i])?;
                match key {
                    "y" => m.y = Some(n),
                    "s" => m.s = Some(u64::try_from(n).ok()?),
                    _ => {}
                }
            }
            _ => return None,
        }
        i = skip_ws(p, i);
        match p.get(i)? {
            b',' => i = skip_ws(p, i + 1),
            b'}' => return Some(m),
            _ => return None,
        }
    }
}

fn skip_ws(p: &[u8], mut i: usize) -> usize {
    while matches!(p.get(i), Some(b' ' | b'\t' | b'\r' | b'\n')) {
        i += 1;
    }
    i
}

/// A string without escapes at `text[i] == '"'`; returns (content, index after the quote).
fn fast_str(text: &str, i: usize) -> Option<(&str, usize)> {
    let p = text.as_bytes();
    if p.get(i) != Some(&b'"') {
        return None;
    }
    let rest = &p[i + 1..];
    let end = rest.iter().position(|&c| c == b'"' || c == b'\\')?;
    if rest[end] != b'"' {
        return None;
    }
    Some((&text[i + 1..i + 1 + end], i + 1 + end + 1))
}

/// Decimal digits (at most 19, so no overflow) as a u64; `None` for anything else.
fn parse_digits(d: &[u8]) -> Option<u64> {
    if d.is_empty() || d.len() > 19 {
        return None;
    }
    let mut n = 0u64;
    for &c in d {
        let v = c.wrapping_sub(b'0');
        if v > 9 {
            return None;
        }
        n = n * 10 + u64::from(v);
    }
    Some(n)
}

/// Whether `s` is `format!("{prefix}{i}")`, without building it.
pub fn is_uid(s: &str, prefix: &str, i: usize) -> bool {
    s.strip_prefix(prefix).is_some_and(|n| {
        (n == "0" || !n.starts_with('0')) && parse_digits(n.as_bytes()) == Some(i as u64)
    })
}

/// `-?digits` as an i64; longer numbers go through `str::parse`.
fn parse_i64(d: &[u8]) -> Option<i64> {
    let (neg, digits) = match d.strip_prefix(b"-") {
        Some(r) => (true, r),
        None => (false, d),
    };
    match parse_digits(digits) {
        Some(n) if n <= i64::MAX as u64 => Some(if neg { -(n as i64) } else { n as i64 }),
        _ => std::str::from_utf8(d).ok()?.parse().ok(),
    }
}

fn slow_scan(p: &[u8]) -> Option<Msg<'static>> {
    let v: serde_json::Value = serde_json::from_slice(p).ok()?;
    let o = v.as_object()?;
    let s = |k: &str| {
        o.get(k)
            .and_then(|x| x.as_str())
            .map(|x| Cow::Owned(x.to_string()))
    };
    Some(Msg {
        y: o.get("y").and_then(|x| x.as_i64()),
        s: o.get("s").and_then(|x| x.as_u64()),
        f: s("f"),
        t: s("t"),
        c: s("c"),
        b: s("b"),
        error: s("error"),
        location: s("location"),
    })
}

/// A stream's move signal (dynamic cluster): reconnect to `location`, or to the configured
/// address (which answers 303 to the new owner) when the signal carries none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    pub location: Option<String>,
}

/// WebSocket close code of the move signal ("service restart").
pub const CLOSE_MOVED: u16 = 1012;

/// The move signal in a message payload: `{"error":"moved"[,"location":"…"]}`.
pub fn moved_message(p: &[u8]) -> Option<Moved> {
    let m = scan_msg(p)?;
    (m.error.as_deref() == Some("moved")).then(|| Moved {
        location: m.location.map(Cow::into_owned),
    })
}

/// The move signal in a WebSocket close payload: code 1012, the reason that JSON. A 1012
/// whose reason is not that JSON still means "move", to the configured address.
pub fn moved_close(payload: &[u8]) -> Option<Moved> {
    let code = u16::from_be_bytes([*payload.first()?, *payload.get(1)?]);
    (code == CLOSE_MOVED).then(|| moved_message(&payload[2..]).unwrap_or(Moved { location: None }))
}

/// How many recent seqs a stream remembers to check a replay against.
pub const SEQ_LOG: usize = 4096;

/// What a stream's recent seqs carried (the message number of each body), so that a seq
/// replayed after a move can be checked to carry the same message. Remembers the last
/// [`SEQ_LOG`] seqs; older ones are unknown.
#[derive(Debug, Default)]
pub struct SeqLog {
    /// Seq of `ns[0]`.
    first: u64,
    /// Message number by seq; `u32::MAX` = not seen (a gap).
    ns: VecDeque<u32>,
}

impl SeqLog {
    /// Record that seq `s` carried message `n`; seqs must come in ascending order (a lower
    /// one is ignored), a gap is remembered as unknown.
    pub fn push(&mut self, s: u64, n: u32) {
        let next = self.first + self.ns.len() as u64;
        if self.ns.is_empty() || s >= next + SEQ_LOG as u64 {
            self.ns.clear();
            self.first = s;
        } else if s < next {
            return;
        } else {
            for _ in next..s {
                self.ns.push_back(u32::MAX);
            }
        }
        self.ns.push_back(n);
        while self.ns.len() > SEQ_LOG {
            self.ns.pop_front();
            self.first += 1;
        }
    }

    /// The message number seq `s` carried, if remembered.
    pub fn get(&self, s: u64) -> Option<u32> {
        let k = usize::try_from(s.checked_sub(self.first)?).ok()?;
        self.ns.get(k).copied().filter(|&n| n != u32::MAX)
    }
}

/// One line of a Centrifugo v6 `uni_http_stream` (a JSON `Push` of its client protocol).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CfPush<'a> {
    /// A publication in `channel`: its `data` (a JSON string here) and history `offset`
    /// (0 when the channel keeps no history).
    Pub {
        channel: Cow<'a, str>,
        data: Cow<'a, str>,
        offset: u64,
    },
    /// The connect reply, the first line of a stream.
    Connect,
    /// `{}`: the server's ping.
    Ping,
    /// A disconnect push or any other push (unsubscribe, join, ...): its top-level key.
    Other(String),
}

/// Scans one `uni_http_stream` line. The pushes of a server-API publish of a string are
/// `{"channel":"…","pub":{"data":"…","offset":N,"epoch":"…"}}`: matched in place; anything else goes
/// through serde_json. `None` = not a JSON object.
pub fn scan_centrifugo(p: &[u8]) -> Option<CfPush<'_>> {
    if let Some(push) = fast_cf_pub(p) {
        return Some(push);
    }
    let v: serde_json::Value = serde_json::from_slice(p).ok()?;
    let o = v.as_object()?;
    if o.is_empty() {
        return Some(CfPush::Ping);
    }
    if o.contains_key("connect") {
        return Some(CfPush::Connect);
    }
    let publication = o.get("pub").and_then(|x| x.as_object());
    let channel = o.get("channel").and_then(|x| x.as_str());
    if let (Some(pb), Some(ch)) = (publication, channel) {
        let data = match pb.get("data") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        };
        return Some(CfPush::Pub {
            channel: Cow::Owned(ch.to_string()),
            data: Cow::Owned(data),
            offset: pb.get("offset").and_then(|x| x.as_u64()).unwrap_or(0),
        });
    }
    let key = o
        .keys()
        .find(|k| k.as_str() != "channel")
        .cloned()
        .unwrap_or_default();
    Some(CfPush::Other(key))
}

fn fast_cf_pub(p: &[u8]) -> Option<CfPush<'_>> {
    let text = std::str::from_utf8(p).ok()?;
    let rest = text.strip_prefix("{\"channel\":")?;
    let (channel, i) = fast_str(rest, 0)?;
    let rest = rest[i..].strip_prefix(",\"pub\":{\"data\":")?;
    let (data, i) = fast_str(rest, 0)?;
    let rest = &rest[i..];
    let (offset, rest) = match rest.strip_prefix(",\"offset\":") {
        Some(r) => {
            let end = r
                .bytes()
                .position(|c| !c.is_ascii_digit())
                .unwrap_or(r.len());
            (parse_digits(&r.as_bytes()[..end])?, &r[end..])
        }
        None => (0, rest),
    };
    // With history, the channel's epoch follows the offset.
    let rest = match rest.strip_prefix(",\"epoch\":") {
        Some(r) => &r[fast_str(r, 0)?.1..],
        None => rest,
    };
    if rest != "}}" {
        return None;
    }
    Some(CfPush::Pub {
        channel: Cow::Borrowed(channel),
        data: Cow::Borrowed(data),
        offset,
    })
}

/// Whether a Centrifugo server-API answer (HTTP 200 either way) reports success:
/// `{"result":…}` and no top-level `"error"`.
pub fn centrifugo_api_ok(body: &[u8]) -> bool {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(o)) => o.contains_key("result") && !o.contains_key("error"),
        _ => false,
    }
}

/// The `uni_http_stream` request: a POST whose body is the connect command.
pub fn centrifugo_connect_request(host: &str, token: &str) -> Vec<u8> {
    let body = format!("{{\"token\":{}}}", serde_json::Value::from(token));
    let mut v = format!(
        "POST /connection/uni_http_stream HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    v.extend_from_slice(body.as_bytes());
    v
}

/// A server-API publish of the string `data` to `channel`.
pub fn centrifugo_publish_request(host: &str, api_key: &str, channel: &str, data: &str) -> Vec<u8> {
    let body = format!(
        "{{\"channel\":{},\"data\":{}}}",
        serde_json::Value::from(channel),
        serde_json::Value::from(data)
    );
    let mut v = format!(
        "POST /api/publish HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {api_key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    v.extend_from_slice(body.as_bytes());
    v
}

/// `lt:<n>:<unix_nanos>` padded with `:xxx…` to at least `min_len` bytes.
pub fn make_body(n: u64, nanos: u128, min_len: usize) -> String {
    let mut s = format!("lt:{n}:{nanos}");
    if s.len() < min_len {
        s.push(':');
        while s.len() < min_len {
            s.push('x');
        }
    }
    s
}

/// `(n, unix_nanos)` of a body made by [`make_body`].
pub fn parse_body(b: &[u8]) -> Option<(u64, u128)> {
    let rest = b.strip_prefix(b"lt:")?;
    let mut it = rest.splitn(3, |&c| c == b':');
    let n = it.next()?;
    let t = it.next()?;
    // Hand-rolled digits: `str::parse::<u128>` was 5% of the loadtest's CPU at 1M msgs/s.
    let n = parse_digits(n).or_else(|| std::str::from_utf8(n).ok()?.parse().ok())?;
    let t = match parse_digits(t) {
        Some(v) => u128::from(v),
        None => std::str::from_utf8(t).ok()?.parse().ok()?,
    };
    Some((n, t))
}

/// `http://HOST:PORT/path/{channel}?x={uid}` split into its authority and path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlTemplate {
    /// `HOST:PORT` (port 80 when missing).
    pub authority: String,
    /// Path and query, with `{channel}` / `{uid}` placeholders.
    pub path: String,
}

impl UrlTemplate {
    pub fn parse(s: &str) -> Result<Self, String> {
        let (authority, path) = crate::http::parse_location(s)
            .ok_or_else(|| format!("{s:?} is not an http://HOST:PORT/path URL"))?;
        Ok(UrlTemplate { authority, path })
    }

    /// The path with `{channel}` and `{uid}` replaced (percent-encoded).
    pub fn expand(&self, channel: &str, uid: &str) -> String {
        self.path
            .replace("{channel}", &crate::http::query_escape(channel))
            .replace("{uid}", &crate::http::query_escape(uid))
    }
}

/// A complete admin (request/response) HTTP response at the start of `buf`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Bytes of `buf` the whole response takes.
    pub len: usize,
    pub body: Vec<u8>,
    /// `Connection: close` (or HTTP/1.0 without keep-alive).
    pub close: bool,
}

/// Parse one response with `Content-Length` or a chunked body. `Ok(None)`: need more.
pub fn parse_response(buf: &[u8]) -> Result<Option<Response>, String> {
    let end = match buf.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(e) => e,
        None if buf.len() > 64 * 1024 => return Err("response head too large".into()),
        None => return Ok(None),
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| "non-UTF-8 head".to_string())?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.split(' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(format!("bad status line {status_line:?}"));
    }
    let status: u16 = parts
        .next()
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut close = version == "HTTP/1.0";
    let mut clen: Option<usize> = None;
    let mut chunked = false;
    for l in lines {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("content-length") {
            clen = Some(v.parse().map_err(|_| format!("bad content-length {v:?}"))?);
        } else if k.eq_ignore_ascii_case("transfer-encoding") {
            chunked = v.to_ascii_lowercase().contains("chunked");
        } else if k.eq_ignore_ascii_case("connection") {
            let v = v.to_ascii_lowercase();
            if v.contains("close") {
                close = true;
            } else if v.contains("keep-alive") {
                close = false;
            }
        }
    }
    let start = end + 4;
    if chunked {
        let mut body = Vec::new();
        let rest = &buf[start..];
        // Find the end: parse chunks until the zero chunk and its blank line.
        let (used, done) =
            parse_chunks(rest, &mut |p| body.extend_from_slice(p)).map_err(|e| format!("{e:?}"))?;
        if !done {
            return Ok(None);
        }
        let tail = rest;
        let zero_at = used;
        // Trailers until an empty line.
        let after = &tail[zero_at..];
        let t_end = if after.starts_with(b"\r\n") {
            2
        } else {
            match after.windows(4).position(|w| w == b"\r\n\r\n") {
                Some(i) => i + 4,
                None => return Ok(None),
            }
        };
        return Ok(Some(Response {
            status,
            len: start + zero_at + t_end,
            body,
            close,
        }));
    }
    let n = match clen {
        Some(n) => n,
        None if status == 204 || status == 304 || (100..200).contains(&status) => 0,
        None => {
            // Body until close: only acceptable with Connection: close; treat as empty.
            close = true;
            0
        }
    };
    if buf.len() < start + n {
        return Ok(None);
    }
    Ok(Some(Response {
        status,
        len: start + n,
        body: buf[start..start + n].to_vec(),
        close,
    }))
}

/// splitmix64: the reproducible generator behind `--seed`.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
}

/// A client-to-server chunk (chunked stream) or masked text frame (WebSocket).
pub fn client_frame(framing: Framing, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    match framing {
        Framing::Ws => {
            let mut v = Vec::with_capacity(payload.len() + 14);
            v.push(0x81);
            let n = payload.len();
            if n < 126 {
                v.push(0x80 | n as u8);
            } else if n < 65536 {
                v.push(0x80 | 126);
                v.extend_from_slice(&(n as u16).to_be_bytes());
            } else {
                v.push(0x80 | 127);
                v.extend_from_slice(&(n as u64).to_be_bytes());
            }
            v.extend_from_slice(&mask);
            v.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
            v
        }
        _ => {
            let mut v = format!("{:x}\r\n", payload.len()).into_bytes();
            v.extend_from_slice(payload);
            v.extend_from_slice(b"\r\n");
            v
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(
        framing: Framing,
        chunked: bool,
        bytes: &[u8],
        step: usize,
    ) -> (Vec<Vec<u8>>, bool) {
        let mut d = Decoder::new(framing, chunked);
        let mut out = Vec::new();
        let mut ended = false;
        for piece in bytes.chunks(step.max(1)) {
            ended = d.feed(piece, &mut |p| out.push(p.to_vec())).unwrap();
        }
        (out, ended)
    }

    #[test]
    fn chunked_every_split() {
        let bytes = b"7\r\n{\"y\":0}\r\n5;ext=1\r\nhello\r\n0\r\n\r\n";
        for step in 1..bytes.len() {
            let (msgs, ended) = decode_all(Framing::Chunked, true, bytes, step);
            assert_eq!(
                msgs,
                vec![b"{\"y\":0}".to_vec(), b"hello".to_vec()],
                "step {step}"
            );
            assert!(ended);
        }
        let mut d = Decoder::new(Framing::Chunked, true);
        assert!(d.feed(b"zz\r\n", &mut |_| {}).is_err());
        let mut d = Decoder::new(Framing::Chunked, true);
        assert!(d.feed(b"2\r\nabXY", &mut |_| {}).is_err());
    }

    #[test]
    fn ws_frames_every_split() {
        let mut bytes = vec![0x81, 5];
        bytes.extend_from_slice(b"hello");
        bytes.extend_from_slice(&[0x01, 2, b'a', b'b', 0x80, 1, b'c']); // fragmented
        let big = vec![b'z'; 300];
        bytes.extend_from_slice(&[0x81, 126, 1, 44]);
        bytes.extend_from_slice(&big);
        bytes.extend_from_slice(&[0x89, 0]); // ping
        bytes.extend_from_slice(&[0x88, 2, 3, 232]); // close
        for step in 1..bytes.len() {
            let (msgs, ended) = decode_all(Framing::Ws, false, &bytes, step);
            assert_eq!(
                msgs,
                vec![b"hello".to_vec(), b"abc".to_vec(), big.clone()],
                "step {step}"
            );
            assert!(ended);
        }
        // Masked client frame decodes back.
        let f = client_frame(Framing::Ws, b"payload!", [9, 8, 7, 6]);
        let (msgs, _) = decode_all(Framing::Ws, false, &f, 3);
        assert_eq!(msgs, vec![b"payload!".to_vec()]);
        let mut d = Decoder::new(Framing::Ws, false);
        assert!(d.feed(&[0x83, 0], &mut |_| {}).is_err());
    }

    #[test]
    fn digits_and_numbers() {
        assert_eq!(parse_digits(b"0"), Some(0));
        assert_eq!(
            parse_digits(b"1234567890123456789"),
            Some(1_234_567_890_123_456_789)
        );
        assert_eq!(parse_digits(b"12345678901234567890"), None); // 20 digits: not here
        assert_eq!(parse_digits(b""), None);
        assert_eq!(parse_digits(b"12a"), None);
        assert_eq!(parse_digits(b"-1"), None);
        assert_eq!(parse_i64(b"-42"), Some(-42));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64(b"9223372036854775808"), None);
        assert_eq!(parse_i64(b"-"), None);
        assert!(is_uid("lt-u17", "lt-u", 17));
        assert!(is_uid("lt-u0", "lt-u", 0));
        assert!(!is_uid("lt-u017", "lt-u", 17));
        assert!(!is_uid("lt-u18", "lt-u", 17));
        assert!(!is_uid("lt-u", "lt-u", 0));
        assert!(!is_uid("xx17", "lt-u", 17));
        assert!(!is_uid("lt-u17x", "lt-u", 17));
        // A body with a u128 timestamp beyond 19 digits still parses.
        let b = make_body(7, 123_456_789_012_345_678_901_234, 0);
        assert_eq!(
            parse_body(b.as_bytes()),
            Some((7, 123_456_789_012_345_678_901_234))
        );
        assert_eq!(parse_body(b"lt:x:1"), None);
        assert_eq!(parse_body(b"lt:1:"), None);
        // Non-ASCII values borrow correctly; invalid UTF-8 is not a message.
        let m = scan_msg("{\"y\":3,\"t\":\"ü1\",\"b\":\"lt:1:2\"}".as_bytes()).unwrap();
        assert_eq!(m.t.as_deref(), Some("ü1"));
        assert!(scan_msg(b"{\"t\":\"\xff\"}").is_none());
    }

    #[test]
    fn lines_raw_and_chunked() {
        let raw = b"lt:1:5\nlt:2:6\r\n\nlt:3:7\npartial";
        for step in 1..raw.len() {
            let (msgs, ended) = decode_all(Framing::Lines, false, raw, step);
            assert_eq!(
                msgs,
                vec![b"lt:1:5".to_vec(), b"lt:2:6".to_vec(), b"lt:3:7".to_vec()]
            );
            assert!(!ended);
        }
        let chunked = b"4\r\nlt:1\r\n3\r\n:5\n\r\n7\r\nlt:2:6\n\r\n0\r\n\r\n";
        for step in 1..chunked.len() {
            let (msgs, ended) = decode_all(Framing::Lines, true, chunked, step);
            assert_eq!(
                msgs,
                vec![b"lt:1:5".to_vec(), b"lt:2:6".to_vec()],
                "step {step}"
            );
            assert!(ended);
        }
    }

    #[test]
    fn scan_messages() {
        let m = scan_msg(br#"{"y":4,"f":"lt","t":"u1","c":"ch","b":"lt:5:123","s":7}"#).unwrap();
        assert_eq!(m.y, Some(4));
        assert_eq!(m.s, Some(7));
        assert_eq!(m.t.as_deref(), Some("u1"));
        assert_eq!(m.c.as_deref(), Some("ch"));
        assert_eq!(m.b.as_deref(), Some("lt:5:123"));
        let m = scan_msg(br#" { "b" : "a\"b" , "y":3, "x":[1,2], "t":"\u0041"} "#).unwrap();
        assert_eq!(m.b.as_deref(), Some("a\"b"));
        assert_eq!(m.t.as_deref(), Some("A"));
        assert_eq!(m.y, Some(3));
        let m = scan_msg(br#"{"error":"replaced"}"#).unwrap();
        assert_eq!(m.error.as_deref(), Some("replaced"));
        assert_eq!(scan_msg(br#"{"y":0}"#).unwrap().y, Some(0));
        assert!(scan_msg(b"lt:1:2").is_none());
        assert!(scan_msg(b"{").is_none());
    }

    #[test]
    fn bodies() {
        let b = make_body(42, 1_700_000_000_123_456_789, 0);
        assert_eq!(b, "lt:42:1700000000123456789");
        assert_eq!(
            parse_body(b.as_bytes()),
            Some((42, 1_700_000_000_123_456_789))
        );
        let b = make_body(1, 2, 64);
        assert_eq!(b.len(), 64);
        assert_eq!(parse_body(b.as_bytes()), Some((1, 2)));
        assert_eq!(parse_body(b"hello"), None);
    }

    #[test]
    fn templates() {
        let t = UrlTemplate::parse("http://127.0.0.1:8080/sub/{channel}").unwrap();
        assert_eq!(t.authority, "127.0.0.1:8080");
        assert_eq!(t.expand("c 1", "u"), "/sub/c%201");
        let t = UrlTemplate::parse("http://h/pub?id={uid}").unwrap();
        assert_eq!(t.authority, "h:80");
        assert_eq!(t.expand("c", "u1"), "/pub?id=u1");
        assert!(UrlTemplate::parse("ftp://x").is_err());
    }

    #[test]
    fn responses() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n{\"result\":\"ok\"}HTTP/1.1";
        let p = parse_response(r).unwrap().unwrap();
        assert_eq!(p.status, 200);
        assert_eq!(p.body, b"{\"result\":\"ok\"}");
        assert_eq!(p.len, r.len() - 8);
        assert!(!p.close);
        for k in 0..p.len {
            assert_eq!(parse_response(&r[..k]).unwrap(), None);
        }
        let r = b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\nXX";
        let p = parse_response(r).unwrap().unwrap();
        assert_eq!(
            (p.status, p.body.as_slice(), p.len, p.close),
            (202, &b"abc"[..], r.len() - 2, true)
        );
        for k in 0..p.len {
            assert_eq!(parse_response(&r[..k]).unwrap(), None, "k {k}");
        }
        assert!(parse_response(b"SMTP 200\r\n\r\n").is_err());
    }

    #[test]
    fn move_signals() {
        let chunk =
            br#"{"error":"moved","location":"http://127.0.0.1:9100/connect?uid=u1&password=pw"}"#;
        assert_eq!(
            moved_message(chunk),
            Some(Moved {
                location: Some("http://127.0.0.1:9100/connect?uid=u1&password=pw".into())
            })
        );
        assert_eq!(
            moved_message(br#"{"error":"moved"}"#),
            Some(Moved { location: None })
        );
        assert_eq!(moved_message(br#"{"error":"replaced"}"#), None);
        assert_eq!(moved_message(br#"{"y":3,"b":"moved"}"#), None);
        let mut close = 1012u16.to_be_bytes().to_vec();
        close.extend_from_slice(br#"{"error":"moved","location":"http://h:1/connect?uid=a"}"#);
        assert_eq!(
            moved_close(&close).and_then(|m| m.location),
            Some("http://h:1/connect?uid=a".into())
        );
        assert_eq!(
            moved_close(&[0x03, 0xf4, b'x']),
            Some(Moved { location: None })
        );
        assert_eq!(moved_close(&1000u16.to_be_bytes()), None);
        assert_eq!(moved_close(&[]), None);
        // The decoder keeps the close frame that ended a WebSocket stream.
        let mut d = Decoder::new(Framing::Ws, false);
        let mut frame = vec![0x88, close.len() as u8];
        frame.extend_from_slice(&close);
        for piece in frame.chunks(5) {
            let _ = d.feed(piece, &mut |_| {}).unwrap();
        }
        assert_eq!(d.close_payload(), Some(&close[..]));
    }

    #[test]
    fn seq_log_remembers_recent_seqs() {
        let mut l = SeqLog::default();
        assert_eq!(l.get(1), None);
        l.push(5, 50);
        l.push(6, 60);
        l.push(9, 90); // gap: 7 and 8 unknown
        l.push(8, 80); // lower than the last: ignored
        assert_eq!((l.get(4), l.get(5), l.get(6)), (None, Some(50), Some(60)));
        assert_eq!(
            (l.get(7), l.get(8), l.get(9), l.get(10)),
            (None, None, Some(90), None)
        );
        for s in 10..10 + SEQ_LOG as u64 {
            l.push(s, s as u32);
        }
        assert_eq!(l.get(9), None);
        assert_eq!(l.get(10), Some(10));
        // A jump past the whole log starts over.
        l.push(1 << 40, 7);
        assert_eq!((l.get(10), l.get(1 << 40)), (None, Some(7)));
    }

    #[test]
    fn rng_reproducible() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..100 {
            let x = a.below(10);
            assert!(x < 10);
            assert_eq!(x, b.below(10));
        }
    }

    #[test]
    fn centrifugo_pushes() {
        let line = br#"{"channel":"lt1-7","pub":{"data":"lt:5:123","offset":42,"epoch":"tScA"}}"#;
        assert_eq!(
            scan_centrifugo(line),
            Some(CfPush::Pub {
                channel: Cow::Borrowed("lt1-7"),
                data: Cow::Borrowed("lt:5:123"),
                offset: 42
            })
        );
        // Borrowed on the fast path.
        assert!(matches!(
            scan_centrifugo(line),
            Some(CfPush::Pub {
                channel: Cow::Borrowed(_),
                ..
            })
        ));
        // Other field orders and extra fields go through serde_json.
        let line = br#"{"pub":{"offset":3,"data":"lt:1:2","tags":{"a":"b"}},"channel":"c"}"#;
        assert_eq!(
            scan_centrifugo(line),
            Some(CfPush::Pub {
                channel: Cow::Owned("c".into()),
                data: Cow::Owned("lt:1:2".into()),
                offset: 3
            })
        );
        // No history: no offset.
        let line = br#"{"channel":"c","pub":{"data":"x"}}"#;
        assert!(matches!(
            scan_centrifugo(line),
            Some(CfPush::Pub { offset: 0, .. })
        ));
        assert_eq!(
            scan_centrifugo(br#"{"connect":{"client":"x","version":"6","ping":25}}"#),
            Some(CfPush::Connect)
        );
        assert_eq!(scan_centrifugo(b"{}"), Some(CfPush::Ping));
        assert_eq!(
            scan_centrifugo(br#"{"disconnect":{"code":3501,"reason":"bad request"}}"#),
            Some(CfPush::Other("disconnect".into()))
        );
        assert_eq!(scan_centrifugo(b"lt:1:2"), None);
        assert_eq!(
            scan_centrifugo(br#"{"channel":"c","pub":{"data":"x","offset":1}"#),
            None
        );
    }

    #[test]
    fn centrifugo_requests_and_answers() {
        assert!(centrifugo_api_ok(
            br#"{"result":{"offset":1,"epoch":"ab"}}"#
        ));
        assert!(centrifugo_api_ok(br#"{"result":{}}"#));
        assert!(!centrifugo_api_ok(
            br#"{"error":{"code":102,"message":"unknown channel"}}"#
        ));
        assert!(!centrifugo_api_ok(b"Unauthorized"));
        let r = centrifugo_publish_request("h:1", "k", "c\"1", "lt:1:2");
        let r = String::from_utf8(r).unwrap();
        let (head, body) = r.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("POST /api/publish HTTP/1.1\r\n"));
        assert!(head.contains("X-API-Key: k\r\n"));
        assert!(head.ends_with(&format!("Content-Length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["channel"], "c\"1");
        assert_eq!(v["data"], "lt:1:2");
        let r = String::from_utf8(centrifugo_connect_request("h:1", "a.b.c")).unwrap();
        let (head, body) = r.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("POST /connection/uni_http_stream HTTP/1.1\r\n"));
        assert_eq!(body, r#"{"token":"a.b.c"}"#);
        assert!(head.ends_with(&format!("Content-Length: {}", body.len())));
    }
}

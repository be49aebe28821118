//! Pure protocol pieces: HTTP response-head parsing, redirect `Location`
//! parsing and an incremental chunked-transfer decoder that counts messages
//! (the WebSocket and SSE counters are in [`crate::transport`]).
//! Nothing here touches sockets, so all of it is unit tested byte by byte.

/// Largest response head we accept before calling it an error.
pub const MAX_HEAD: usize = 16 * 1024;

/// What we need from a response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub location: Option<String>,
    pub chunked: bool,
    /// `Content-Type` value, if any.
    pub content_type: Option<String>,
    /// `Upgrade: websocket` (token match, any case).
    pub upgrade_websocket: bool,
    /// Bytes of the buffer taken by the head (including the blank line).
    pub len: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadError {
    /// Not a parseable HTTP/1.x status line or header.
    Malformed,
    /// Head larger than [`MAX_HEAD`] without a blank line.
    TooLarge,
}

/// Parse a response head at the start of `buf`. `Ok(None)` = need more bytes.
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, HeadError> {
    let end = match find(buf, b"\r\n\r\n") {
        Some(i) => i,
        None => {
            if buf.len() > MAX_HEAD {
                return Err(HeadError::TooLarge);
            }
            // A status line that is already wrong need not wait for more bytes.
            if buf.len() >= 5 && !buf.starts_with(b"HTTP/") {
                return Err(HeadError::Malformed);
            }
            return Ok(None);
        }
    };
    let text = std::str::from_utf8(&buf[..end]).map_err(|_| HeadError::Malformed)?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().ok_or(HeadError::Malformed)?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(HeadError::Malformed);
    }
    let code = parts.next().ok_or(HeadError::Malformed)?;
    if code.len() != 3 {
        return Err(HeadError::Malformed);
    }
    let status: u16 = code.parse().map_err(|_| HeadError::Malformed)?;
    let mut location = None;
    let mut chunked = false;
    let mut content_type = None;
    let mut upgrade_websocket = false;
    for line in lines {
        let (name, value) = line.split_once(':').ok_or(HeadError::Malformed)?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("location") {
            location = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value
                .split(',')
                .any(|v| v.trim().eq_ignore_ascii_case("chunked"));
        } else if name.eq_ignore_ascii_case("content-type") {
            content_type = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("upgrade") {
            upgrade_websocket = value
                .split(',')
                .any(|v| v.trim().eq_ignore_ascii_case("websocket"));
        }
    }
    Ok(Some(Head {
        status,
        location,
        chunked,
        content_type,
        upgrade_websocket,
        len: end + 4,
    }))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `http://HOST:PORT/path?query` -> (`HOST:PORT`, `/path?query`).
/// A missing port means 80; a missing path means `/`.
pub fn parse_location(loc: &str) -> Option<(String, String)> {
    let rest = loc.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return None;
    }
    let authority = if authority.starts_with('[') {
        // IPv6 literal.
        if authority.contains("]:") {
            authority.to_string()
        } else {
            format!("{authority}:80")
        }
    } else if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Some((authority, path.to_string()))
}

/// Percent-encode a query value (RFC 3986 unreserved kept as is).
pub fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The JSON heartbeat, for the tests' `feed`.
#[cfg(test)]
const HEARTBEAT: &[u8] = b"{\"y\":0}";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    /// Reading hex digits of a chunk size.
    Size,
    /// After a `;` chunk extension, until CR.
    Ext,
    /// Expecting LF after the size line's CR.
    SizeLf,
    /// Inside chunk data.
    Data,
    /// Expecting CR after data.
    DataCr,
    /// Expecting LF after data.
    DataLf,
    /// Saw the terminating zero-size chunk; the stream is over.
    End,
    /// Framing error; stays here.
    Bad,
}

/// Incremental chunked decoder that only counts. Small (16 bytes) because one
/// lives in every held connection.
#[derive(Debug, Clone, Copy)]
pub struct ChunkCounter {
    remaining: u64,
    st: St,
    /// Position of a heartbeat match in the current chunk; 0xff = no match.
    hb: u8,
    size_digits: u8,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Complete non-empty chunks (messages), heartbeats included.
    pub messages: u64,
    /// Of those, exactly the heartbeat (`{"y":0}` in the stream's codec).
    pub heartbeats: u64,
    /// WebSocket close frames (at most one per stream).
    pub closes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamStatus {
    Open,
    /// Zero-size chunk (or WebSocket close frame) seen: the server ended the stream.
    Ended,
    /// Bytes that are not valid framing for the transport.
    Bad,
}

impl Default for ChunkCounter {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkCounter {
    pub fn new() -> Self {
        ChunkCounter {
            remaining: 0,
            st: St::Size,
            hb: 0,
            size_digits: 0,
        }
    }

    pub fn status(&self) -> StreamStatus {
        match self.st {
            St::End => StreamStatus::Ended,
            St::Bad => StreamStatus::Bad,
            _ => StreamStatus::Open,
        }
    }

    /// Feed bytes of a JSON stream; complete chunks are added to `counts`.
    #[cfg(test)]
    pub fn feed(&mut self, buf: &[u8], counts: &mut Counts) -> StreamStatus {
        self.feed_with(buf, HEARTBEAT, counts)
    }

    /// Feed bytes; complete chunks are added to `counts`, chunks equal to `hb` also
    /// count as heartbeats.
    pub fn feed_with(&mut self, mut buf: &[u8], hb: &[u8], counts: &mut Counts) -> StreamStatus {
        while !buf.is_empty() {
            match self.st {
                St::End | St::Bad => break,
                St::Size => {
                    let b = buf[0];
                    buf = &buf[1..];
                    match b {
                        b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                            let d = (b as char).to_digit(16).unwrap() as u64;
                            self.size_digits += 1;
                            if self.size_digits > 15 {
                                self.st = St::Bad;
                            } else {
                                self.remaining = self.remaining * 16 + d;
                            }
                        }
                        b';' if self.size_digits > 0 => self.st = St::Ext,
                        b'\r' if self.size_digits > 0 => self.st = St::SizeLf,
                        _ => self.st = St::Bad,
                    }
                }
                St::Ext => match buf.iter().position(|&b| b == b'\r') {
                    Some(i) => {
                        buf = &buf[i + 1..];
                        self.st = St::SizeLf;
                    }
                    None => buf = &[],
                },
                St::SizeLf => {
                    let b = buf[0];
                    buf = &buf[1..];
                    if b != b'\n' {
                        self.st = St::Bad;
                    } else if self.remaining == 0 {
                        self.st = St::End;
                    } else {
                        self.hb = if self.remaining == hb.len() as u64 {
                            0
                        } else {
                            0xff
                        };
                        self.st = St::Data;
                    }
                }
                St::Data => {
                    let n = (self.remaining.min(buf.len() as u64)) as usize;
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
                        self.st = St::DataCr;
                    }
                }
                St::DataCr => {
                    let b = buf[0];
                    buf = &buf[1..];
                    self.st = if b == b'\r' { St::DataLf } else { St::Bad };
                }
                St::DataLf => {
                    let b = buf[0];
                    buf = &buf[1..];
                    if b == b'\n' {
                        counts.messages += 1;
                        if self.hb != 0xff && self.hb as usize == hb.len() {
                            counts.heartbeats += 1;
                        }
                        self.size_digits = 0;
                        self.remaining = 0;
                        self.st = St::Size;
                    } else {
                        self.st = St::Bad;
                    }
                }
            }
        }
        self.status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_200_chunked() {
        let raw = b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Type: text/html; charset=utf-8\r\nTransfer-Encoding: chunked\r\nDate: Thu, 01 Jan 1970 00:00:00 GMT\r\n\r\n7\r\n{\"y\":0}\r\n";
        let h = parse_head(raw).unwrap().unwrap();
        assert_eq!(h.status, 200);
        assert!(h.chunked);
        assert_eq!(h.location, None);
        assert_eq!(&raw[h.len..], b"7\r\n{\"y\":0}\r\n");
    }

    #[test]
    fn head_101_and_event_stream() {
        let raw = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x81\x07{\"y\":0}";
        let h = parse_head(raw).unwrap().unwrap();
        assert_eq!(h.status, 101);
        assert!(h.upgrade_websocket);
        assert!(!h.chunked);
        assert_eq!(&raw[h.len..], b"\x81\x07{\"y\":0}");
        let raw = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\r\n";
        let h = parse_head(raw).unwrap().unwrap();
        assert_eq!(h.content_type.as_deref(), Some("text/event-stream"));
        assert!(!h.upgrade_websocket && !h.chunked);
    }

    #[test]
    fn chunks_msgpack_heartbeat() {
        let hb = [0x81, 0xa1, b'y', 0x00];
        let mut s = b"4\r\n".to_vec();
        s.extend_from_slice(&hb);
        s.extend_from_slice(b"\r\n4\r\n\x81\xa1y\x01\r\n");
        let mut c = ChunkCounter::new();
        let mut n = Counts::default();
        assert_eq!(c.feed_with(&s, &hb, &mut n), StreamStatus::Open);
        assert_eq!((n.messages, n.heartbeats), (2, 1));
    }

    #[test]
    fn head_incomplete_at_every_split() {
        let raw = b"HTTP/1.1 303 See Other\r\nlocation: http://127.0.0.3:8000/connect?uid=a&password=b\r\nContent-Length: 0\r\n\r\n";
        for i in 0..raw.len() {
            assert_eq!(parse_head(&raw[..i]), Ok(None), "prefix {i}");
        }
        let h = parse_head(raw).unwrap().unwrap();
        assert_eq!(h.status, 303);
        assert!(!h.chunked);
        assert_eq!(h.len, raw.len());
        assert_eq!(
            h.location.as_deref(),
            Some("http://127.0.0.3:8000/connect?uid=a&password=b")
        );
    }

    #[test]
    fn head_errors() {
        assert_eq!(parse_head(b"SSH-2.0-x\r\n"), Err(HeadError::Malformed));
        assert_eq!(
            parse_head(b"HTTP/1.1 2000 OK\r\n\r\n"),
            Err(HeadError::Malformed)
        );
        assert_eq!(
            parse_head(b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n"),
            Err(HeadError::Malformed)
        );
        let mut big = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        big.resize(MAX_HEAD + 10, b'a');
        assert_eq!(parse_head(&big), Err(HeadError::TooLarge));
        let h = parse_head(b"HTTP/1.0 401 Unauthorized\r\n\r\n{\"error\":\"auth failed\"}")
            .unwrap()
            .unwrap();
        assert_eq!(h.status, 401);
    }

    #[test]
    fn location() {
        assert_eq!(
            parse_location("http://127.0.0.2:8001/connect?uid=x&password=y"),
            Some((
                "127.0.0.2:8001".to_string(),
                "/connect?uid=x&password=y".to_string()
            ))
        );
        assert_eq!(
            parse_location("http://h"),
            Some(("h:80".to_string(), "/".to_string()))
        );
        assert_eq!(
            parse_location("http://[::1]:9/c"),
            Some(("[::1]:9".to_string(), "/c".to_string()))
        );
        assert_eq!(parse_location("https://h/x"), None);
        assert_eq!(parse_location("http:///x"), None);
    }

    #[test]
    fn escape() {
        assert_eq!(query_escape("ab-9_.~"), "ab-9_.~");
        assert_eq!(query_escape("a b&c=d"), "a%20b%26c%3Dd");
    }

    fn stream() -> Vec<u8> {
        let mut s = Vec::new();
        s.extend_from_slice(b"7\r\n{\"y\":0}\r\n");
        let m = br#"{"y":3,"f":"op","t":"u1","b":"hi","s":1}"#;
        s.extend_from_slice(format!("{:x}\r\n", m.len()).as_bytes());
        s.extend_from_slice(m);
        s.extend_from_slice(b"\r\n");
        // Same length as a heartbeat but not one.
        s.extend_from_slice(b"7;ext=1\r\n{\"y\":5}\r\n");
        s.extend_from_slice(b"7\r\n{\"y\":0}\r\n");
        let big = vec![b'x'; 300];
        s.extend_from_slice(b"12C\r\n");
        s.extend_from_slice(&big);
        s.extend_from_slice(b"\r\n");
        s
    }

    #[test]
    fn chunks_whole() {
        let mut c = ChunkCounter::new();
        let mut n = Counts::default();
        assert_eq!(c.feed(&stream(), &mut n), StreamStatus::Open);
        assert_eq!(
            n,
            Counts {
                messages: 5,
                heartbeats: 2,
                closes: 0
            }
        );
        assert_eq!(c.feed(b"0\r\n\r\n", &mut n), StreamStatus::Ended);
        assert_eq!(n.messages, 5);
    }

    #[test]
    fn chunks_split_at_every_boundary() {
        let s = stream();
        for i in 0..=s.len() {
            for j in i..=s.len() {
                let mut c = ChunkCounter::new();
                let mut n = Counts::default();
                c.feed(&s[..i], &mut n);
                c.feed(&s[i..j], &mut n);
                assert_eq!(c.feed(&s[j..], &mut n), StreamStatus::Open);
                assert_eq!(
                    n,
                    Counts {
                        messages: 5,
                        heartbeats: 2,
                        closes: 0
                    },
                    "split at {i},{j}"
                );
            }
        }
    }

    #[test]
    fn chunks_byte_by_byte() {
        let s = stream();
        let mut c = ChunkCounter::new();
        let mut n = Counts::default();
        for (k, b) in s.iter().enumerate() {
            c.feed(std::slice::from_ref(b), &mut n);
            // A message is counted only once its trailing CRLF arrived.
            let done = n.messages;
            let mut c2 = ChunkCounter::new();
            let mut n2 = Counts::default();
            c2.feed(&s[..=k], &mut n2);
            assert_eq!(done, n2.messages);
        }
        assert_eq!(n.messages, 5);
    }

    #[test]
    fn chunks_bad() {
        for bad in [
            &b"zz\r\n"[..],
            b"\r\n",
            b"3\r\nabcX",
            b"3\rX",
            b"1234567890abcdef0\r\n",
        ] {
            let mut c = ChunkCounter::new();
            let mut n = Counts::default();
            assert_eq!(c.feed(bad, &mut n), StreamStatus::Bad, "{bad:?}");
            assert_eq!(n.messages, 0);
        }
    }

    #[test]
    fn counter_is_small() {
        assert!(std::mem::size_of::<ChunkCounter>() <= 16);
    }
}

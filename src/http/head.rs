//! Request head parser on `httparse`: turns the bytes up to the blank line into a [`RequestHead`]
//! holding the facts the server acts on. Pure code, no I/O; runs on the connection's core.

use std::fmt;

/// Longest request head accepted (request line, headers and the final CRLFCRLF).
pub const MAX_HEAD_BYTES: usize = 8192;
/// Most header lines accepted in one request head.
pub const MAX_HEADERS: usize = 32;

/// Request method. Methods are case-sensitive (RFC 9110 §9.1): `get` is `Other("get")`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Method {
    #[default]
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
    Other(String),
}

impl Method {
    fn from_token(token: &str) -> Method {
        match token {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            other => Method::Other(other.to_owned()),
        }
    }

    /// The method as it appears on the request line.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
            Method::Other(s) => s,
        }
    }
}

/// A parsed request head: the request line split up plus the header facts the server uses.
/// Headers not listed here are validated by `httparse` and then dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestHead {
    pub method: Method,
    /// Raw (still percent-encoded) path, without the query.
    pub path: String,
    /// Raw query after the first '?', "" if none.
    pub query: String,
    /// 0 or 1 (HTTP/1.0 or HTTP/1.1).
    pub version_minor: u8,
    pub content_length: Option<usize>,
    /// `Transfer-Encoding: chunked`.
    pub chunked: bool,
    /// HTTP/1.1: true unless `Connection: close`; HTTP/1.0: only with `Connection: keep-alive`.
    pub keep_alive: bool,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
    /// `Upgrade: websocket` (case-insensitive) and `Connection` holds the `upgrade` token.
    pub upgrade_websocket: bool,
    pub websocket_key: Option<String>,
    pub websocket_version: Option<String>,
    /// `Accept` lists `text/event-stream`.
    pub accept_event_stream: bool,
    pub last_event_id: Option<String>,
    pub host: Option<String>,
    /// `Origin` (a browser's cross-origin request), for CORS.
    pub origin: Option<String>,
}

/// Why a request head was refused; [`HeadError::status`] is the response to send before closing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadError {
    /// The head did not end within the byte limit.
    TooLarge,
    /// More than [`MAX_HEADERS`] header lines.
    TooManyHeaders,
    /// Not a well-formed HTTP/1.x request head; the text says what was wrong.
    Malformed(&'static str),
    /// Content-Length non-numeric, repeated, or sent together with chunked encoding.
    BadContentLength,
}

impl HeadError {
    /// HTTP status to answer with: 431 for size limits, 400 otherwise.
    pub fn status(&self) -> u16 {
        match self {
            HeadError::TooLarge | HeadError::TooManyHeaders => 431,
            HeadError::Malformed(_) | HeadError::BadContentLength => 400,
        }
    }

    /// Short text for a `{"error":"..."}` body.
    pub fn reason(&self) -> &'static str {
        match self {
            HeadError::TooLarge => "headers too large",
            HeadError::TooManyHeaders => "too many headers",
            HeadError::Malformed(_) => "bad request",
            HeadError::BadContentLength => "bad content-length",
        }
    }
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeadError::Malformed(what) => write!(f, "bad request: {what}"),
            other => f.write_str(other.reason()),
        }
    }
}

impl std::error::Error for HeadError {}

/// Parses one request head from the start of `buf`.
///
/// - `Ok(None)`: the head is incomplete and `buf.len() < max_bytes` (read more bytes).
/// - `Err(TooLarge)`: incomplete and `buf.len() >= max_bytes`, or the head is longer than
///   `max_bytes`. Only the first `max_bytes` bytes are ever looked at, so a huge buffer costs
///   no more than a full one.
/// - `Ok(Some((head, consumed)))`: `consumed` counts the head including its final CRLFCRLF;
///   any bytes after it belong to the body or the stream.
pub fn parse_head(buf: &[u8], max_bytes: usize) -> Result<Option<(RequestHead, usize)>, HeadError> {
    let window = &buf[..buf.len().min(max_bytes)];
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let consumed = match req.parse(window) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() >= max_bytes {
                Err(HeadError::TooLarge)
            } else {
                Ok(None)
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        Err(e) => return Err(HeadError::Malformed(httparse_reason(e))),
    };
    let head = build_head(&req)?;
    Ok(Some((head, consumed)))
}

fn httparse_reason(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid new line",
        httparse::Error::Status => "invalid status",
        // httparse also reports a non-UTF-8 request target as a token error.
        httparse::Error::Token => "invalid token or request target",
        httparse::Error::TooManyHeaders => "too many headers",
        httparse::Error::Version => "invalid HTTP version",
    }
}

fn build_head(req: &httparse::Request<'_, '_>) -> Result<RequestHead, HeadError> {
    let method = req.method.ok_or(HeadError::Malformed("missing method"))?;
    let target = req.path.ok_or(HeadError::Malformed("missing path"))?;
    let version_minor = req.version.ok_or(HeadError::Malformed("missing version"))?;
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, q),
        None => (target, ""),
    };

    let mut head = RequestHead {
        method: Method::from_token(method),
        path: path.to_owned(),
        query: query.to_owned(),
        version_minor,
        ..RequestHead::default()
    };

    let mut conn_close = false;
    let mut conn_keep_alive = false;
    let mut conn_upgrade = false;
    let mut upgrade_ws = false;
    let mut te_seen = false;
    let mut te_only_chunked = true;
    let mut te_chunked_count = 0usize;

    for h in req.headers.iter() {
        let name = h.name;
        let value = h.value;
        if name.eq_ignore_ascii_case("content-length") {
            if head.content_length.is_some() {
                return Err(HeadError::BadContentLength);
            }
            head.content_length = Some(parse_content_length(value)?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            te_seen = true;
            for t in tokens(value) {
                if t.eq_ignore_ascii_case(b"chunked") {
                    te_chunked_count += 1;
                } else {
                    te_only_chunked = false;
                }
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for t in tokens(value) {
                if t.eq_ignore_ascii_case(b"close") {
                    conn_close = true;
                } else if t.eq_ignore_ascii_case(b"keep-alive") {
                    conn_keep_alive = true;
                } else if t.eq_ignore_ascii_case(b"upgrade") {
                    conn_upgrade = true;
                }
            }
        } else if name.eq_ignore_ascii_case("upgrade") {
            upgrade_ws |= tokens(value).any(|t| t.eq_ignore_ascii_case(b"websocket"));
        } else if name.eq_ignore_ascii_case("expect") {
            head.expect_continue |= trim(value).eq_ignore_ascii_case(b"100-continue");
        } else if name.eq_ignore_ascii_case("accept") {
            head.accept_event_stream |= tokens(value).any(|t| {
                let media = t.split(|&b| b == b';').next().unwrap_or(t);
                trim(media).eq_ignore_ascii_case(b"text/event-stream")
            });
        } else if name.eq_ignore_ascii_case("host") {
            set_once(&mut head.host, value)?;
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            set_once(&mut head.websocket_key, value)?;
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            set_once(&mut head.websocket_version, value)?;
        } else if name.eq_ignore_ascii_case("last-event-id") {
            set_once(&mut head.last_event_id, value)?;
        } else if name.eq_ignore_ascii_case("origin") {
            set_once(&mut head.origin, value)?;
        }
    }

    if te_seen {
        // Only plain `chunked` is supported: any other coding (or an empty or repeated list)
        // would leave the body length unknowable.
        if !te_only_chunked || te_chunked_count != 1 {
            return Err(HeadError::Malformed("unsupported transfer-encoding"));
        }
        if head.content_length.is_some() {
            return Err(HeadError::BadContentLength);
        }
        head.chunked = true;
    }

    head.keep_alive = match version_minor {
        1 => !conn_close,
        _ => conn_keep_alive && !conn_close,
    };
    head.upgrade_websocket = upgrade_ws && conn_upgrade;
    Ok(head)
}

fn parse_content_length(value: &[u8]) -> Result<usize, HeadError> {
    let v = trim(value);
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return Err(HeadError::BadContentLength);
    }
    let mut n: usize = 0;
    for &d in v {
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(usize::from(d - b'0')))
            .ok_or(HeadError::BadContentLength)?;
    }
    Ok(n)
}

/// Stores a single-valued header; a repeat is refused (RFC 9110 §5.3, RFC 6455 §4.2.1).
fn set_once(slot: &mut Option<String>, value: &[u8]) -> Result<(), HeadError> {
    if slot.is_some() {
        return Err(HeadError::Malformed("repeated single-valued header"));
    }
    let s = std::str::from_utf8(trim(value))
        .map_err(|_| HeadError::Malformed("non-UTF-8 header value"))?;
    *slot = Some(s.to_owned());
    Ok(())
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|b| !is_ows(*b)).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !is_ows(*b)).map_or(start, |i| i + 1);
    &v[start..end]
}

fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Comma-separated list elements, trimmed, empty elements skipped (RFC 9110 §5.6.1).
fn tokens(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',').map(trim).filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &[u8] = b"GET /connect?uid=user001&password=pwd001 HTTP/1.1\r\nUser-Agent: mobile_socket_client/0.1.0\r\nAccept: */*\r\n\r\n";

    fn parse(buf: &[u8]) -> Result<Option<(RequestHead, usize)>, HeadError> {
        parse_head(buf, MAX_HEAD_BYTES)
    }

    /// Every strict prefix of the head gives Ok(None); every longer prefix gives the full result.
    fn check_splits(input: &[u8]) -> (RequestHead, usize) {
        let (head, n) = parse(input).expect("valid input").expect("complete input");
        for i in 0..n {
            assert_eq!(parse(&input[..i]), Ok(None), "prefix of {i} bytes");
        }
        for i in n..=input.len() {
            assert_eq!(
                parse(&input[..i]),
                Ok(Some((head.clone(), n))),
                "prefix {i}"
            );
        }
        (head, n)
    }

    #[test]
    fn seed_request() {
        let (head, n) = check_splits(SEED);
        assert_eq!(n, SEED.len());
        assert_eq!(head.method, Method::Get);
        assert_eq!(head.path, "/connect");
        assert_eq!(head.query, "uid=user001&password=pwd001");
        assert_eq!(head.version_minor, 1);
        assert!(head.keep_alive);
        assert_eq!(head.content_length, None);
        assert!(!head.chunked);
        assert!(!head.upgrade_websocket);
        assert!(!head.accept_event_stream);
        assert!(!head.expect_continue);
        assert_eq!(head.host, None);
    }

    #[test]
    fn default_method_is_get() {
        assert_eq!(RequestHead::default().method, Method::Get);
        assert_eq!(Method::default().as_str(), "GET");
    }

    #[test]
    fn websocket_upgrade() {
        let req = b"GET /connect?uid=a&password=b HTTP/1.1\r\nHost: example.com:9000\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
        let (head, _) = check_splits(req);
        assert!(head.upgrade_websocket);
        assert_eq!(
            head.websocket_key.as_deref(),
            Some("dGhlIHNhbXBsZSBub25jZQ==")
        );
        assert_eq!(head.websocket_version.as_deref(), Some("13"));
        assert_eq!(head.host.as_deref(), Some("example.com:9000"));
        assert!(head.keep_alive);
    }

    #[test]
    fn upgrade_needs_connection_token() {
        let req = b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: keep-alive\r\n\r\n";
        assert!(!parse(req).unwrap().unwrap().0.upgrade_websocket);
        let req = b"GET / HTTP/1.1\r\nConnection: upgrade\r\n\r\n";
        assert!(!parse(req).unwrap().unwrap().0.upgrade_websocket);
    }

    #[test]
    fn event_stream_and_last_event_id() {
        let req = b"GET /connect?uid=a&password=b HTTP/1.1\r\nAccept: text/html, Text/Event-Stream;q=0.9\r\nLast-Event-ID: 42\r\n\r\n";
        let (head, _) = check_splits(req);
        assert!(head.accept_event_stream);
        assert_eq!(head.last_event_id.as_deref(), Some("42"));
        let req = b"GET / HTTP/1.1\r\nAccept: text/event-streamx\r\n\r\n";
        assert!(!parse(req).unwrap().unwrap().0.accept_event_stream);
    }

    #[test]
    fn keep_alive_rules() {
        let ka = |r: &[u8]| parse(r).unwrap().unwrap().0.keep_alive;
        assert!(ka(b"GET / HTTP/1.1\r\n\r\n"));
        assert!(!ka(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"));
        assert!(!ka(b"GET / HTTP/1.1\r\nConnection: Upgrade, CLOSE\r\n\r\n"));
        assert!(!ka(b"GET / HTTP/1.0\r\n\r\n"));
        assert!(ka(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
        assert!(!ka(
            b"GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n"
        ));
        assert_eq!(
            parse(b"GET / HTTP/1.0\r\n\r\n")
                .unwrap()
                .unwrap()
                .0
                .version_minor,
            0
        );
    }

    #[test]
    fn post_with_body_pipelined() {
        let req =
            b"POST /push?x=1 HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello";
        let (head, n) = check_splits(req);
        assert_eq!(head.method, Method::Post);
        assert_eq!(head.content_length, Some(5));
        assert!(head.expect_continue);
        assert_eq!(&req[n..], b"hello");
    }

    #[test]
    fn chunked_request_then_stream_bytes() {
        let req = b"GET /connect?uid=a&password=b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n7\r\n{\"y\":0}\r\n";
        let (head, n) = check_splits(req);
        assert!(head.chunked);
        assert_eq!(&req[n..], b"7\r\n{\"y\":0}\r\n");
    }

    #[test]
    fn two_pipelined_heads() {
        let mut buf = SEED.to_vec();
        buf.extend_from_slice(b"DELETE /x HTTP/1.1\r\nHost: h\r\n\r\n");
        let (first, n) = parse(&buf).unwrap().unwrap();
        assert_eq!(first.path, "/connect");
        assert_eq!(n, SEED.len());
        let (second, m) = parse(&buf[n..]).unwrap().unwrap();
        assert_eq!(second.method, Method::Delete);
        assert_eq!(second.path, "/x");
        assert_eq!(n + m, buf.len());
    }

    #[test]
    fn methods() {
        let m = |r: &[u8]| parse(r).unwrap().unwrap().0.method;
        assert_eq!(m(b"HEAD / HTTP/1.1\r\n\r\n"), Method::Head);
        assert_eq!(m(b"PUT / HTTP/1.1\r\n\r\n"), Method::Put);
        assert_eq!(m(b"OPTIONS * HTTP/1.1\r\n\r\n"), Method::Options);
        assert_eq!(
            m(b"PATCH / HTTP/1.1\r\n\r\n"),
            Method::Other("PATCH".into())
        );
        assert_eq!(m(b"get / HTTP/1.1\r\n\r\n"), Method::Other("get".into()));
    }

    #[test]
    fn query_split_at_first_question_mark() {
        let (h, _) = parse(b"GET /a?b?c=d HTTP/1.1\r\n\r\n").unwrap().unwrap();
        assert_eq!(h.path, "/a");
        assert_eq!(h.query, "b?c=d");
        let (h, _) = parse(b"GET /a? HTTP/1.1\r\n\r\n").unwrap().unwrap();
        assert_eq!(h.query, "");
    }

    #[test]
    fn content_length_errors() {
        let bad = |r: &[u8]| parse(r);
        for r in [
            &b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 6\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: \r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999999\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
        ] {
            assert_eq!(
                bad(r),
                Err(HeadError::BadContentLength),
                "{:?}",
                String::from_utf8_lossy(r)
            );
        }
        let (h, _) = parse(b"POST / HTTP/1.1\r\nContent-Length:  007 \r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.content_length, Some(7));
        assert_eq!(HeadError::BadContentLength.status(), 400);
    }

    #[test]
    fn transfer_encoding_other_than_chunked_refused() {
        for r in [
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: \r\n\r\n",
        ] {
            assert!(matches!(parse(r), Err(HeadError::Malformed(_))));
        }
        let (h, _) = parse(b"POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.chunked);
    }

    #[test]
    fn non_utf8_path_is_malformed() {
        let r = b"GET /\xff\xfe HTTP/1.1\r\n\r\n";
        let e = parse(r).unwrap_err();
        assert!(matches!(e, HeadError::Malformed(_)));
        assert_eq!(e.status(), 400);
        assert_eq!(e.reason(), "bad request");
        // Valid UTF-8 beyond ASCII is accepted as-is.
        let (h, _) = parse("GET /caf\u{e9} HTTP/1.1\r\n\r\n".as_bytes())
            .unwrap()
            .unwrap();
        assert_eq!(h.path, "/caf\u{e9}");
    }

    #[test]
    fn repeated_host_or_key_is_malformed() {
        let r = b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n";
        assert!(matches!(parse(r), Err(HeadError::Malformed(_))));
        let r = b"GET / HTTP/1.1\r\nSec-WebSocket-Key: a\r\nSec-WebSocket-Key: b\r\n\r\n";
        assert!(matches!(parse(r), Err(HeadError::Malformed(_))));
        let r = b"GET / HTTP/1.1\r\nHost: \xc3\x28\r\n\r\n";
        assert!(matches!(parse(r), Err(HeadError::Malformed(_))));
    }

    #[test]
    fn oversized_head() {
        // 200 KB header value, complete head.
        let mut big = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', 200 * 1024));
        big.extend_from_slice(b"\r\n\r\n");
        assert_eq!(parse(&big), Err(HeadError::TooLarge));
        assert_eq!(HeadError::TooLarge.status(), 431);
        assert_eq!(HeadError::TooLarge.reason(), "headers too large");
        // 200 KB with no end of head at all.
        let endless = vec![b'a'; 200 * 1024];
        assert!(parse(&endless).is_err());
        let mut endless = b"GET / HTTP/1.1\r\nX: ".to_vec();
        endless.extend(std::iter::repeat_n(b'b', 200 * 1024));
        assert_eq!(parse(&endless), Err(HeadError::TooLarge));
        // Incomplete prefixes below the limit want more bytes; at the limit they are refused.
        assert_eq!(parse(&endless[..MAX_HEAD_BYTES - 1]), Ok(None));
        assert_eq!(parse(&endless[..MAX_HEAD_BYTES]), Err(HeadError::TooLarge));
    }

    #[test]
    fn head_exactly_at_limit() {
        let mut req = b"GET / HTTP/1.1\r\nX: ".to_vec();
        let fill = MAX_HEAD_BYTES - req.len() - 4;
        req.extend(std::iter::repeat_n(b'v', fill));
        req.extend_from_slice(b"\r\n\r\n");
        assert_eq!(req.len(), MAX_HEAD_BYTES);
        let (_, n) = parse(&req).unwrap().unwrap();
        assert_eq!(n, MAX_HEAD_BYTES);
        // One more byte of head is too much, even with trailing body bytes present.
        req.insert(20, b'v');
        req.extend_from_slice(b"body");
        assert_eq!(parse(&req), Err(HeadError::TooLarge));
        // A small custom limit.
        assert_eq!(parse_head(SEED, 10), Err(HeadError::TooLarge));
        assert!(parse_head(SEED, SEED.len()).unwrap().is_some());
    }

    #[test]
    fn header_count_limit() {
        let mut ok = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..MAX_HEADERS {
            ok.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        let mut too_many = ok.clone();
        ok.extend_from_slice(b"\r\n");
        assert!(parse(&ok).unwrap().is_some());
        too_many.extend_from_slice(b"X-last: v\r\n\r\n");
        assert_eq!(parse(&too_many), Err(HeadError::TooManyHeaders));
        assert_eq!(HeadError::TooManyHeaders.status(), 431);
    }

    #[test]
    fn garbage() {
        for g in [
            &b"\x00\x01\x02\x03\r\n\r\n"[..],
            b"GET\r\n\r\n",
            b"GET / HTTP/2.0\r\n\r\n",
            b"GET / FTP/1.1\r\n\r\n",
            b"GET  HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
            b"GET / HTTP/1.1\r\n: novalue\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n",
            b"\xff\xff\xff\xff",
        ] {
            let r = parse(g);
            assert!(r.is_err(), "{:?} -> {:?}", String::from_utf8_lossy(g), r);
            assert_eq!(r.unwrap_err().status(), 400);
        }
    }

    #[test]
    fn pseudo_random_inputs_never_panic() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let alphabet = b"GET /?&=% HTTP/1.01\r\n:abcXYZ-\t\xff\x00";
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 96) as usize;
            let mut buf = b"GET /".to_vec();
            let mut y = x;
            for _ in 0..len {
                y ^= y << 13;
                y ^= y >> 7;
                y ^= y << 17;
                buf.push(alphabet[(y % alphabet.len() as u64) as usize]);
            }
            if let Ok(Some((_, n))) = parse_head(&buf, 64) {
                assert!(n <= buf.len() && n <= 64);
            }
        }
    }
}

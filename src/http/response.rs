//! Response heads and small bodies written into a caller-owned `Vec<u8>`, plus the `Date`
//! value cached per second per thread. Pure code, no I/O; runs on the connection's core.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Interim response sent when a request carried `Expect: 100-continue`.
pub const CONTINUE_100: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Standard reason phrase; for codes not listed, a generic phrase for the status class.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => class_phrase(status),
    }
}

fn class_phrase(status: u16) -> &'static str {
    match status {
        100..=199 => "Informational",
        200..=299 => "Success",
        300..=399 => "Redirection",
        400..=499 => "Client Error",
        500..=599 => "Server Error",
        _ => "Unknown",
    }
}

thread_local! {
    static DATE: RefCell<(u64, Rc<str>)> = RefCell::new((u64::MAX, Rc::from("")));
}

/// The current time as an RFC 7231 IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`, always 29
/// bytes). Formatted at most once per second per thread; each call costs a clock read and an
/// `Rc` clone. The `Rc` keeps the value `!Send`, like the per-core state it serves.
pub fn http_date() -> Rc<str> {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            *cached = (secs, Rc::from(httpdate::fmt_http_date(now)));
        }
        Rc::clone(&cached.1)
    })
}

fn status_line(out: &mut Vec<u8>, status: u16) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa::Buffer::new().format(status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn header(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn date_header(out: &mut Vec<u8>) {
    header(out, "Date", &http_date());
}

/// A head with no body framing of its own:
/// `HTTP/1.1 {status} {reason}\r\nDate: ..\r\n{each header}\r\n\r\n`.
/// For `101 Switching Protocols` (the caller passes `Upgrade`, `Connection`,
/// `Sec-WebSocket-Accept`) and any other head whose headers the caller wants in full control.
pub fn write_head(out: &mut Vec<u8>, status: u16, headers: &[(&str, &str)]) {
    status_line(out, status);
    date_header(out);
    for (name, value) in headers {
        header(out, name, value);
    }
    out.extend_from_slice(b"\r\n");
}

/// A complete response:
/// `HTTP/1.1 {status} {reason}\r\nDate: ..\r\nContent-Type: {ct}\r\nContent-Length: {n}\r\n`
/// `Connection: keep-alive|close\r\n{each extra header}\r\n\r\n{body}`.
///
/// `Content-Type` is left out when `content_type` is empty. For statuses that never carry a
/// body (1xx, 204, 304) `Content-Type`, `Content-Length` and `body` are left out, and for 1xx
/// `Connection` too (use [`write_head`] for 101). Header names and values are written as
/// given: they must not contain CR or LF. For a `HEAD` request, truncate `out` after the head.
pub fn write_response(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    extra_headers: &[(&str, &str)],
    body: &[u8],
    keep_alive: bool,
) {
    let informational = status < 200;
    let has_body = !(informational || status == 204 || status == 304);
    out.reserve(160 + body.len());
    status_line(out, status);
    date_header(out);
    if has_body {
        if !content_type.is_empty() {
            header(out, "Content-Type", content_type);
        }
        header(
            out,
            "Content-Length",
            itoa::Buffer::new().format(body.len()),
        );
    }
    if !informational {
        header(
            out,
            "Connection",
            if keep_alive { "keep-alive" } else { "close" },
        );
    }
    for (name, value) in extra_headers {
        header(out, name, value);
    }
    out.extend_from_slice(b"\r\n");
    if has_body {
        out.extend_from_slice(body);
    }
}

/// Cuts the body off the response written into `out` from `start` on, for a `HEAD` request:
/// the head stays whole, its `Content-Length` included (that of the GET, RFC 9110 §9.3.2), so a
/// keep-alive client reads the next response in sync.
pub fn strip_body_for_head(out: &mut Vec<u8>, start: usize) {
    if let Some(i) = out[start..].windows(4).position(|w| w == b"\r\n\r\n") {
        out.truncate(start + i + 4);
    }
}

/// An error response with body `{"error":"<reason>"}` (reason JSON-escaped) and
/// `Content-Type: text/json; charset=utf-8`.
pub fn write_error(out: &mut Vec<u8>, status: u16, reason: &str, keep_alive: bool) {
    write_error_with(out, status, reason, &[], keep_alive)
}

/// [`write_error`] with extra headers (e.g. CORS).
pub fn write_error_with(
    out: &mut Vec<u8>,
    status: u16,
    reason: &str,
    extra_headers: &[(&str, &str)],
    keep_alive: bool,
) {
    let mut body = Vec::with_capacity(reason.len() + 12);
    body.extend_from_slice(b"{\"error\":");
    write_json_escaped(&mut body, reason);
    body.push(b'}');
    write_response(
        out,
        status,
        "text/json; charset=utf-8",
        extra_headers,
        &body,
        keep_alive,
    );
}

/// The head that opens a chunked message stream:
/// `HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Type: text/html; charset=utf-8\r\n`
/// `Transfer-Encoding: chunked\r\nDate: ..\r\n{each extra header}\r\n`.
pub fn write_stream_head(out: &mut Vec<u8>, extra_headers: &[(&str, &str)]) {
    out.extend_from_slice(
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Type: text/html; charset=utf-8\r\nTransfer-Encoding: chunked\r\n",
    );
    date_header(out);
    end_head(out, extra_headers);
}

/// The head of a Server-Sent Events stream, then `extra_headers`.
pub fn write_sse_head(out: &mut Vec<u8>, extra_headers: &[(&str, &str)]) {
    out.extend_from_slice(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: keep-alive\r\n",
    );
    date_header(out);
    end_head(out, extra_headers);
}

fn end_head(out: &mut Vec<u8>, extra_headers: &[(&str, &str)]) {
    for (name, value) in extra_headers {
        header(out, name, value);
    }
    out.extend_from_slice(b"\r\n");
}

/// The 101 answer to an accepted WebSocket handshake.
pub fn write_upgrade_head(out: &mut Vec<u8>, accept: &str) {
    out.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ");
    out.extend_from_slice(accept.as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
}

/// `HTTP/1.1 303 See Other\r\nDate: ..\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n`.
/// The connection stays persistent (HTTP/1.1 default); `location` must not contain CR or LF.
/// `extra_headers` (e.g. CORS) come after `Content-Length`.
pub fn write_redirect(out: &mut Vec<u8>, location: &str, extra_headers: &[(&str, &str)]) {
    status_line(out, 303);
    date_header(out);
    header(out, "Location", location);
    out.extend_from_slice(b"Content-Length: 0\r\n");
    end_head(out, extra_headers);
}

/// Writes `s` as a JSON string, quotes included: `"`, `\` and control characters escaped
/// (`\n`, `\r`, `\t`, `\b`, `\f`, else `\u00XX`); everything else, non-ASCII included, as is.
pub fn write_json_escaped(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => &[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 0xf) as usize],
            ],
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(esc);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replaces the value of the single `Date:` header with `<date>` after checking its shape.
    fn mask_date(out: &[u8]) -> String {
        let s = std::str::from_utf8(out).unwrap();
        let start = s.find("\r\nDate: ").expect("Date header") + 8;
        let end = start + s[start..].find("\r\n").unwrap();
        let date = &s[start..end];
        assert_eq!(date.len(), 29, "{date}");
        assert!(date.ends_with(" GMT"));
        assert!(httpdate::parse_http_date(date).is_ok());
        format!("{}<date>{}", &s[..start], &s[end..])
    }

    #[test]
    fn date_is_cached_and_fresh() {
        let a = http_date();
        let b = http_date();
        assert_eq!(a.len(), 29);
        let parsed = httpdate::parse_http_date(&a).unwrap();
        let age = SystemTime::now().duration_since(parsed).unwrap_or_default();
        assert!(age.as_secs() <= 2);
        // Same second (almost always): the very same allocation.
        if a == b {
            assert!(Rc::ptr_eq(&a, &b));
        }
    }

    #[test]
    fn response_exact_bytes() {
        let mut out = b"prefix".to_vec();
        write_response(
            &mut out,
            200,
            "application/json",
            &[("X-Node", "1"), ("Cache-Control", "no-store")],
            b"{\"result\":1}",
            true,
        );
        assert!(out.starts_with(b"prefix"));
        assert_eq!(
            mask_date(&out[6..]),
            "HTTP/1.1 200 OK\r\nDate: <date>\r\nContent-Type: application/json\r\nContent-Length: 12\r\nConnection: keep-alive\r\nX-Node: 1\r\nCache-Control: no-store\r\n\r\n{\"result\":1}"
        );
        let mut out = Vec::new();
        write_response(&mut out, 404, "", &[], b"", false);
        assert_eq!(
            mask_date(&out),
            "HTTP/1.1 404 Not Found\r\nDate: <date>\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn bodiless_statuses() {
        let mut out = Vec::new();
        write_response(&mut out, 204, "text/plain", &[], b"ignored", true);
        assert_eq!(
            mask_date(&out),
            "HTTP/1.1 204 No Content\r\nDate: <date>\r\nConnection: keep-alive\r\n\r\n"
        );
        let mut out = Vec::new();
        write_head(
            &mut out,
            101,
            &[
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade"),
                ("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            ],
        );
        assert_eq!(
            mask_date(&out),
            "HTTP/1.1 101 Switching Protocols\r\nDate: <date>\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        );
        assert_eq!(CONTINUE_100, b"HTTP/1.1 100 Continue\r\n\r\n");
    }

    #[test]
    fn error_exact_bytes() {
        let mut out = Vec::new();
        write_error(&mut out, 400, "invalid uid", true);
        assert_eq!(
            mask_date(&out),
            "HTTP/1.1 400 Bad Request\r\nDate: <date>\r\nContent-Type: text/json; charset=utf-8\r\nContent-Length: 23\r\nConnection: keep-alive\r\n\r\n{\"error\":\"invalid uid\"}"
        );
        let mut out = Vec::new();
        write_error(&mut out, 431, "headers too large", false);
        assert_eq!(
            mask_date(&out),
            "HTTP/1.1 431 Request Header Fields Too Large\r\nDate: <date>\r\nContent-Type: text/json; charset=utf-8\r\nContent-Length: 29\r\nConnection: close\r\n\r\n{\"error\":\"headers too large\"}"
        );
        let mut out = Vec::new();
        write_error(&mut out, 401, "a\"b", false);
        assert!(
            out.ends_with(b"Content-Length: 16\r\nConnection: close\r\n\r\n{\"error\":\"a\\\"b\"}")
        );
    }

    #[test]
    fn stream_head_exact_bytes() {
        let mut out = Vec::new();
        write_stream_head(&mut out, &[]);
        assert_eq!(
            mask_date(&out),
            "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Type: text/html; charset=utf-8\r\nTransfer-Encoding: chunked\r\nDate: <date>\r\n\r\n"
        );
    }

    #[test]
    fn redirect_exact_bytes() {
        let mut out = Vec::new();
        write_redirect(
            &mut out,
            "http://10.0.0.2:9000/connect?uid=user001&password=pwd001",
            &[],
        );
        assert_eq!(
            mask_date(&out),
            "HTTP/1.1 303 See Other\r\nDate: <date>\r\nLocation: http://10.0.0.2:9000/connect?uid=user001&password=pwd001\r\nContent-Length: 0\r\n\r\n"
        );
        out.clear();
        write_redirect(
            &mut out,
            "http://h:1/c",
            &[("Access-Control-Allow-Origin", "*")],
        );
        assert!(mask_date(&out)
            .ends_with("Content-Length: 0\r\nAccess-Control-Allow-Origin: *\r\n\r\n"));
    }

    #[test]
    fn reason_phrases() {
        for (code, text) in [
            (100, "Continue"),
            (101, "Switching Protocols"),
            (200, "OK"),
            (204, "No Content"),
            (303, "See Other"),
            (400, "Bad Request"),
            (401, "Unauthorized"),
            (403, "Forbidden"),
            (404, "Not Found"),
            (405, "Method Not Allowed"),
            (408, "Request Timeout"),
            (411, "Length Required"),
            (413, "Content Too Large"),
            (415, "Unsupported Media Type"),
            (426, "Upgrade Required"),
            (431, "Request Header Fields Too Large"),
            (500, "Internal Server Error"),
            (503, "Service Unavailable"),
            (499, "Client Error"),
            (999, "Unknown"),
        ] {
            assert_eq!(reason_phrase(code), text);
        }
    }

    #[test]
    fn json_escaping() {
        let esc = |s: &str| {
            let mut out = Vec::new();
            write_json_escaped(&mut out, s);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(esc(""), "\"\"");
        assert_eq!(esc("plain"), "\"plain\"");
        assert_eq!(esc("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(esc("\n\r\t\u{8}\u{c}"), r#""\n\r\t\b\f""#);
        assert_eq!(esc("\u{0}\u{1f}\u{7f}"), "\"\\u0000\\u001f\u{7f}\"");
        assert_eq!(esc("你好/é"), "\"你好/é\"");
    }

    #[test]
    fn head_keeps_the_head_and_its_content_length() {
        let mut out = b"earlier".to_vec();
        let start = out.len();
        write_response(
            &mut out,
            200,
            "text/plain",
            &[],
            b"hello\r\n\r\nworld",
            true,
        );
        let full = out.clone();
        strip_body_for_head(&mut out, start);
        let head = std::str::from_utf8(&out[start..]).unwrap();
        assert!(head.ends_with("\r\n\r\n"), "{head}");
        assert!(head.contains("Content-Length: 14\r\n"), "{head}");
        assert_eq!(&full[..out.len()], &out[..]);
        assert!(out.starts_with(b"earlier"));
        // No body (204): nothing to cut.
        let mut out = Vec::new();
        write_response(&mut out, 204, "", &[], b"", true);
        let before = out.clone();
        strip_body_for_head(&mut out, 0);
        assert_eq!(out, before);
    }
}

//! WebSocket (RFC 6455) for the client port: handshake checks and frame decoding/encoding on
//! top of tungstenite's frame primitives. Pure code, no I/O; runs on the stream's core.
//!
//! The stream task owns the bytes: frames are parsed (and unmasked in place) straight from
//! what was read, and only a fragmented message is copied into a buffer of its own.

use std::io::Cursor;

use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

use crate::http::head::RequestHead;
use crate::protocol::close::{INVALID_DATA, PROTOCOL_ERROR, TOO_BIG};

/// Why a handshake is refused, as (status, reason).
pub fn check_handshake(head: &RequestHead) -> Result<String, (u16, &'static str)> {
    if head.websocket_version.as_deref() != Some("13") {
        return Err((426, "websocket version 13 required"));
    }
    match head.websocket_key.as_deref() {
        Some(k) if k.len() == 24 => Ok(tungstenite::handshake::derive_accept_key(k.as_bytes())),
        _ => Err((400, "bad Sec-WebSocket-Key")),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WsError {
    pub code: u16,
    pub reason: &'static str,
}

const fn err(code: u16, reason: &'static str) -> WsError {
    WsError { code, reason }
}

/// One frame, its payload unmasked in place.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    pub opcode: OpCode,
    pub fin: bool,
    /// Payload range in the parsed buffer.
    pub start: usize,
    pub end: usize,
}

/// Unmasks a client payload in place (tungstenite keeps its own masking private).
fn apply_mask(buf: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = buf.chunks_exact_mut(4);
    for c in &mut chunks {
        let v = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) ^ word;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i];
    }
}

/// Parses the frame at the start of `buf`: Ok(None) = need more bytes. A frame whose
/// declared size is over `max` is refused as soon as its header is complete.
pub fn parse_frame(buf: &mut [u8], max: usize) -> Result<Option<Frame>, WsError> {
    let mut cur = Cursor::new(&*buf);
    let (hdr, len) = match FrameHeader::parse(&mut cur) {
        Ok(Some(x)) => x,
        Ok(None) => return Ok(None),
        Err(_) => return Err(err(PROTOCOL_ERROR, "bad frame header")),
    };
    let start = cur.position() as usize;
    if hdr.rsv1 || hdr.rsv2 || hdr.rsv3 {
        return Err(err(PROTOCOL_ERROR, "reserved bits set"));
    }
    let Some(mask) = hdr.mask else {
        return Err(err(PROTOCOL_ERROR, "client frames must be masked"));
    };
    match hdr.opcode {
        OpCode::Control(Control::Reserved(_)) | OpCode::Data(Data::Reserved(_)) => {
            return Err(err(PROTOCOL_ERROR, "reserved opcode"))
        }
        OpCode::Control(_) if len > 125 || !hdr.is_final => {
            return Err(err(PROTOCOL_ERROR, "bad control frame"))
        }
        _ => {}
    }
    if len > max as u64 {
        return Err(err(TOO_BIG, "message too large"));
    }
    let end = start + len as usize;
    if buf.len() < end {
        return Ok(None);
    }
    apply_mask(&mut buf[start..end], mask);
    Ok(Some(Frame {
        opcode: hdr.opcode,
        fin: hdr.is_final,
        start,
        end,
    }))
}

/// Checks the payload of a client's close frame (RFC 6455 §5.5.1, §7.4): `Ok(None)` for an
/// empty body, `Ok(Some(code))` for a valid code (to echo) with a UTF-8 reason; otherwise the
/// close code to answer with and why: 1002 for a 1-byte body or a code that may not be sent on
/// the wire (below 1000, 1004-1006, 1015, 1016-2999 unassigned, 5000 and up), 1007 for a reason
/// that is not UTF-8.
pub fn check_close(payload: &[u8]) -> Result<Option<u16>, (u16, &'static str)> {
    match payload {
        [] => Ok(None),
        [_] => Err((PROTOCOL_ERROR, "close frame with a 1-byte body")),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999) {
                return Err((PROTOCOL_ERROR, "invalid close code"));
            }
            if std::str::from_utf8(reason).is_err() {
                return Err((INVALID_DATA, "invalid utf-8 in the close reason"));
            }
            Ok(Some(code))
        }
    }
}

/// Appends a server frame (unmasked, final).
pub fn encode_frame(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8]) {
    let hdr = FrameHeader {
        is_final: true,
        opcode,
        ..FrameHeader::default()
    };
    hdr.format(payload.len() as u64, out)
        .expect("writing to a Vec cannot fail");
    out.extend_from_slice(payload);
}

pub fn encode_close(out: &mut Vec<u8>, code: u16, reason: &str) {
    let mut p = Vec::with_capacity(2 + reason.len());
    p.extend_from_slice(&code.to_be_bytes());
    // A close reason is at most 123 bytes; cut at a char boundary.
    let mut n = reason.len().min(MAX_CLOSE_REASON);
    while !reason.is_char_boundary(n) {
        n -= 1;
    }
    p.extend_from_slice(&reason.as_bytes()[..n]);
    encode_frame(out, OpCode::Control(Control::Close), &p);
}

/// The longest close reason: a control frame's payload is at most 125 bytes, 2 of them the
/// code (RFC 6455 §5.5).
pub const MAX_CLOSE_REASON: usize = 123;

pub const TEXT: OpCode = OpCode::Data(Data::Text);
pub const BINARY: OpCode = OpCode::Data(Data::Binary);
pub const PONG: OpCode = OpCode::Control(Control::Pong);

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame.
    fn client_frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mask = [1u8, 2, 3, 4];
        let mut out = vec![(u8::from(fin) << 7) | opcode];
        if payload.len() < 126 {
            out.push(0x80 | payload.len() as u8);
        } else {
            out.push(0x80 | 126);
            out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    #[test]
    fn parses_masked_text_split_at_every_byte() {
        let full = client_frame(0x1, true, br#"{"y":0}"#);
        for cut in 0..full.len() {
            let mut part = full[..cut].to_vec();
            assert_eq!(parse_frame(&mut part, 1024), Ok(None), "cut {cut}");
        }
        let mut buf = full.clone();
        let f = parse_frame(&mut buf, 1024).unwrap().unwrap();
        assert_eq!((f.opcode, f.fin), (TEXT, true));
        assert_eq!(&buf[f.start..f.end], br#"{"y":0}"#);
        assert_eq!(f.end, full.len());
    }

    #[test]
    fn refuses_bad_frames() {
        let mut unmasked = vec![0x81, 0x02, b'h', b'i'];
        assert_eq!(
            parse_frame(&mut unmasked, 1024).unwrap_err().code,
            PROTOCOL_ERROR
        );
        let big = client_frame(0x2, true, &[0u8; 300]);
        assert_eq!(
            parse_frame(&mut big[..8].to_vec(), 100).unwrap_err().code,
            TOO_BIG
        );
        let mut rsv = client_frame(0x1, true, b"x");
        rsv[0] |= 0x40;
        assert_eq!(
            parse_frame(&mut rsv, 1024).unwrap_err().code,
            PROTOCOL_ERROR
        );
        let mut frag_ping = client_frame(0x9, false, b"x");
        assert_eq!(
            parse_frame(&mut frag_ping, 1024).unwrap_err().code,
            PROTOCOL_ERROR
        );
        let mut reserved = client_frame(0x3, true, b"x");
        assert_eq!(
            parse_frame(&mut reserved, 1024).unwrap_err().code,
            PROTOCOL_ERROR
        );
    }

    #[test]
    fn close_payloads() {
        let close = |code: u16, reason: &[u8]| {
            let mut p = code.to_be_bytes().to_vec();
            p.extend_from_slice(reason);
            check_close(&p)
        };
        assert_eq!(check_close(b""), Ok(None));
        for code in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014,
        ] {
            assert_eq!(close(code, b""), Ok(Some(code)), "{code}");
        }
        for code in [3000, 3999, 4000, 4999] {
            assert_eq!(close(code, "fin ✓".as_bytes()), Ok(Some(code)), "{code}");
        }
        for code in [
            0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 60000, 65535,
        ] {
            assert_eq!(close(code, b"").unwrap_err().0, PROTOCOL_ERROR, "{code}");
            assert_eq!(
                close(code, b"\xff").unwrap_err().0,
                PROTOCOL_ERROR,
                "{code}"
            );
        }
        assert_eq!(check_close(&[0x03]).unwrap_err().0, PROTOCOL_ERROR);
        assert_eq!(close(1000, b"\xce").unwrap_err().0, INVALID_DATA);
        assert_eq!(close(1000, b"ok\xed\xa0\x80").unwrap_err().0, INVALID_DATA);
        // The largest a control frame allows: 2 + 123 bytes.
        assert_eq!(close(1000, &[b'a'; 123]), Ok(Some(1000)));
    }

    #[test]
    fn encodes_server_frames() {
        let mut out = Vec::new();
        encode_frame(&mut out, TEXT, b"hi");
        assert_eq!(out, [0x81, 0x02, b'h', b'i']);
        let mut out = Vec::new();
        encode_frame(&mut out, BINARY, &[7u8; 200]);
        assert_eq!(&out[..4], &[0x82, 126, 0, 200]);
        let mut out = Vec::new();
        encode_close(&mut out, 1000, "bye");
        assert_eq!(out, [0x88, 0x05, 0x03, 0xe8, b'b', b'y', b'e']);
    }

    #[test]
    fn accept_key_of_the_rfc_example() {
        let head = RequestHead {
            websocket_version: Some("13".into()),
            websocket_key: Some("dGhlIHNhbXBsZSBub25jZQ==".into()),
            ..Default::default()
        };
        assert_eq!(
            check_handshake(&head).unwrap(),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        let old = RequestHead {
            websocket_version: Some("8".into()),
            ..head
        };
        assert_eq!(check_handshake(&old).unwrap_err().0, 426);
    }
}

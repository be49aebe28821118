//! What a client sends on its stream, decoded without I/O: chunks or WebSocket frames in, a
//! list of inputs out (messages, pings, a close, an error that ends the stream). The stream
//! task applies them. Pure; runs on the stream's core.

use tungstenite::protocol::frame::coding::{Control, Data, OpCode};

use super::ws;
use crate::http::chunk::{parse_chunk, Chunk};
use crate::protocol::close::{INVALID_DATA, NORMAL, POLICY, PROTOCOL_ERROR, TOO_BIG};
use crate::protocol::{codec, ClientMessage, Codec, Mode, Transport};

/// One thing the client said.
#[derive(Debug, PartialEq, Eq)]
pub enum Input {
    Message(ClientMessage),
    /// A WebSocket ping, with its payload (answered with a pong).
    Ping(Box<[u8]>),
    /// The client ended the stream (the terminating chunk, or a WebSocket close): answer with
    /// this close code and end.
    Close(u16),
    /// Bad input: the stream ends with `{"error":reason}` and this close code.
    Fail(String, u16),
}

impl Input {
    /// Whether nothing after this input is read.
    pub fn is_final(&self) -> bool {
        matches!(self, Input::Close(_) | Input::Fail(..))
    }
}

/// What one `decode` call consumed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of the input used (the rest is an incomplete frame: keep it for the next call).
    pub used: usize,
    /// Message payloads handed to the codec and their bytes (including ones it refused).
    pub payloads: u64,
    pub payload_bytes: u64,
}

/// A stream's decoder state: only a fragmented WebSocket message being reassembled.
#[derive(Debug, Default)]
pub struct Decoder {
    frag: Vec<u8>,
    /// Some(binary) while a fragmented message is open.
    frag_binary: Option<bool>,
}

impl Decoder {
    /// Whether it holds nothing (its buffers can be dropped).
    pub fn is_idle(&self) -> bool {
        self.frag_binary.is_none()
    }

    /// Decodes whole frames of `buf` (WebSocket payloads are unmasked in place) into `out`,
    /// stopping after a final input. Messages over `max` bytes fail.
    pub fn decode(
        &mut self,
        mode: Mode,
        buf: &mut [u8],
        max: usize,
        out: &mut Vec<Input>,
    ) -> Progress {
        match mode.transport {
            Transport::WebSocket => self.decode_ws(buf, mode.codec, max, out),
            Transport::Chunked => decode_chunks(buf, mode.codec, max, out),
            // An event stream is one-way: anything the client sends is ignored.
            Transport::Sse => Progress {
                used: buf.len(),
                ..Progress::default()
            },
        }
    }

    fn decode_ws(
        &mut self,
        buf: &mut [u8],
        codec: Codec,
        max: usize,
        out: &mut Vec<Input>,
    ) -> Progress {
        let mut p = Progress::default();
        while p.used < buf.len() && !out.last().is_some_and(Input::is_final) {
            let f = match ws::parse_frame(&mut buf[p.used..], max) {
                Ok(None) => break,
                Ok(Some(f)) => f,
                Err(e) => {
                    out.push(Input::Fail(e.reason.into(), e.code));
                    break;
                }
            };
            let at = p.used;
            p.used += f.end;
            let payload = &buf[at + f.start..at + f.end];
            self.ws_frame(f.opcode, f.fin, payload, codec, max, &mut p, out);
        }
        p
    }

    /// Acts on one complete frame.
    #[allow(clippy::too_many_arguments)]
    fn ws_frame(
        &mut self,
        opcode: OpCode,
        fin: bool,
        payload: &[u8],
        codec: Codec,
        max: usize,
        p: &mut Progress,
        out: &mut Vec<Input>,
    ) {
        match opcode {
            OpCode::Data(Data::Text) | OpCode::Data(Data::Binary) => {
                let binary = opcode == ws::BINARY;
                if self.frag_binary.is_some() {
                    out.push(fail("expected a continuation frame", PROTOCOL_ERROR));
                } else if fin {
                    // The common case: decoded straight from the read buffer.
                    out.push(message(payload, binary, codec, p));
                } else {
                    self.frag.extend_from_slice(payload);
                    self.frag_binary = Some(binary);
                }
            }
            OpCode::Data(Data::Continue) => {
                let Some(binary) = self.frag_binary else {
                    return out.push(fail("unexpected continuation frame", PROTOCOL_ERROR));
                };
                if self.frag.len() + payload.len() > max {
                    return out.push(fail("message too large", TOO_BIG));
                }
                self.frag.extend_from_slice(payload);
                if fin {
                    self.frag_binary = None;
                    let whole = std::mem::take(&mut self.frag);
                    out.push(message(&whole, binary, codec, p));
                }
            }
            OpCode::Control(Control::Ping) => out.push(Input::Ping(payload.into())),
            OpCode::Control(Control::Pong) => {}
            OpCode::Control(Control::Close) => out.push(close_reply(payload)),
            _ => out.push(fail("reserved opcode", PROTOCOL_ERROR)),
        }
    }
}

fn fail(reason: &str, code: u16) -> Input {
    Input::Fail(reason.into(), code)
}

/// One message payload, decoded (a text frame must be UTF-8), counted.
fn message(payload: &[u8], binary: bool, codec: Codec, p: &mut Progress) -> Input {
    if !binary && std::str::from_utf8(payload).is_err() {
        return fail("invalid utf-8", INVALID_DATA);
    }
    p.payloads += 1;
    p.payload_bytes += payload.len() as u64;
    match codec::decode(codec, payload) {
        Ok(m) => Input::Message(m),
        Err(e) => Input::Fail(e.to_string(), POLICY),
    }
}

/// The answer to a client's close frame: a valid close is echoed (RFC 6455 §5.5.1), a bad one
/// answered with 1002/1007.
fn close_reply(payload: &[u8]) -> Input {
    match ws::check_close(payload) {
        Ok(code) => Input::Close(code.unwrap_or(NORMAL)),
        Err((code, reason)) => fail(reason, code),
    }
}

/// Decodes whole chunks of `buf` into messages.
fn decode_chunks(buf: &[u8], codec: Codec, max: usize, out: &mut Vec<Input>) -> Progress {
    let mut p = Progress::default();
    while p.used < buf.len() {
        match parse_chunk(&buf[p.used..], max) {
            Ok(None) => break,
            Ok(Some((Chunk::End, used))) => {
                p.used += used;
                out.push(Input::Close(NORMAL));
                break;
            }
            Ok(Some((Chunk::Data(payload), used))) => {
                p.used += used;
                p.payloads += 1;
                p.payload_bytes += payload.len() as u64;
                match codec::decode(codec, payload) {
                    Ok(m) => out.push(Input::Message(m)),
                    Err(e) => {
                        out.push(Input::Fail(e.to_string(), POLICY));
                        break;
                    }
                }
            }
            Err(e) => {
                out.push(fail(e.reason(), PROTOCOL_ERROR));
                break;
            }
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::MsgType;

    fn mode(transport: Transport) -> Mode {
        Mode {
            transport,
            codec: Codec::Json,
        }
    }

    /// A masked client frame.
    fn frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mask = [1u8, 2, 3, 4];
        let mut f = vec![(u8::from(fin) << 7) | opcode];
        assert!(payload.len() < 126);
        f.push(0x80 | payload.len() as u8);
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    /// Feeds `input` split at every byte boundary, keeping unused bytes as the stream does.
    fn decode_split(m: Mode, input: &[u8]) -> Vec<Vec<Input>> {
        (1..=input.len())
            .map(|cut| {
                let mut d = Decoder::default();
                let mut out = Vec::new();
                let mut pending = Vec::new();
                for part in [&input[..cut], &input[cut..]] {
                    pending.extend_from_slice(part);
                    let used = d.decode(m, &mut pending, 1 << 16, &mut out).used;
                    pending.drain(..used);
                }
                out
            })
            .collect()
    }

    #[test]
    fn chunks_in_any_split() {
        let input = b"7\r\n{\"y\":0}\r\n0\r\n\r\n";
        for out in decode_split(mode(Transport::Chunked), input) {
            assert_eq!(out.len(), 2, "{out:?}");
            assert!(matches!(&out[0], Input::Message(m) if m.y == Some(MsgType::Heartbeat)));
            assert_eq!(out[1], Input::Close(NORMAL));
        }
    }

    #[test]
    fn websocket_fragments_pings_and_close_in_any_split() {
        let mut input = frame(0x1, false, br#"{"y":"#);
        input.extend(frame(0x9, true, b"hi"));
        input.extend(frame(0x0, true, b"0}"));
        input.extend(frame(0x8, true, &1001u16.to_be_bytes()));
        for out in decode_split(mode(Transport::WebSocket), &input) {
            assert_eq!(out.len(), 3, "{out:?}");
            assert_eq!(out[0], Input::Ping(Box::from(&b"hi"[..])));
            assert!(matches!(&out[1], Input::Message(m) if m.y == Some(MsgType::Heartbeat)));
            assert_eq!(out[2], Input::Close(1001));
        }
    }

    #[test]
    fn bad_input_fails_with_its_code_and_stops() {
        let cases: [(Vec<u8>, u16); 4] = [
            (frame(0x1, true, b"\xff"), INVALID_DATA),
            (frame(0x1, true, b"{nope"), POLICY),
            (frame(0x0, true, b"x"), PROTOCOL_ERROR),
            (frame(0x3, true, b"x"), PROTOCOL_ERROR),
        ];
        for (mut input, code) in cases {
            input.extend(frame(0x1, true, br#"{"y":0}"#));
            let mut out = Vec::new();
            Decoder::default().decode(mode(Transport::WebSocket), &mut input, 1024, &mut out);
            assert_eq!(out.len(), 1, "{out:?}");
            assert!(matches!(out[0], Input::Fail(_, c) if c == code), "{out:?}");
        }
        let mut out = Vec::new();
        let p = decode_chunks(b"zz\r\n", Codec::Json, 1024, &mut out);
        assert_eq!(p.used, 0);
        assert!(matches!(out[0], Input::Fail(_, PROTOCOL_ERROR)));
    }

    #[test]
    fn closes_are_echoed_or_refused() {
        assert_eq!(close_reply(&[]), Input::Close(NORMAL));
        assert_eq!(close_reply(&4000u16.to_be_bytes()), Input::Close(4000));
        assert!(matches!(
            close_reply(&1005u16.to_be_bytes()),
            Input::Fail(_, PROTOCOL_ERROR)
        ));
    }
}

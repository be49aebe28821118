//! How a stream's messages travel (transport and codec) and the one entry point that encodes
//! or decodes a message in either codec; pure, called on the core that owns the stream.

use super::{msgpack, ClientMessage, DecodeError, MsgBody, HEARTBEAT};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Chunked,
    WebSocket,
    Sse,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Json,
    MsgPack,
}

/// How a stream's messages travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode {
    pub transport: Transport,
    pub codec: Codec,
}

impl Default for Mode {
    fn default() -> Self {
        Mode {
            transport: Transport::Chunked,
            codec: Codec::Json,
        }
    }
}

/// WebSocket close codes (RFC 6455 §7.4.1); a stream's final item carries one, whatever its
/// transport, and only a WebSocket puts it on the wire.
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const INVALID_DATA: u16 = 1007;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    /// "Service restart": with the move signal as its reason, "reconnect to this location".
    pub const SERVICE_RESTART: u16 = 1012;
}

/// A message to `to` (`y` 3 or 4, with `s` unless `seq` is None) in `codec`.
pub fn encode(out: &mut Vec<u8>, codec: Codec, to: &str, m: &MsgBody, seq: Option<u64>) {
    let (from, body) = (&*m.from, &*m.body);
    match (codec, m.channel.as_deref()) {
        (Codec::Json, Some(c)) => super::encode_channel_msg(out, from, to, c, body, seq),
        (Codec::Json, None) => super::encode_user_msg(out, from, to, body, seq),
        (Codec::MsgPack, Some(c)) => msgpack::encode_channel_msg(out, from, to, c, body, seq),
        (Codec::MsgPack, None) => msgpack::encode_user_msg(out, from, to, body, seq),
    }
}

/// The heartbeat `{"y":0}` in `codec`.
pub fn encode_heartbeat(out: &mut Vec<u8>, codec: Codec) {
    match codec {
        Codec::Json => out.extend_from_slice(HEARTBEAT),
        Codec::MsgPack => msgpack::encode_heartbeat(out),
    }
}

/// `{"error":reason}` in `codec`.
pub fn encode_error(out: &mut Vec<u8>, codec: Codec, reason: &str) {
    match codec {
        Codec::Json => super::encode_json_error(out, reason),
        Codec::MsgPack => msgpack::encode_error(out, reason),
    }
}

/// The move signal `{"error":"moved","location":..}` in `codec`.
pub fn encode_moved(out: &mut Vec<u8>, codec: Codec, location: &str) {
    match codec {
        Codec::Json => super::encode_json_moved(out, location),
        Codec::MsgPack => msgpack::encode_moved(out, location),
    }
}

/// One client message in `codec`.
pub fn decode(codec: Codec, payload: &[u8]) -> Result<ClientMessage, DecodeError> {
    match codec {
        Codec::Json => super::decode_client_message(payload),
        Codec::MsgPack => msgpack::decode_client_message(payload),
    }
}

/// A stored message as the JSON line `/msg` lists (the JSON a client receives, then `\n`).
pub fn json_line(to: &str, m: &MsgBody, seq: u64) -> String {
    let mut out = Vec::with_capacity(64 + m.body.len());
    encode(&mut out, Codec::Json, to, m, Some(seq));
    out.push(b'\n');
    String::from_utf8(out).expect("encoders write UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::MsgType;

    #[test]
    fn both_codecs_carry_the_same_message() {
        let m = MsgBody {
            kind: MsgType::Channel,
            from: "a".into(),
            channel: Some("c1".into()),
            body: "hi \"there\"".into(),
        };
        let mut json = Vec::new();
        encode(&mut json, Codec::Json, "b", &m, Some(7));
        assert_eq!(
            std::str::from_utf8(&json).unwrap(),
            r#"{"y":4,"f":"a","t":"b","c":"c1","b":"hi \"there\"","s":7}"#
        );
        let mut mp = Vec::new();
        encode(&mut mp, Codec::MsgPack, "b", &m, Some(7));
        let v = rmpv::decode::read_value(&mut &mp[..]).unwrap();
        assert_eq!(v["s"].as_u64(), Some(7));
        assert_eq!(v["c"].as_str(), Some("c1"));
        assert_eq!(
            json_line("b", &m, 7),
            format!("{}\n", std::str::from_utf8(&json).unwrap())
        );
        let mut hb = Vec::new();
        encode_heartbeat(&mut hb, Codec::Json);
        assert_eq!(hb, HEARTBEAT);
        let mut e = Vec::new();
        encode_error(&mut e, Codec::Json, "bad \"x\"");
        assert_eq!(e, br#"{"error":"bad \"x\""}"#);
    }
}

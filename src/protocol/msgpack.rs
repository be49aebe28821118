//! MessagePack codec (`&codec=msgpack`): the same messages as the JSON codec, as maps with the
//! same keys (`y f t c u b s`, and `error`). Pure, no I/O; runs on the stream's core.

use rmpv::Value;

use super::{ClientMessage, DecodeError, Fields};

/// Decodes one client message; the payload must be exactly one map.
pub fn decode_client_message(payload: &[u8]) -> Result<ClientMessage, DecodeError> {
    let mut rd = payload;
    let v = rmpv::decode::read_value(&mut rd).map_err(|_| DecodeError::InvalidMsgPack)?;
    if !rd.is_empty() {
        return Err(DecodeError::InvalidMsgPack);
    }
    let Value::Map(pairs) = v else {
        return Err(DecodeError::InvalidMsgPack);
    };
    let mut fields = Fields::default();
    for (k, v) in pairs {
        let Some(key) = k.as_str() else { continue };
        let int = v.as_u64();
        fields.set(key, int, || match v {
            Value::String(s) => s.into_str(),
            _ => None,
        })?;
    }
    fields.finish()
}

fn key_str(out: &mut Vec<u8>, key: &str, value: &str) {
    // Writing into a Vec cannot fail.
    let _ = rmp::encode::write_str(out, key);
    let _ = rmp::encode::write_str(out, value);
}

fn key_uint(out: &mut Vec<u8>, key: &str, value: u64) {
    let _ = rmp::encode::write_str(out, key);
    let _ = rmp::encode::write_uint(out, value);
}

/// `{y:3, f, t, b, s?}`
pub fn encode_user_msg(out: &mut Vec<u8>, from: &str, to: &str, body: &str, seq: Option<u64>) {
    let _ = rmp::encode::write_map_len(out, 4 + u32::from(seq.is_some()));
    key_uint(out, "y", 3);
    key_str(out, "f", from);
    key_str(out, "t", to);
    key_str(out, "b", body);
    if let Some(s) = seq {
        key_uint(out, "s", s);
    }
}

/// `{y:4, f, t, c, b, s?}`
pub fn encode_channel_msg(
    out: &mut Vec<u8>,
    from: &str,
    to: &str,
    channel: &str,
    body: &str,
    seq: Option<u64>,
) {
    let _ = rmp::encode::write_map_len(out, 5 + u32::from(seq.is_some()));
    key_uint(out, "y", 4);
    key_str(out, "f", from);
    key_str(out, "t", to);
    key_str(out, "c", channel);
    key_str(out, "b", body);
    if let Some(s) = seq {
        key_uint(out, "s", s);
    }
}

/// `{y:0}`
pub fn encode_heartbeat(out: &mut Vec<u8>) {
    let _ = rmp::encode::write_map_len(out, 1);
    key_uint(out, "y", 0);
}

/// `{error: reason}`
pub fn encode_error(out: &mut Vec<u8>, reason: &str) {
    let _ = rmp::encode::write_map_len(out, 1);
    key_str(out, "error", reason);
}

/// The move signal: a map `{"error":"moved","location":..}`.
pub fn encode_moved(out: &mut Vec<u8>, location: &str) {
    let _ = rmp::encode::write_map_len(out, 2);
    key_str(out, "error", "moved");
    key_str(out, "location", location);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::MsgType;

    fn map(pairs: Vec<(&str, Value)>) -> Vec<u8> {
        let v = Value::Map(
            pairs
                .into_iter()
                .map(|(k, v)| (Value::from(k), v))
                .collect(),
        );
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, &v).unwrap();
        out
    }

    #[test]
    fn decodes_like_json() {
        let m = decode_client_message(&map(vec![
            ("y", Value::from(3)),
            ("t", Value::from("user002")),
            ("b", Value::from("hi")),
        ]))
        .unwrap();
        assert_eq!(m.y, Some(MsgType::User));
        assert_eq!(m.t.as_deref(), Some("user002"));
        let ack = decode_client_message(&map(vec![("y", Value::from(5)), ("s", Value::from(7))]))
            .unwrap();
        assert_eq!(ack.s, Some(7));
    }

    #[test]
    fn errors() {
        assert_eq!(
            decode_client_message(b"\xc1"),
            Err(DecodeError::InvalidMsgPack)
        );
        assert_eq!(
            decode_client_message(&map(vec![("y", Value::from(9))])),
            Err(DecodeError::UnknownType)
        );
        assert_eq!(
            decode_client_message(&map(vec![("y", Value::from(1))])),
            Err(DecodeError::Missing("c"))
        );
        assert_eq!(
            decode_client_message(&map(vec![("y", Value::from(3)), ("t", Value::from(5))])),
            Err(DecodeError::Invalid("t"))
        );
        let mut two = map(vec![("y", Value::from(0))]);
        two.extend(map(vec![("y", Value::from(0))]));
        assert_eq!(
            decode_client_message(&two),
            Err(DecodeError::InvalidMsgPack)
        );
        // Every prefix of a valid message is refused, never mis-read.
        let full = map(vec![
            ("y", Value::from(4)),
            ("c", Value::from("ch")),
            ("b", Value::from("x")),
        ]);
        for cut in 0..full.len() {
            assert!(decode_client_message(&full[..cut]).is_err(), "prefix {cut}");
        }
    }

    #[test]
    fn encoders_round_trip_through_a_generic_decoder() {
        let mut out = Vec::new();
        encode_channel_msg(&mut out, "op", "u1", "ch", "héllo", Some(9));
        let v = rmpv::decode::read_value(&mut &out[..]).unwrap();
        let get = |k: &str| {
            v.as_map()
                .unwrap()
                .iter()
                .find(|(kk, _)| kk.as_str() == Some(k))
                .map(|(_, vv)| vv.clone())
                .unwrap()
        };
        assert_eq!(get("y").as_u64(), Some(4));
        assert_eq!(get("c").as_str(), Some("ch"));
        assert_eq!(get("b").as_str(), Some("héllo"));
        assert_eq!(get("s").as_u64(), Some(9));
        let mut hb = Vec::new();
        encode_heartbeat(&mut hb);
        assert_eq!(
            decode_client_message(&hb).unwrap().y,
            Some(MsgType::Heartbeat)
        );
        let mut e = Vec::new();
        encode_error(&mut e, "replaced");
        let v = rmpv::decode::read_value(&mut &e[..]).unwrap();
        assert_eq!(v.as_map().unwrap()[0].1.as_str(), Some("replaced"));
        let mut u = Vec::new();
        encode_user_msg(&mut u, "a", "b", "c", None);
        assert_eq!(
            rmpv::decode::read_value(&mut &u[..])
                .unwrap()
                .as_map()
                .unwrap()
                .len(),
            4
        );
    }
}

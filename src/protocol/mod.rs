//! The message model and its JSON codecs (keys `f` from, `t` to, `s` seq, `y` type, `u` user, `c` channel, `b` body); pure functions called on whichever core owns the stream.
//!
//! Decoding parses one complete payload (framing is the transport's job) with simd-json into a
//! [`ClientMessage`]; it does no I/O and reuses a per-thread scratch buffer and tape. Encoders
//! append to a `Vec<u8>` the caller owns and allocate nothing of their own.

pub mod codec;
pub mod msgpack;

use std::cell::RefCell;

pub use codec::{close, Codec, Mode, Transport};

use simd_json::prelude::*;
use simd_json::{Buffers, Tape};

/// Message type, the `y` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MsgType {
    /// `0`: keep-alive, answered with [`HEARTBEAT`].
    Heartbeat = 0,
    /// `1`: join channel `c`.
    Subscribe = 1,
    /// `2`: leave channel `c`.
    Unsubscribe = 2,
    /// `3`: body `b` to user `t`.
    User = 3,
    /// `4`: body `b` to every member of channel `c`.
    Channel = 4,
    /// `5`: everything up to seq `s` was received.
    Ack = 5,
}

impl MsgType {
    /// The type with wire number `n`, if any.
    pub fn from_u8(n: u8) -> Option<Self> {
        Some(match n {
            0 => MsgType::Heartbeat,
            1 => MsgType::Subscribe,
            2 => MsgType::Unsubscribe,
            3 => MsgType::User,
            4 => MsgType::Channel,
            5 => MsgType::Ack,
            _ => return None,
        })
    }
}

/// What the recipients of one message share: stored once, referenced by every recipient's
/// (uid, seq).
#[derive(Debug, PartialEq, Eq)]
pub struct MsgBody {
    pub kind: MsgType,
    pub from: Box<str>,
    pub channel: Option<Box<str>>,
    pub body: Box<str>,
}

/// One message as a client sends it. After [`decode_client_message`], `y` is always `Some`
/// and the fields its type requires are present and valid.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientMessage {
    /// Type.
    pub y: Option<MsgType>,
    /// From: never trusted, the server uses the authenticated uid.
    pub f: Option<String>,
    /// To (a uid).
    pub t: Option<String>,
    /// Channel id.
    pub c: Option<String>,
    /// User (a uid).
    pub u: Option<String>,
    /// Body.
    pub b: Option<String>,
    /// Sequence number (the acked seq for type 5).
    pub s: Option<u64>,
}

/// Why a client payload was refused; `Display` is the reason sent in `{"error":"<reason>"}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("invalid json")]
    InvalidJson,
    #[error("invalid msgpack")]
    InvalidMsgPack,
    #[error("unknown type")]
    UnknownType,
    #[error("missing {0}")]
    Missing(&'static str),
    #[error("invalid {0}")]
    Invalid(&'static str),
}

/// Payloads above this size do not keep their scratch memory after decoding.
const SCRATCH_KEEP_BYTES: usize = 256 * 1024;

/// Per-thread decode state: simd-json parses in place, so the payload is copied here first.
struct Scratch {
    input: Vec<u8>,
    buffers: Buffers,
    /// Always empty between calls; only its allocation is reused.
    tape: Tape<'static>,
}

impl Scratch {
    fn new() -> Self {
        Scratch {
            input: Vec::with_capacity(1024),
            buffers: Buffers::new(1024),
            tape: Tape(Vec::new()),
        }
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::new());
}

/// Parses one client message with simd-json. Must be an object; `y` an integer 0..=5 (else
/// UnknownType; missing y -> Missing("y")); unknown keys ignored; f/t/c/u/b must be strings when
/// present (else Invalid(key)), s a non-negative integer (else Invalid("s")). Required per type:
/// 1 and 2 need c (valid id); 3 needs t (valid id) and b; 4 needs c (valid id) and b; 5 needs s.
/// A duplicated key takes its last value.
pub fn decode_client_message(payload: &[u8]) -> Result<ClientMessage, DecodeError> {
    SCRATCH.with(|cell| {
        let mut guard = cell.borrow_mut();
        let scratch = &mut *guard;
        scratch.input.clear();
        scratch.input.extend_from_slice(payload);
        let mut tape = std::mem::replace(&mut scratch.tape, Tape(Vec::new())).reset();
        let parsed = if has_lone_high_surrogate(payload) {
            Err(DecodeError::InvalidJson)
        } else {
            simd_json::fill_tape(&mut scratch.input, &mut scratch.buffers, &mut tape)
                .map_err(|_| DecodeError::InvalidJson)
        };
        let result = parsed.and_then(|()| message_from_tape(&tape));
        scratch.tape = tape.reset();
        if payload.len() > SCRATCH_KEEP_BYTES {
            *scratch = Scratch::new();
        }
        result
    })
}

/// True when a `\uD800`-`\uDBFF` escape is not followed by another `\u` escape: simd-json 0.14
/// silently decodes such a lone high surrogate as U+0000 instead of rejecting it. (A following
/// `\u` that is not a low surrogate, a lone low surrogate and bad hex are rejected by simd-json.)
fn has_lone_high_surrogate(payload: &[u8]) -> bool {
    let mut i = 0;
    while let Some(off) = payload[i..].iter().position(|&b| b == b'\\') {
        let at = i + off;
        let esc = &payload[at..];
        if esc.len() >= 6 && esc[1] == b'u' {
            let high = matches!(esc[2], b'd' | b'D')
                && matches!(esc[3], b'8'..=b'9' | b'a' | b'b' | b'A' | b'B');
            if high && !esc[6..].starts_with(b"\\u") {
                return true;
            }
            i = at + 6;
        } else {
            i = at + 2;
        }
        if i >= payload.len() {
            break;
        }
    }
    false
}

fn message_from_tape(tape: &Tape<'_>) -> Result<ClientMessage, DecodeError> {
    let root = tape.as_value();
    let obj = root.as_object().ok_or(DecodeError::InvalidJson)?;
    let mut fields = Fields::default();
    for (key, v) in &obj {
        fields.set(key, v.as_u64(), || v.as_str().map(str::to_owned))?;
    }
    fields.finish()
}

/// A message's fields as a decoder meets them, whatever the codec.
#[derive(Default)]
pub(crate) struct Fields {
    m: ClientMessage,
    /// None when absent, Some(None) when present but not a non-negative integer.
    y: Option<Option<u64>>,
}

impl Fields {
    /// Takes the value of `key`: `int` is its integer reading, `string` its string reading.
    /// Unknown keys are ignored.
    pub(crate) fn set(
        &mut self,
        key: &str,
        int: Option<u64>,
        string: impl FnOnce() -> Option<String>,
    ) -> Result<(), DecodeError> {
        let m = &mut self.m;
        let (slot, name) = match key {
            "y" => {
                self.y = Some(int);
                return Ok(());
            }
            "s" => {
                m.s = Some(int.ok_or(DecodeError::Invalid("s"))?);
                return Ok(());
            }
            "f" => (&mut m.f, "f"),
            "t" => (&mut m.t, "t"),
            "c" => (&mut m.c, "c"),
            "u" => (&mut m.u, "u"),
            "b" => (&mut m.b, "b"),
            _ => return Ok(()),
        };
        *slot = Some(string().ok_or(DecodeError::Invalid(name))?);
        Ok(())
    }

    pub(crate) fn finish(self) -> Result<ClientMessage, DecodeError> {
        validate(self.m, self.y)
    }
}

/// Checks the type and the fields it requires; shared by the JSON and MessagePack decoders.
/// `y` is None when absent, Some(None) when present but not a non-negative integer.
fn validate(mut m: ClientMessage, y: Option<Option<u64>>) -> Result<ClientMessage, DecodeError> {
    let ty = match y {
        None => return Err(DecodeError::Missing("y")),
        Some(n) => n
            .and_then(|n| u8::try_from(n).ok())
            .and_then(MsgType::from_u8)
            .ok_or(DecodeError::UnknownType)?,
    };
    m.y = Some(ty);
    match ty {
        MsgType::Heartbeat => {}
        MsgType::Subscribe | MsgType::Unsubscribe => require_id(&m.c, "c")?,
        MsgType::User => {
            require_id(&m.t, "t")?;
            require(&m.b, "b")?;
        }
        MsgType::Channel => {
            require_id(&m.c, "c")?;
            require(&m.b, "b")?;
        }
        MsgType::Ack => require(&m.s, "s")?,
    }
    Ok(m)
}

fn require<T>(field: &Option<T>, name: &'static str) -> Result<(), DecodeError> {
    match field {
        Some(_) => Ok(()),
        None => Err(DecodeError::Missing(name)),
    }
}

fn require_id(field: &Option<String>, name: &'static str) -> Result<(), DecodeError> {
    match field {
        Some(id) if valid_id(id) => Ok(()),
        Some(_) => Err(DecodeError::Invalid(name)),
        None => Err(DecodeError::Missing(name)),
    }
}

/// uid / channel id rule: 1..=128 bytes, valid UTF-8, no ASCII control chars, no whitespace.
pub fn valid_id(s: &str) -> bool {
    (1..=128).contains(&s.len()) && !s.chars().any(|c| c.is_ascii_control() || c.is_whitespace())
}

/// The heartbeat, sent by either side.
pub const HEARTBEAT: &[u8] = br#"{"y":0}"#;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Whether `b` must be escaped in a JSON string.
fn must_escape(b: u8) -> bool {
    (b < 0x20) | (b == b'"') | (b == b'\\')
}

/// Whether any byte of `b` must be escaped. Branch-free over 16-byte blocks so the compiler
/// vectorizes it (the byte loop below was 4% of a 10,000-member fan-out's CPU).
fn needs_escape(b: &[u8]) -> bool {
    b.chunks(16)
        .any(|c| c.iter().fold(false, |acc, &x| acc | must_escape(x)))
}

/// Appends `s` as a JSON string: `"` and `\` backslash-escaped, control chars as `\u00XX`,
/// everything else (all non-ASCII included) copied as UTF-8 (RFC 8259).
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    if !needs_escape(bytes) {
        // The common case, once per member of a fan-out: one copy.
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if !must_escape(b) {
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        match b {
            b'"' => out.extend_from_slice(br#"\""#),
            b'\\' => out.extend_from_slice(br"\\"),
            _ => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]),
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

fn write_key_str(out: &mut Vec<u8>, key: &[u8], value: &str) {
    out.extend_from_slice(key);
    write_json_str(out, value);
}

fn write_seq(out: &mut Vec<u8>, seq: Option<u64>) {
    if let Some(seq) = seq {
        out.extend_from_slice(br#","s":"#);
        out.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
    }
}

/// `{"y":3,"f":..,"t":..,"b":..,"s":N}` (no `"s"` when `seq` is None).
pub fn encode_user_msg(out: &mut Vec<u8>, from: &str, to: &str, body: &str, seq: Option<u64>) {
    out.reserve(32 + from.len() + to.len() + body.len());
    write_key_str(out, br#"{"y":3,"f":"#, from);
    write_key_str(out, br#","t":"#, to);
    write_key_str(out, br#","b":"#, body);
    write_seq(out, seq);
    out.push(b'}');
}

/// `{"y":4,"f":..,"t":..,"c":..,"b":..,"s":N}` (no `"s"` when `seq` is None).
pub fn encode_channel_msg(
    out: &mut Vec<u8>,
    from: &str,
    to: &str,
    channel: &str,
    body: &str,
    seq: Option<u64>,
) {
    out.reserve(40 + from.len() + to.len() + channel.len() + body.len());
    write_key_str(out, br#"{"y":4,"f":"#, from);
    write_key_str(out, br#","t":"#, to);
    write_key_str(out, br#","c":"#, channel);
    write_key_str(out, br#","b":"#, body);
    write_seq(out, seq);
    out.push(b'}');
}

/// `{"error":"..."}`.
pub fn encode_json_error(out: &mut Vec<u8>, reason: &str) {
    write_key_str(out, br#"{"error":"#, reason);
    out.push(b'}');
}

/// The move signal `{"error":"moved","location":..}`.
pub fn encode_json_moved(out: &mut Vec<u8>, location: &str) {
    write_key_str(out, br#"{"error":"moved","location":"#, location);
    out.push(b'}');
}

/// The move signal's location for `uid` on the node at `origin` (`http(s)://HOST[:PORT]`, a
/// trailing `/` allowed): `ORIGIN/connect?uid=U`. The query names the user only: a client
/// reconnects there with its own credentials and options. None when `origin` is not one.
pub fn move_location(origin: &str, uid: &str) -> Option<String> {
    let origin = origin.strip_suffix('/').unwrap_or(origin);
    let (_, authority) = origin
        .split_once("://")
        .filter(|(scheme, _)| matches!(*scheme, "http" | "https"))?;
    let host_char = |b: u8| b.is_ascii_alphanumeric() || b".-_~:[]%".contains(&b);
    if authority.is_empty() || !authority.bytes().all(host_char) || authority.len() > 255 {
        return None;
    }
    let mut out = format!("{origin}/connect?uid=");
    for b in uid.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn ok(payload: &str) -> ClientMessage {
        decode_client_message(payload.as_bytes()).unwrap_or_else(|e| panic!("{payload}: {e}"))
    }

    fn bad(payload: &str) -> DecodeError {
        decode_client_message(payload.as_bytes()).expect_err(payload)
    }

    fn some(s: &str) -> Option<String> {
        Some(s.to_string())
    }

    #[test]
    fn seed_examples_decode() {
        assert_eq!(
            ok(r#"{"y": 1, "f": "user001", "c": "channel001"}"#),
            ClientMessage {
                y: Some(MsgType::Subscribe),
                f: some("user001"),
                c: some("channel001"),
                ..Default::default()
            }
        );
        assert_eq!(
            ok(r#"{"y": 2, "f": "user001", "c": "channel001"}"#).y,
            Some(MsgType::Unsubscribe)
        );
        assert_eq!(
            ok(r#"{"y": 3, "f": "user001", "t": "user002", "b": "this is a message body"}"#),
            ClientMessage {
                y: Some(MsgType::User),
                f: some("user001"),
                t: some("user002"),
                b: some("this is a message body"),
                ..Default::default()
            }
        );
        assert_eq!(
            ok(r#"{"y": 4, "f": "user001", "c": "channel1", "b": "this is a message body"}"#),
            ClientMessage {
                y: Some(MsgType::Channel),
                f: some("user001"),
                c: some("channel1"),
                b: some("this is a message body"),
                ..Default::default()
            }
        );
        assert_eq!(
            ok(r#"{"y":5,"f":"user001","s":1}"#),
            ClientMessage {
                y: Some(MsgType::Ack),
                f: some("user001"),
                s: Some(1),
                ..Default::default()
            }
        );
        assert_eq!(ok(r#"{"y": 5, "f": "user001", "s": 1}"#).s, Some(1));
        assert_eq!(
            ok(r#"{"y":0}"#),
            ClientMessage {
                y: Some(MsgType::Heartbeat),
                ..Default::default()
            }
        );
        assert_eq!(
            ok(std::str::from_utf8(HEARTBEAT).unwrap()).y,
            Some(MsgType::Heartbeat)
        );
        // What the server sends decodes too.
        let m = ok(
            r#"{"y": 3, "f": "user002", "t": "user001", "b": "this is a message body", "s": 123}"#,
        );
        assert_eq!(m.s, Some(123));
        let m = ok(
            r#"{"y": 4, "f": "user002", "t": "user001", "c": "channel1", "b": "this is a message body", "s": 123}"#,
        );
        assert_eq!(
            (m.t, m.c, m.s),
            (some("user001"), some("channel1"), Some(123))
        );
        // The seed document's last example lacks a quote before b: it is not JSON.
        assert_eq!(
            bad(
                r#"{"y": 4, "f": "user002", "t": "user001", "c": "channel1", b": "this is a message body", "s": 123}"#
            ),
            DecodeError::InvalidJson
        );
        // SPEC.md examples
        assert_eq!(
            ok(r#"{"y":3,"f":"user001","t":"user002","b":"hi"}"#).b,
            some("hi")
        );
        assert_eq!(
            ok(r#"{"y":4,"f":"user001","c":"channel1","b":"hi"}"#).c,
            some("channel1")
        );
        assert_eq!(ok(r#"{"y":5,"s":1}"#).s, Some(1));
    }

    #[test]
    fn lenient_where_harmless() {
        // unknown keys (of any type) are ignored, whitespace allowed, key order free, u kept
        let m = ok(" {\"x\":[1,{\"z\":null}],\"b\":\"\",\"t\":\"u2\",\"u\":\"u9\",\"y\":3 }\n");
        assert_eq!((m.t, m.b, m.u), (some("u2"), some(""), some("u9")));
        // duplicate key: last wins
        assert_eq!(ok(r#"{"y":5,"s":1,"s":7}"#).s, Some(7));
        assert_eq!(ok(r#"{"y":5,"s":18446744073709551615}"#).s, Some(u64::MAX));
    }

    #[test]
    fn error_kinds() {
        use DecodeError::*;
        let cases: &[(&str, DecodeError)] = &[
            ("", InvalidJson),
            ("{", InvalidJson),
            ("nope", InvalidJson),
            (r#"{"y":0} {"y":0}"#, InvalidJson),
            (r#"{"y":0"#, InvalidJson),
            (r#"[{"y":0}]"#, InvalidJson),
            ("3", InvalidJson),
            (r#""{\"y\":0}""#, InvalidJson),
            ("{\"y\":3,\"t\":\"u\",\"b\":\"\u{1}\"}", InvalidJson), // raw control char in a string
            (r#"{"y":3,"t":"u","b":"\ud800"}"#, InvalidJson),       // lone high surrogate
            (r#"{"y":3,"t":"u","b":"\uDBFFx"}"#, InvalidJson),
            (r#"{"y":3,"t":"u","b":"a\\\ud800"}"#, InvalidJson),
            (r#"{"y":3,"t":"u","b":"\ud800\u0041"}"#, InvalidJson),
            (r#"{"y":3,"t":"u","b":"\udc00"}"#, InvalidJson), // lone low surrogate
            (r#"{"y":3,"t":"u","b":"\u00zz"}"#, InvalidJson),
            (r#"{"y":3,"t":"u","b":"\x"}"#, InvalidJson),
            (r#"{"y":0,"b":"\ud800""#, InvalidJson),
            ("{}", Missing("y")),
            (r#"{"f":"u1"}"#, Missing("y")),
            (r#"{"y":6}"#, UnknownType),
            (r#"{"y":256}"#, UnknownType),
            (r#"{"y":-1}"#, UnknownType),
            (r#"{"y":3.0}"#, UnknownType),
            (r#"{"y":"3"}"#, UnknownType),
            (r#"{"y":null}"#, UnknownType),
            (r#"{"y":true}"#, UnknownType),
            (r#"{"y":0,"f":1}"#, Invalid("f")),
            (r#"{"y":0,"t":null}"#, Invalid("t")),
            (r#"{"y":0,"c":[]}"#, Invalid("c")),
            (r#"{"y":0,"u":{}}"#, Invalid("u")),
            (r#"{"y":0,"b":false}"#, Invalid("b")),
            (r#"{"y":5,"s":-1}"#, Invalid("s")),
            (r#"{"y":5,"s":1.5}"#, Invalid("s")),
            (r#"{"y":5,"s":"1"}"#, Invalid("s")),
            (r#"{"y":1}"#, Missing("c")),
            (r#"{"y":2,"c":""}"#, Invalid("c")),
            (r#"{"y":1,"c":"a b"}"#, Invalid("c")),
            (r#"{"y":3,"b":"x"}"#, Missing("t")),
            (r#"{"y":3,"t":"u2"}"#, Missing("b")),
            (r#"{"y":3,"t":"u\n2","b":"x"}"#, Invalid("t")),
            (r#"{"y":4,"b":"x"}"#, Missing("c")),
            (r#"{"y":4,"c":"ch"}"#, Missing("b")),
            (r#"{"y":5}"#, Missing("s")),
        ];
        for (payload, want) in cases {
            assert_eq!(&bad(payload), want, "{payload}");
        }
        assert_eq!(Missing("c").to_string(), "missing c");
        assert_eq!(Invalid("t").to_string(), "invalid t");
        assert_eq!(UnknownType.to_string(), "unknown type");
        assert_eq!(InvalidJson.to_string(), "invalid json");
    }

    #[test]
    fn decoder_state_survives_errors_and_big_payloads() {
        assert_eq!(bad("{\"y\":"), DecodeError::InvalidJson);
        let body = "x".repeat(SCRATCH_KEEP_BYTES * 2);
        let big = format!(r#"{{"y":3,"t":"u2","b":"{body}"}}"#);
        assert_eq!(ok(&big).b.as_deref(), Some(body.as_str()));
        assert_eq!(ok(r#"{"y":0}"#).y, Some(MsgType::Heartbeat));
        // a short payload after a long one sees nothing of it
        assert_eq!(bad(r#"{"y":3,"t":"u2"}"#), DecodeError::Missing("b"));
    }

    #[test]
    fn ids() {
        assert!(valid_id("user001"));
        assert!(valid_id("用户-1@example.com"));
        assert!(valid_id("😀"));
        assert!(valid_id(&"a".repeat(128)));
        assert!(!valid_id(&"a".repeat(129)));
        assert!(valid_id(&"é".repeat(64))); // 128 bytes
        assert!(!valid_id(&"é".repeat(65))); // 130 bytes
        assert!(!valid_id(""));
        for bad in [
            "a b",
            "a\tb",
            "a\nb",
            "a\u{0}b",
            "a\u{7f}b",
            "a\u{a0}b",
            "a\u{3000}b",
        ] {
            assert!(!valid_id(bad), "{bad:?}");
        }
    }

    const NASTY: &[&str] = &[
        "",
        "plain",
        "quote \" inside",
        "back\\slash",
        "\\\"",
        "\"",
        "\\",
        "tab\tnewline\nreturn\rnul\u{0}bell\u{7}esc\u{1b}unit\u{1f}",
        "del\u{7f}",
        "emoji 😀👍🏽 and CJK 中文 and RTL עברית",
        "line sep \u{2028} para sep \u{2029}",
        "</script><script>alert(1)</script>",
        "{\"y\":0}",
        "\u{feff}bom",
    ];

    #[test]
    fn json_str_is_valid_and_round_trips() {
        for s in NASTY {
            let mut out = Vec::new();
            write_json_str(&mut out, s);
            let back: String =
                serde_json::from_slice(&out).unwrap_or_else(|e| panic!("{s:?}: {e}"));
            assert_eq!(&back, s);
            assert!(!out[1..out.len() - 1].iter().any(|&b| b < 0x20), "{s:?}");
        }
        let mut out = Vec::new();
        write_json_str(&mut out, "a\"b\\c\nd\u{1}");
        assert_eq!(out, br#""a\"b\\c\u000ad\u0001""#);
    }

    #[test]
    fn json_str_escapes_at_every_position_of_a_block() {
        // The escape check runs over 16-byte blocks: a special byte anywhere, in any block,
        // must take the escaping path; none must copy as is.
        for special in ['"', '\\', '\n', '\u{1}', '\u{1f}'] {
            for len in [1, 15, 16, 17, 31, 32, 33, 100] {
                for at in 0..len {
                    let mut s: String = "a".repeat(len);
                    s.replace_range(at..at + 1, &special.to_string());
                    let mut out = Vec::new();
                    write_json_str(&mut out, &s);
                    let back: String = serde_json::from_slice(&out).unwrap();
                    assert_eq!(back, s, "{special:?} at {at} of {len}");
                    assert!(!out.iter().any(|&b| b < 0x20), "{special:?} at {at}");
                    assert_eq!(
                        out.len(),
                        len + if special == '"' || special == '\\' {
                            3
                        } else {
                            7
                        }
                    );
                }
            }
        }
        let plain = "é".repeat(40) + "x";
        let mut out = Vec::new();
        write_json_str(&mut out, &plain);
        assert_eq!(out, serde_json::to_vec(&plain).unwrap());
    }

    #[test]
    fn encoders_append_and_produce_valid_json() {
        let mut out = b"prefix".to_vec();
        encode_user_msg(&mut out, "user002", "user001", "hi", Some(123));
        assert_eq!(
            &out[6..],
            br#"{"y":3,"f":"user002","t":"user001","b":"hi","s":123}"#
        );
        out.clear();
        encode_user_msg(&mut out, "a", "b", "c", None);
        assert_eq!(out, br#"{"y":3,"f":"a","t":"b","b":"c"}"#);
        out.clear();
        encode_channel_msg(
            &mut out,
            "user002",
            "user001",
            "channel1",
            "hi",
            Some(u64::MAX),
        );
        assert_eq!(
            out,
            br#"{"y":4,"f":"user002","t":"user001","c":"channel1","b":"hi","s":18446744073709551615}"#
        );
        out.clear();
        encode_json_error(&mut out, "replaced");
        assert_eq!(out, br#"{"error":"replaced"}"#);

        for s in NASTY {
            let mut out = Vec::new();
            encode_user_msg(&mut out, s, s, s, Some(7));
            let v: Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(v, json!({"y":3,"f":s,"t":s,"b":s,"s":7}));
            out.clear();
            encode_channel_msg(&mut out, s, s, s, s, None);
            let v: Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(v, json!({"y":4,"f":s,"t":s,"c":s,"b":s}));
            out.clear();
            encode_json_error(&mut out, s);
            let v: Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(v, json!({"error":s}));
        }
    }

    #[test]
    fn encode_then_decode_round_trips() {
        for s in NASTY {
            let mut out = Vec::new();
            encode_user_msg(&mut out, s, "user001", s, Some(42));
            let m = ok(std::str::from_utf8(&out).unwrap());
            assert_eq!(m.f.as_deref(), Some(*s));
            assert_eq!(m.b.as_deref(), Some(*s));
            assert_eq!(m.s, Some(42));
        }
        // escapes written by other encoders decode to the same text
        let m = ok(r#"{"y":3,"t":"u\u00e9","b":"\u00e9\ud83d\ude00\n\"\\\/"}"#);
        assert_eq!(m.t.as_deref(), Some("ué"));
        assert_eq!(m.b.as_deref(), Some("é😀\n\"\\/"));
        // an escaped backslash followed by the text ud800 is not a surrogate
        let m = ok(r#"{"y":3,"t":"u","b":"\\ud800\\"}"#);
        assert_eq!(m.b.as_deref(), Some(r"\ud800\"));
        let m = ok(r#"{"y":3,"t":"u","b":"\uD83D\uDE00"}"#);
        assert_eq!(m.b.as_deref(), Some("😀"));
    }

    #[test]
    fn move_locations() {
        assert_eq!(
            move_location("http://10.0.0.2:9000", "user001").as_deref(),
            Some("http://10.0.0.2:9000/connect?uid=user001")
        );
        assert_eq!(
            move_location("https://push.example.com/", "a b/é").as_deref(),
            Some("https://push.example.com/connect?uid=a%20b%2F%C3%A9")
        );
        assert_eq!(
            move_location("http://[::1]:9000", "u").as_deref(),
            Some("http://[::1]:9000/connect?uid=u")
        );
        for bad in [
            "",
            "10.0.0.2:9000",
            "ftp://h:1",
            "http://",
            "http://h:1/connect",
            "http://h:1?x=1",
            "http://h\"x",
            "http://h\r\nX: y",
        ] {
            assert_eq!(move_location(bad, "u"), None, "{bad:?}");
        }
    }
}

//! The embedded store's on-disk format: segment headers and checksummed records. Pure
//! encode/decode, no I/O; used by a core (encoding) and at start-up (replay).
//!
//! A segment file is a 24-byte header (`IPUSHWAL` or `IPUSHSNP`, format version, core, core
//! count) followed by records: `[len u32][crc32 u32][payload]`, little-endian, where the CRC
//! covers the payload and the payload is a type byte and its fields. Strings are a u32 length
//! and UTF-8 bytes.
//!
//! Types 6 and 7 were added for idempotency keys without a version change, so logs written
//! before them load as they are (an older binary refuses a log that holds them, naming the
//! record as malformed): 6 is an append (type 1's fields) followed by its idempotency record
//! (id, fingerprint, answer, expiry), 7 is an idempotency record alone.
//!
//! Types 8 and 9 (added the same way) store a message with many recipients so that one
//! recipient's replay reads only the body: 8 is the body alone (type 1's fields up to the
//! expiry), 9 is a list of `(uid, seq)` entries of the latest type 8 record before it in the
//! same file. The store's index points at the record that holds a message's body (type 1, 6
//! or 8), so reading it back is one `pread` and a checksum.

use std::rc::Rc;

use crate::protocol::{MsgBody, MsgType};

pub const WAL_MAGIC: &[u8; 8] = b"IPUSHWAL";
pub const SNAP_MAGIC: &[u8; 8] = b"IPUSHSNP";
pub const VERSION: u32 = 1;
pub const HEADER_LEN: usize = 24;
/// A record larger than this is corruption, not data (messages are at most 16 MiB, a channel
/// message's member list is split into records well below this).
pub const MAX_RECORD: usize = 64 << 20;

const T_APPEND: u8 = 1;
const T_ACK: u8 = 2;
const T_SUB: u8 = 3;
const T_UNSUB: u8 = 4;
const T_META: u8 = 5;
const T_APPEND_KEYED: u8 = 6;
const T_IDEM: u8 = 7;
const T_BODY: u8 = 8;
const T_REFS: u8 = 9;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub snapshot: bool,
    pub core: u32,
    pub cores: u32,
}

pub fn encode_header(out: &mut Vec<u8>, h: Header) {
    out.extend_from_slice(if h.snapshot { SNAP_MAGIC } else { WAL_MAGIC });
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&h.core.to_le_bytes());
    out.extend_from_slice(&h.cores.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
}

pub fn decode_header(buf: &[u8]) -> Result<Header, &'static str> {
    if buf.len() < HEADER_LEN {
        return Err("file shorter than its header");
    }
    let snapshot = match &buf[..8] {
        m if m == WAL_MAGIC => false,
        m if m == SNAP_MAGIC => true,
        _ => return Err("not an ipush store file (bad magic)"),
    };
    let word = |i: usize| u32::from_le_bytes(buf[i..i + 4].try_into().expect("4 bytes"));
    if word(8) != VERSION {
        return Err("unsupported store format version");
    }
    Ok(Header {
        snapshot,
        core: word(12),
        cores: word(16),
    })
}

/// An idempotency record as stored (see `storage::IdemRecord`), borrowing from the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdemRec<'a> {
    pub id: &'a str,
    pub fingerprint: u64,
    pub answer: u64,
    pub expires: u64,
}

/// One decoded record, borrowing from the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Record<'a> {
    Append {
        kind: MsgType,
        from: &'a str,
        channel: Option<&'a str>,
        body: &'a str,
        expires: u64,
        entries: Vec<(&'a str, u64)>,
        /// The idempotency key this append answered (type 6).
        idem: Option<IdemRec<'a>>,
    },
    Idem(IdemRec<'a>),
    /// A message's body alone (type 8): its recipients follow in `Refs` records.
    Body {
        kind: MsgType,
        from: &'a str,
        channel: Option<&'a str>,
        body: &'a str,
        expires: u64,
    },
    /// Recipients of the latest `Body` before this record in its file (type 9).
    Refs {
        entries: Vec<(&'a str, u64)>,
    },
    Ack {
        uid: &'a str,
        last_ack: u64,
    },
    Sub {
        cid: &'a str,
        uid: &'a str,
    },
    Unsub {
        cid: &'a str,
        uid: &'a str,
    },
    Meta {
        uid: &'a str,
        max_seq: u64,
        last_ack: u64,
    },
}

#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A record and the bytes it took.
    Record(Record<'a>, usize),
    /// The buffer ends inside a record (a torn write).
    Incomplete,
    Corrupt(&'static str),
}

/// Writes a record whose payload `fill` produces, framing it with length and CRC.
fn frame(out: &mut Vec<u8>, fill: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; 8]);
    fill(out);
    let payload = &out[start + 8..];
    let len = payload.len() as u32;
    let crc = crc32fast::hash(payload);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// A message stored once for every `(uid, seq)` in `entries`.
pub fn encode_append(out: &mut Vec<u8>, body: &MsgBody, expires: u64, entries: &[(Rc<str>, u64)]) {
    frame(out, |p| append_fields(p, T_APPEND, body, expires, entries));
}

/// `encode_append` with the idempotency record of the publish, in the same record.
pub fn encode_append_keyed(
    out: &mut Vec<u8>,
    body: &MsgBody,
    expires: u64,
    entries: &[(Rc<str>, u64)],
    idem: IdemRec<'_>,
) {
    frame(out, |p| {
        append_fields(p, T_APPEND_KEYED, body, expires, entries);
        idem_fields(p, idem);
    });
}

/// A message's body alone; its recipients go in `encode_refs` records after it.
pub fn encode_body(out: &mut Vec<u8>, body: &MsgBody, expires: u64) {
    frame(out, |p| body_fields(p, T_BODY, body, expires));
}

/// Recipients of the latest body record before this one.
pub fn encode_refs(out: &mut Vec<u8>, entries: &[(Rc<str>, u64)]) {
    frame(out, |p| {
        p.push(T_REFS);
        entry_fields(p, entries);
    });
}

pub fn encode_idem(out: &mut Vec<u8>, idem: IdemRec<'_>) {
    frame(out, |p| {
        p.push(T_IDEM);
        idem_fields(p, idem);
    });
}

fn idem_fields(p: &mut Vec<u8>, r: IdemRec<'_>) {
    put_str(p, r.id);
    put_u64(p, r.fingerprint);
    put_u64(p, r.answer);
    put_u64(p, r.expires);
}

fn append_fields(
    p: &mut Vec<u8>,
    tag: u8,
    body: &MsgBody,
    expires: u64,
    entries: &[(Rc<str>, u64)],
) {
    body_fields(p, tag, body, expires);
    entry_fields(p, entries);
}

fn body_fields(p: &mut Vec<u8>, tag: u8, body: &MsgBody, expires: u64) {
    p.push(tag);
    p.push(body.kind as u8);
    put_str(p, &body.from);
    match &body.channel {
        Some(c) => {
            p.push(1);
            put_str(p, c);
        }
        None => p.push(0),
    }
    put_str(p, &body.body);
    put_u64(p, expires);
}

fn entry_fields(p: &mut Vec<u8>, entries: &[(Rc<str>, u64)]) {
    p.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for (uid, seq) in entries {
        put_str(p, uid);
        put_u64(p, *seq);
    }
}

pub fn encode_ack(out: &mut Vec<u8>, uid: &str, last_ack: u64) {
    frame(out, |p| {
        p.push(T_ACK);
        put_str(p, uid);
        put_u64(p, last_ack);
    });
}

pub fn encode_sub(out: &mut Vec<u8>, cid: &str, uid: &str, on: bool) {
    frame(out, |p| {
        p.push(if on { T_SUB } else { T_UNSUB });
        put_str(p, cid);
        put_str(p, uid);
    });
}

pub fn encode_meta(out: &mut Vec<u8>, uid: &str, max_seq: u64, last_ack: u64) {
    frame(out, |p| {
        p.push(T_META);
        put_str(p, uid);
        put_u64(p, max_seq);
        put_u64(p, last_ack);
    });
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Option<u8> {
        let v = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(v)
    }
    fn u32(&mut self) -> Option<u32> {
        let b = self.buf.get(self.pos..self.pos + 4)?;
        self.pos += 4;
        Some(u32::from_le_bytes(b.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        let b = self.buf.get(self.pos..self.pos + 8)?;
        self.pos += 8;
        Some(u64::from_le_bytes(b.try_into().ok()?))
    }
    fn str(&mut self) -> Option<&'a str> {
        let n = self.u32()? as usize;
        let b = self.buf.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        std::str::from_utf8(b).ok()
    }
}

impl<'a> Reader<'a> {
    /// A body's fields after its type byte: `(kind, from, channel, body, expires)`.
    #[allow(clippy::type_complexity)]
    fn body(&mut self) -> Option<(MsgType, &'a str, Option<&'a str>, &'a str, u64)> {
        let kind = MsgType::from_u8(self.u8()?)?;
        let from = self.str()?;
        let channel = match self.u8()? {
            0 => None,
            1 => Some(self.str()?),
            _ => return None,
        };
        Some((kind, from, channel, self.str()?, self.u64()?))
    }

    fn entries(&mut self) -> Option<Vec<(&'a str, u64)>> {
        let n = self.u32()? as usize;
        // Each entry takes at least 12 bytes: refuse counts the payload cannot hold.
        if n > (self.buf.len() - self.pos) / 12 {
            return None;
        }
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            entries.push((self.str()?, self.u64()?));
        }
        Some(entries)
    }

    fn idem(&mut self) -> Option<IdemRec<'a>> {
        Some(IdemRec {
            id: self.str()?,
            fingerprint: self.u64()?,
            answer: self.u64()?,
            expires: self.u64()?,
        })
    }
}

fn payload(p: &[u8]) -> Option<Record<'_>> {
    let mut r = Reader { buf: p, pos: 0 };
    let rec = match r.u8()? {
        tag @ (T_APPEND | T_APPEND_KEYED) => {
            let (kind, from, channel, body, expires) = r.body()?;
            let entries = r.entries()?;
            let idem = if tag == T_APPEND_KEYED {
                Some(r.idem()?)
            } else {
                None
            };
            Record::Append {
                kind,
                from,
                channel,
                body,
                expires,
                entries,
                idem,
            }
        }
        T_BODY => {
            let (kind, from, channel, body, expires) = r.body()?;
            Record::Body {
                kind,
                from,
                channel,
                body,
                expires,
            }
        }
        T_REFS => Record::Refs {
            entries: r.entries()?,
        },
        T_IDEM => Record::Idem(r.idem()?),
        T_ACK => Record::Ack {
            uid: r.str()?,
            last_ack: r.u64()?,
        },
        T_SUB => Record::Sub {
            cid: r.str()?,
            uid: r.str()?,
        },
        T_UNSUB => Record::Unsub {
            cid: r.str()?,
            uid: r.str()?,
        },
        T_META => Record::Meta {
            uid: r.str()?,
            max_seq: r.u64()?,
            last_ack: r.u64()?,
        },
        _ => return None,
    };
    (r.pos == p.len()).then_some(rec)
}

/// Decodes the record at the start of `buf`.
pub fn decode(buf: &[u8]) -> Decoded<'_> {
    if buf.len() < 8 {
        return Decoded::Incomplete;
    }
    let len = u32::from_le_bytes(buf[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
    if len == 0 || len > MAX_RECORD {
        return Decoded::Corrupt("impossible record length");
    }
    if buf.len() < 8 + len {
        return Decoded::Incomplete;
    }
    let p = &buf[8..8 + len];
    if crc32fast::hash(p) != crc {
        return Decoded::Corrupt("checksum mismatch");
    }
    match payload(p) {
        Some(r) => Decoded::Record(r, 8 + len),
        None => Decoded::Corrupt("malformed record"),
    }
}

/// The message a body-holding record (types 1, 6, 8) stores, and its expiry; `None` for any
/// other record.
pub fn message_of(r: &Record<'_>) -> Option<(MsgBody, u64)> {
    match *r {
        Record::Append {
            kind,
            from,
            channel,
            body,
            expires,
            ..
        }
        | Record::Body {
            kind,
            from,
            channel,
            body,
            expires,
        } => Some((
            MsgBody {
                kind,
                from: from.into(),
                channel: channel.map(Into::into),
                body: body.into(),
            },
            expires,
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> MsgBody {
        MsgBody {
            kind: MsgType::Channel,
            from: "op".into(),
            channel: Some("ch".into()),
            body: "héllo \"x\"".into(),
        }
    }

    fn sample() -> Vec<u8> {
        let mut out = Vec::new();
        encode_append(
            &mut out,
            &body(),
            99,
            &[(Rc::from("a"), 1), (Rc::from("b"), 7)],
        );
        encode_ack(&mut out, "a", 1);
        encode_sub(&mut out, "ch", "a", true);
        encode_sub(&mut out, "ch", "b", false);
        encode_meta(&mut out, "b", 7, 3);
        out
    }

    fn idem() -> IdemRec<'static> {
        IdemRec {
            id: "u:a k-1",
            fingerprint: 0xfeed,
            answer: 2,
            expires: 300,
        }
    }

    /// Records of every type, the keyed ones first.
    fn keyed_sample() -> Vec<u8> {
        let mut out = Vec::new();
        encode_append_keyed(&mut out, &body(), 99, &[(Rc::from("a"), 2)], idem());
        encode_idem(&mut out, idem());
        out.extend_from_slice(&sample());
        out
    }

    #[test]
    fn keyed_records_round_trip_beside_the_old_ones() {
        let buf = keyed_sample();
        let (first, n) = match decode(&buf) {
            Decoded::Record(r, n) => (r, n),
            other => panic!("{other:?}"),
        };
        match first {
            Record::Append {
                idem: i, entries, ..
            } => {
                assert_eq!(i, Some(idem()));
                assert_eq!(entries, [("a", 2)]);
            }
            other => panic!("{other:?}"),
        }
        match decode(&buf[n..]) {
            Decoded::Record(Record::Idem(i), _) => assert_eq!(i, idem()),
            other => panic!("{other:?}"),
        }
        // An old-format append decodes with no key.
        let old = sample();
        match decode(&old) {
            Decoded::Record(Record::Append { idem, .. }, _) => assert_eq!(idem, None),
            other => panic!("{other:?}"),
        }
        for cut in 0..n {
            assert_eq!(decode(&buf[..cut]), Decoded::Incomplete, "cut at {cut}");
        }
        for i in 0..n {
            let mut bad = buf.clone();
            bad[i] ^= 0x41;
            assert!(!matches!(decode(&bad), Decoded::Record(..)), "flip at {i}");
        }
    }

    /// An append as the first format wrote it (type 1, laid out byte by byte here, not by
    /// the encoder): this version must keep reading it, with no idempotency key.
    #[test]
    fn an_old_append_still_decodes() {
        let mut p = vec![T_APPEND, MsgType::User as u8];
        p.extend_from_slice(&2u32.to_le_bytes());
        p.extend_from_slice(b"op");
        p.push(0); // no channel
        p.extend_from_slice(&2u32.to_le_bytes());
        p.extend_from_slice(b"hi");
        p.extend_from_slice(&99u64.to_le_bytes());
        p.extend_from_slice(&1u32.to_le_bytes());
        p.extend_from_slice(&1u32.to_le_bytes());
        p.extend_from_slice(b"a");
        p.extend_from_slice(&5u64.to_le_bytes());
        let mut rec = (p.len() as u32).to_le_bytes().to_vec();
        rec.extend_from_slice(&crc32fast::hash(&p).to_le_bytes());
        rec.extend_from_slice(&p);
        let want = Record::Append {
            kind: MsgType::User,
            from: "op",
            channel: None,
            body: "hi",
            expires: 99,
            entries: vec![("a", 5)],
            idem: None,
        };
        assert_eq!(decode(&rec), Decoded::Record(want, rec.len()));
    }

    #[test]
    fn a_body_and_its_refs_round_trip() {
        let mut buf = Vec::new();
        encode_body(&mut buf, &body(), 99);
        let first = buf.len();
        encode_refs(&mut buf, &[(Rc::from("a"), 1), (Rc::from("b"), 7)]);
        let rec = match decode(&buf) {
            Decoded::Record(r, n) => {
                assert_eq!(n, first);
                r
            }
            other => panic!("{other:?}"),
        };
        let (m, exp) = message_of(&rec).expect("a body");
        assert_eq!(
            (&*m.body, m.channel.as_deref(), exp),
            (&*body().body, Some("ch"), 99)
        );
        match decode(&buf[first..]) {
            Decoded::Record(Record::Refs { entries }, n) => {
                assert_eq!(entries, [("a", 1), ("b", 7)]);
                assert_eq!(first + n, buf.len());
            }
            other => panic!("{other:?}"),
        }
        assert!(message_of(&Record::Refs { entries: vec![] }).is_none());
        for cut in 0..first {
            assert_eq!(decode(&buf[..cut]), Decoded::Incomplete, "cut at {cut}");
        }
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x41;
            let at = if i < first { 0 } else { first };
            assert!(
                !matches!(decode(&bad[at..]), Decoded::Record(..)),
                "flip at {i}"
            );
        }
    }

    #[test]
    fn round_trip() {
        let buf = sample();
        let mut pos = 0;
        let mut got = Vec::new();
        while pos < buf.len() {
            match decode(&buf[pos..]) {
                Decoded::Record(r, n) => {
                    got.push(format!("{r:?}"));
                    pos += n;
                }
                other => panic!("{other:?} at {pos}"),
            }
        }
        assert_eq!(got.len(), 5);
        assert!(
            got[0].contains("entries: [(\"a\", 1), (\"b\", 7)]"),
            "{}",
            got[0]
        );
    }

    #[test]
    fn every_prefix_is_incomplete_never_wrong() {
        let buf = sample();
        let first = match decode(&buf) {
            Decoded::Record(_, n) => n,
            other => panic!("{other:?}"),
        };
        for cut in 0..first {
            assert_eq!(decode(&buf[..cut]), Decoded::Incomplete, "cut at {cut}");
        }
    }

    #[test]
    fn any_flipped_byte_is_caught() {
        let buf = sample();
        let first = match decode(&buf) {
            Decoded::Record(_, n) => n,
            other => panic!("{other:?}"),
        };
        for i in 0..first {
            let mut bad = buf.clone();
            bad[i] ^= 0x41;
            match decode(&bad) {
                Decoded::Record(..) => panic!("flip at {i} not detected"),
                Decoded::Corrupt(_) | Decoded::Incomplete => {}
            }
        }
    }

    #[test]
    fn headers() {
        let mut out = Vec::new();
        let h = Header {
            snapshot: true,
            core: 1,
            cores: 2,
        };
        encode_header(&mut out, h);
        assert_eq!(out.len(), HEADER_LEN);
        assert_eq!(decode_header(&out), Ok(h));
        assert!(decode_header(b"NOTASTORExxxxxxxxxxxxxxx").is_err());
        assert!(decode_header(&out[..10]).is_err());
    }
}

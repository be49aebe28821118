//! Messages between nodes on the cluster bus: a versioned, length-checked binary frame around
//! a request (`Request`), its answer (`Answer`) or a liveness ping. Pure encode/decode; a frame that
//! does not decode is counted and dropped by the bridge, never acted on.
//!
//! Frame: `"IPB" version(1) kind(u8) from_node(u16) core(u16) id(u64)` then the body; all
//! integers little-endian, strings u32 length + UTF-8, the whole frame at most `MAX_FRAME`.

use super::NodeId;
use crate::ids::ShardId;
use crate::msg::{Answer, PubItem, Request};
use crate::protocol::{ClientMessage, MsgType};

pub const MAGIC: &[u8; 3] = b"IPB";
pub const VERSION: u8 = 1;
pub const HEADER: usize = 17;
pub const MAX_FRAME: usize = 32 << 20;

const K_REQ: u8 = 1;
const K_REP: u8 = 2;
const K_PING: u8 = 3;

#[derive(Debug)]
pub enum Body {
    /// `id == 0`: no answer wanted.
    Request(Request),
    Answer(Answer),
    Ping,
}

/// One frame: who sent it, which of its cores waits for the answer, and the request id.
#[derive(Debug)]
pub struct Frame {
    pub from: NodeId,
    pub core: ShardId,
    pub id: u64,
    pub body: Body,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("not an ipush bus frame")]
    Magic,
    #[error("unsupported bus protocol version {0}")]
    Version(u8),
    #[error("frame too large")]
    TooLarge,
    #[error("malformed frame")]
    Malformed,
}

struct W(Vec<u8>);

impl W {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        self.0.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.0.extend_from_slice(s.as_bytes());
    }
    fn opt(&mut self, s: &Option<String>) {
        match s {
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
            None => self.u8(0),
        }
    }
}

pub fn encode(f: &Frame) -> Vec<u8> {
    let mut w = W(Vec::with_capacity(64));
    w.0.extend_from_slice(MAGIC);
    w.u8(VERSION);
    w.u8(match f.body {
        Body::Request(_) => K_REQ,
        Body::Answer(_) => K_REP,
        Body::Ping => K_PING,
    });
    w.u16(f.from.0);
    w.u16(f.core.0 as u16);
    w.u64(f.id);
    match &f.body {
        Body::Request(r) => encode_req(&mut w, r),
        Body::Answer(r) => encode_rep(&mut w, r),
        Body::Ping => {}
    }
    w.0
}

fn encode_req(w: &mut W, r: &Request) {
    match r {
        Request::PubUser {
            to,
            from,
            body,
            ttl,
        } => {
            w.u8(1);
            w.str(to);
            w.str(from);
            w.str(body);
            w.u64(*ttl);
        }
        Request::PubChannel {
            channel,
            from,
            body,
            ttl,
        } => {
            w.u8(2);
            w.str(channel);
            w.str(from);
            w.str(body);
            w.u64(*ttl);
        }
        Request::Keyed { key, req } => {
            w.u8(9);
            w.str(key);
            encode_req(w, req);
        }
        Request::Sub { uid, cid } => {
            w.u8(3);
            w.str(uid);
            w.str(cid);
        }
        Request::Unsub { uid, cid } => {
            w.u8(4);
            w.str(uid);
            w.str(cid);
        }
        Request::Msg { uid } => {
            w.u8(5);
            w.str(uid);
        }
        Request::Disconnect { uid, location } => {
            w.u8(6);
            w.str(uid);
            w.opt(location);
        }
        Request::Client { uid, msg } => {
            w.u8(7);
            w.str(uid);
            w.u8(msg.y.map_or(255, |y| y as u8));
            for f in [&msg.f, &msg.t, &msg.c, &msg.u, &msg.b] {
                w.opt(f);
            }
            match msg.s {
                Some(s) => {
                    w.u8(1);
                    w.u64(s);
                }
                None => w.u8(0),
            }
        }
        // Stats, latencies and health are per node; these variants never cross the bus.
        Request::Stats | Request::Latency | Request::Health => w.u8(8),
        Request::PubBatch(items) => {
            w.u8(10);
            w.0.extend_from_slice(&(items.len() as u32).to_le_bytes());
            for i in items {
                w.str(&i.to);
                w.str(&i.from);
                w.str(&i.body);
                w.u64(i.ttl);
                w.opt(&i.idempotency_key);
            }
        }
    }
}

fn encode_rep(w: &mut W, r: &Answer) {
    match r {
        Answer::Ok => w.u8(1),
        Answer::Seq(s) => {
            w.u8(2);
            match s {
                Some(s) => {
                    w.u8(1);
                    w.u64(*s);
                }
                None => w.u8(0),
            }
        }
        Answer::Count(n) => {
            w.u8(3);
            w.u64(*n);
        }
        Answer::Msgs(list) => {
            w.u8(4);
            w.0.extend_from_slice(&(list.len() as u32).to_le_bytes());
            for m in list {
                w.str(m);
            }
        }
        Answer::Found(b) => {
            w.u8(5);
            w.u8(u8::from(*b));
        }
        Answer::Err(e) => {
            w.u8(6);
            w.str(e);
        }
        Answer::Stats(_) | Answer::Latency(_) => {
            w.u8(6);
            w.str("stats are not served across nodes");
        }
        Answer::Unavailable(e) => {
            w.u8(7);
            w.str(e);
        }
        Answer::Replayed(a) => {
            w.u8(8);
            encode_rep(w, a);
        }
        Answer::Refused(status, e) => {
            w.u8(9);
            w.u16(*status);
            w.str(e);
        }
        Answer::Batch(list) => {
            w.u8(10);
            w.0.extend_from_slice(&(list.len() as u32).to_le_bytes());
            for a in list {
                encode_rep(w, a);
            }
        }
    }
}

struct R<'a> {
    b: &'a [u8],
    p: usize,
}

impl<'a> R<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.p.checked_add(n).ok_or(WireError::Malformed)?;
        let s = self.b.get(self.p..end).ok_or(WireError::Malformed)?;
        self.p = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn str(&mut self) -> Result<String, WireError> {
        let n = self.u32()? as usize;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| WireError::Malformed)
    }
    fn opt(&mut self) -> Result<Option<String>, WireError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.str()?)),
            _ => Err(WireError::Malformed),
        }
    }
    /// A list length, refused when the rest of the frame cannot hold `n` entries of at least
    /// `min` bytes each.
    fn count(&mut self, min: usize) -> Result<usize, WireError> {
        let n = self.u32()? as usize;
        if n > (self.b.len() - self.p) / min {
            return Err(WireError::Malformed);
        }
        Ok(n)
    }
    fn opt_u64(&mut self) -> Result<Option<u64>, WireError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.u64()?)),
            _ => Err(WireError::Malformed),
        }
    }
}

pub fn decode(b: &[u8]) -> Result<Frame, WireError> {
    if b.len() > MAX_FRAME {
        return Err(WireError::TooLarge);
    }
    if b.len() < HEADER || &b[..3] != MAGIC {
        return Err(WireError::Magic);
    }
    if b[3] != VERSION {
        return Err(WireError::Version(b[3]));
    }
    let mut r = R { b, p: 4 };
    let kind = r.u8()?;
    let from = NodeId(r.u16()?);
    let core = ShardId(r.u16()? as usize);
    let id = r.u64()?;
    let body = match kind {
        K_REQ => Body::Request(decode_req(&mut r)?),
        K_REP => Body::Answer(decode_rep(&mut r)?),
        K_PING => Body::Ping,
        _ => return Err(WireError::Malformed),
    };
    if r.p != b.len() {
        return Err(WireError::Malformed);
    }
    Ok(Frame {
        from,
        core,
        id,
        body,
    })
}

fn decode_req(r: &mut R<'_>) -> Result<Request, WireError> {
    Ok(match r.u8()? {
        1 => Request::PubUser {
            to: r.str()?,
            from: r.str()?,
            body: r.str()?,
            ttl: r.u64()?,
        },
        2 => Request::PubChannel {
            channel: r.str()?,
            from: r.str()?,
            body: r.str()?,
            ttl: r.u64()?,
        },
        3 => Request::Sub {
            uid: r.str()?,
            cid: r.str()?,
        },
        4 => Request::Unsub {
            uid: r.str()?,
            cid: r.str()?,
        },
        5 => Request::Msg { uid: r.str()? },
        6 => Request::Disconnect {
            uid: r.str()?,
            location: r.opt()?,
        },
        7 => {
            let uid = r.str()?;
            let y = MsgType::from_u8(r.u8()?).ok_or(WireError::Malformed)?;
            let msg = ClientMessage {
                y: Some(y),
                f: r.opt()?,
                t: r.opt()?,
                c: r.opt()?,
                u: r.opt()?,
                b: r.opt()?,
                s: r.opt_u64()?,
            };
            Request::Client { uid, msg }
        }
        9 => {
            let key = r.str()?;
            // Only a publish carries a key, and never a second one (checked before decoding
            // it, so a frame of nested keys cannot recurse deeply).
            if r.b.get(r.p) == Some(&9) {
                return Err(WireError::Malformed);
            }
            let req = decode_req(r)?;
            if !matches!(req, Request::PubUser { .. } | Request::PubChannel { .. }) {
                return Err(WireError::Malformed);
            }
            Request::Keyed {
                key,
                req: Box::new(req),
            }
        }
        10 => {
            // to, from, body (4 bytes each at least), ttl, key flag.
            let n = r.count(21)?;
            let mut items = Vec::with_capacity(n);
            for _ in 0..n {
                let item = PubItem {
                    to: r.str()?,
                    from: r.str()?,
                    body: r.str()?,
                    ttl: r.u64()?,
                    idempotency_key: r.opt()?,
                };
                // A keyed publish is never batched (see `PubItem`).
                if item.idempotency_key.is_some() {
                    return Err(WireError::Malformed);
                }
                items.push(item);
            }
            Request::PubBatch(items)
        }
        _ => return Err(WireError::Malformed),
    })
}

fn decode_rep(r: &mut R<'_>) -> Result<Answer, WireError> {
    Ok(match r.u8()? {
        10 => {
            let n = r.count(1)?;
            let mut list = Vec::with_capacity(n);
            for _ in 0..n {
                list.push(decode_item_rep(r)?);
            }
            Answer::Batch(list)
        }
        _ => {
            r.p -= 1;
            decode_item_rep(r)?
        }
    })
}

/// One answer that is not a batch (batches do not nest).
fn decode_item_rep(r: &mut R<'_>) -> Result<Answer, WireError> {
    Ok(match r.u8()? {
        1 => Answer::Ok,
        2 => Answer::Seq(r.opt_u64()?),
        3 => Answer::Count(r.u64()?),
        4 => {
            // Each entry takes at least 4 bytes: refuse counts the frame cannot hold.
            let n = r.count(4)?;
            let mut list = Vec::with_capacity(n);
            for _ in 0..n {
                list.push(r.str()?);
            }
            Answer::Msgs(list)
        }
        5 => Answer::Found(r.u8()? != 0),
        6 => Answer::Err(r.str()?),
        7 => Answer::Unavailable(r.str()?),
        8 if r.b.get(r.p) == Some(&8) => return Err(WireError::Malformed),
        8 => match decode_rep(r)? {
            // What a publish answered first, never itself a replay.
            a @ (Answer::Seq(_) | Answer::Count(_)) => Answer::Replayed(Box::new(a)),
            _ => return Err(WireError::Malformed),
        },
        9 => {
            let status = r.u16()?;
            if !(400..500).contains(&status) {
                return Err(WireError::Malformed);
            }
            Answer::Refused(status, r.str()?)
        }
        _ => return Err(WireError::Malformed),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(body: Body) -> Frame {
        let f = Frame {
            from: NodeId(2),
            core: ShardId(1),
            id: 77,
            body,
        };
        let bytes = encode(&f);
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "prefix {cut} decoded");
        }
        decode(&bytes).unwrap()
    }

    #[test]
    fn requests_and_replies_round_trip() {
        let f = round(Body::Request(Request::PubUser {
            to: "u".into(),
            from: "op".into(),
            body: "héllo".into(),
            ttl: 60,
        }));
        assert_eq!((f.from, f.core, f.id), (NodeId(2), ShardId(1), 77));
        assert!(
            matches!(f.body, Body::Request(Request::PubUser { ref body, ttl: 60, .. }) if body == "héllo")
        );
        let msg = ClientMessage {
            y: Some(MsgType::Channel),
            c: Some("ch".into()),
            b: Some("x".into()),
            ..Default::default()
        };
        let f = round(Body::Request(Request::Client {
            uid: "a".into(),
            msg: msg.clone(),
        }));
        assert!(matches!(f.body, Body::Request(Request::Client { msg: ref m, .. }) if *m == msg));
        let f = round(Body::Answer(Answer::Msgs(vec!["a\n".into(), "b\n".into()])));
        assert!(matches!(f.body, Body::Answer(Answer::Msgs(ref l)) if l.len() == 2));
        assert!(matches!(
            round(Body::Answer(Answer::Seq(Some(9)))).body,
            Body::Answer(Answer::Seq(Some(9)))
        ));
        assert!(matches!(round(Body::Ping).body, Body::Ping));
        let item = PubItem {
            to: "u1".into(),
            from: "op".into(),
            body: "b\n".into(),
            ttl: 0,
            idempotency_key: Some("k-1".into()),
        };
        let plain = PubItem {
            idempotency_key: None,
            ..item.clone()
        };
        let f = round(Body::Request(Request::PubBatch(vec![
            plain.clone(),
            plain.clone(),
        ])));
        assert!(
            matches!(f.body, Body::Request(Request::PubBatch(ref v)) if *v == [plain.clone(), plain])
        );
        let keyed = encode(&Frame {
            from: NodeId(2),
            core: ShardId(1),
            id: 78,
            body: Body::Request(Request::PubBatch(vec![item])),
        });
        assert!(
            decode(&keyed).is_err(),
            "a keyed item in a batch is refused"
        );
        let f = round(Body::Answer(Answer::Batch(vec![
            Answer::Seq(Some(3)),
            Answer::Unavailable("x".into()),
        ])));
        assert!(matches!(
            f.body,
            Body::Answer(Answer::Batch(ref v))
                if matches!(v[..], [Answer::Seq(Some(3)), Answer::Unavailable(_)])
        ));
    }

    #[test]
    fn keyed_publishes_and_their_answers_round_trip() {
        let f = round(Body::Request(Request::Keyed {
            key: "k-1".into(),
            req: Box::new(Request::PubChannel {
                channel: "ch".into(),
                from: "op".into(),
                body: "b".into(),
                ttl: 5,
            }),
        }));
        match f.body {
            Body::Request(ref r @ Request::Keyed { ref key, .. }) => {
                assert_eq!(key, "k-1");
                assert_eq!(
                    r.uid(),
                    Some("ch"),
                    "the bus hands it to the channel id's core"
                );
            }
            ref other => panic!("{other:?}"),
        }
        assert!(matches!(
            round(Body::Answer(Answer::Replayed(Box::new(Answer::Seq(Some(3)))))).body,
            Body::Answer(Answer::Replayed(ref a)) if matches!(**a, Answer::Seq(Some(3)))
        ));
        assert!(matches!(
            round(Body::Answer(Answer::Refused(422, "x".into()))).body,
            Body::Answer(Answer::Refused(422, ref e)) if e == "x"
        ));
        // A key on anything but a publish, a nested key, a replayed replay: refused.
        let bad = |body| {
            let b = encode(&Frame {
                from: NodeId(0),
                core: ShardId(0),
                id: 1,
                body,
            });
            decode(&b).is_err()
        };
        assert!(bad(Body::Request(Request::Keyed {
            key: "k".into(),
            req: Box::new(Request::Msg { uid: "u".into() }),
        })));
        assert!(bad(Body::Request(Request::Keyed {
            key: "k".into(),
            req: Box::new(Request::Keyed {
                key: "k".into(),
                req: Box::new(Request::Msg { uid: "u".into() }),
            }),
        })));
        assert!(bad(Body::Answer(Answer::Replayed(Box::new(Answer::Ok)))));
        assert!(bad(Body::Answer(Answer::Refused(500, "x".into()))));
    }

    #[test]
    fn foreign_and_damaged_frames_are_refused() {
        assert_eq!(
            decode(b"hello world, not ours").unwrap_err(),
            WireError::Magic
        );
        let mut f = encode(&Frame {
            from: NodeId(0),
            core: ShardId(0),
            id: 1,
            body: Body::Ping,
        });
        f[3] = 9;
        assert_eq!(decode(&f).unwrap_err(), WireError::Version(9));
        f[3] = VERSION;
        f.push(0);
        assert_eq!(
            decode(&f).unwrap_err(),
            WireError::Malformed,
            "trailing bytes"
        );
        let mut huge = encode(&Frame {
            from: NodeId(0),
            core: ShardId(0),
            id: 1,
            body: Body::Answer(Answer::Msgs(vec![])),
        });
        let n = huge.len();
        huge[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode(&huge).unwrap_err(), WireError::Malformed);
    }
}

//! Finds the dynamic cluster's move signal in a held stream's raw bytes (chunked, WebSocket
//! close reason, SSE data, in either codec) without buffering the stream: a match position,
//! and a few hundred bytes kept only once the signal started; and the queue in which moved
//! streams wait out a small jitter before reconnecting. Pure, unit tested (the scanner at
//! every split); used on the engine's and the message scenarios' threads.
//!
//! The signal is `{"error":"moved","location":"…"}`, a MessagePack map with the same keys
//! on a `codec=msgpack` chunked stream; a WebSocket close reason is that JSON in either codec,
//! so both forms are looked for on every stream. In JSON its `"error":"moved"` cannot occur
//! inside a message body, whose quotes are escaped; the location is read from what follows
//! it (the order the server writes, error first).

use crate::scenario_wire::{Moved, Rng};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Longest wait before reconnecting after a move signal; each stream waits a random part of
/// it, so that the streams of a moved slot do not all arrive in the same millisecond.
pub const MOVE_JITTER_MS: u64 = 50;

/// Streams told to move, each waiting out its jitter before it reconnects to its address.
#[derive(Debug, Default)]
pub struct MoveQueue {
    waiting: Vec<(Instant, usize, SocketAddr)>,
}

impl MoveQueue {
    /// Stream `i` reconnects to `addr` after a random 0..=[`MOVE_JITTER_MS`] ms from `now`.
    pub fn push(&mut self, rng: &mut Rng, now: Instant, i: usize, addr: SocketAddr) {
        let jitter = Duration::from_millis(rng.below(MOVE_JITTER_MS + 1));
        self.waiting.push((now + jitter, i, addr));
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Removes and returns the streams whose wait is over at `now`.
    pub fn take_due(&mut self, now: Instant) -> Vec<(usize, SocketAddr)> {
        let mut due = Vec::new();
        let mut k = 0;
        while k < self.waiting.len() {
            let (at, i, addr) = self.waiting[k];
            if at > now {
                k += 1;
            } else {
                self.waiting.swap_remove(k);
                due.push((i, addr));
            }
        }
        due
    }
}

const JSON_SIGNAL: &[u8] = br#""error":"moved""#;
/// fixstr "error", fixstr "moved".
const MSGPACK_SIGNAL: &[u8] = b"\xa5error\xa5moved";
/// Bytes kept after the signal: enough for any location a node advertises.
const CAPTURE: usize = 512;

#[derive(Debug, Default)]
pub struct MoveScan {
    /// Bytes of [`JSON_SIGNAL`] / [`MSGPACK_SIGNAL`] matched so far.
    json: u8,
    msgpack: u8,
    /// The signal found was the MessagePack one.
    is_msgpack: bool,
    /// What followed a complete signal (up to [`CAPTURE`] bytes). Boxed: one lives in
    /// every held connection, and 8 bytes there beat 24.
    #[allow(clippy::box_collection)]
    after: Option<Box<Vec<u8>>>,
}

impl MoveScan {
    /// Feed the stream's bytes, in order.
    pub fn feed(&mut self, mut buf: &[u8]) {
        while !buf.is_empty() {
            if let Some(after) = self.after.as_mut() {
                let n = (CAPTURE - after.len()).min(buf.len());
                after.extend_from_slice(&buf[..n]);
                return;
            }
            let b = buf[0];
            buf = &buf[1..];
            if step(&mut self.json, b, JSON_SIGNAL) {
                self.after = Some(Box::default());
            } else if step(&mut self.msgpack, b, MSGPACK_SIGNAL) {
                self.is_msgpack = true;
                self.after = Some(Box::default());
            }
        }
    }

    /// The move signal, once its `error` field was seen; its location if what followed
    /// carried one.
    pub fn signal(&self) -> Option<Moved> {
        let after = self.after.as_deref()?;
        let location = if self.is_msgpack {
            msgpack_location(after)
        } else {
            json_location(after)
        };
        Some(Moved { location })
    }
}

/// One byte against `pat` at match position `pos`; true when the pattern is complete. Each
/// pattern's first byte occurs in it only there, so a mismatch restarts at 0, or at 1 when
/// the byte is that first one.
fn step(pos: &mut u8, b: u8, pat: &[u8]) -> bool {
    *pos = if b == pat[*pos as usize] {
        *pos + 1
    } else {
        u8::from(b == pat[0])
    };
    *pos as usize == pat.len()
}

/// `,"location":"URL"` (the rest of the object) → URL.
fn json_location(after: &[u8]) -> Option<String> {
    let end = after.iter().position(|&c| c == b'}').unwrap_or(after.len());
    let obj = &after[..end];
    let key = br#""location":""#;
    let at = obj.windows(key.len()).position(|w| w == key)? + key.len();
    let rest = &obj[at..];
    let q = rest.iter().position(|&c| c == b'"')?;
    let url = std::str::from_utf8(&rest[..q]).ok()?;
    // An escaped URL (`\/`) is not what a node writes; better the target than a wrong one.
    (!url.contains('\\')).then(|| url.to_string())
}

/// fixstr "location" then a str8 or fixstr value → URL.
fn msgpack_location(after: &[u8]) -> Option<String> {
    let key = b"\xa8location";
    let at = after.windows(key.len()).position(|w| w == key)? + key.len();
    let (len, start) = match *after.get(at)? {
        b @ 0xa0..=0xbf => ((b & 0x1f) as usize, at + 1),
        0xd9 => (*after.get(at + 1)? as usize, at + 2),
        _ => return None,
    };
    let url = after.get(start..start + len)?;
    std::str::from_utf8(url).ok().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_split(bytes: &[u8]) -> Vec<Option<Moved>> {
        (1..=bytes.len())
            .map(|step| {
                let mut s = MoveScan::default();
                for piece in bytes.chunks(step) {
                    s.feed(piece);
                }
                s.signal()
            })
            .collect()
    }

    const LOC: &str = "http://127.0.0.1:9100/connect?uid=user001&password=pw";

    #[test]
    fn queue_waits_out_a_bounded_jitter() {
        let mut q = MoveQueue::default();
        let mut rng = Rng::new(3);
        let t0 = Instant::now();
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        for i in 0..100 {
            q.push(&mut rng, t0, i, addr);
        }
        let mut early = q.take_due(t0);
        let later = q.take_due(t0 + Duration::from_millis(MOVE_JITTER_MS));
        assert!(q.is_empty());
        assert!(early.len() < 20, "{} of 100 had no wait", early.len());
        assert!(!later.is_empty());
        early.extend(later);
        let mut ids: Vec<usize> = early.iter().map(|d| d.0).collect();
        ids.sort();
        assert_eq!(ids, (0..100).collect::<Vec<_>>());
        assert!(q.take_due(t0 + Duration::from_secs(1)).is_empty());
    }

    #[test]
    fn json_signal_at_every_split() {
        let chunk = format!(
            "7\r\n{{\"y\":0}}\r\n54\r\n{{\"error\":\"moved\",\"location\":\"{LOC}\"}}\r\n0\r\n\r\n"
        );
        for got in scan_split(chunk.as_bytes()) {
            assert_eq!(got.and_then(|m| m.location).as_deref(), Some(LOC));
        }
        let sse = format!("event: moved\ndata: {{\"error\":\"moved\",\"location\":\"{LOC}\"}}\n\n");
        for got in scan_split(sse.as_bytes()) {
            assert_eq!(got.and_then(|m| m.location).as_deref(), Some(LOC));
        }
        // Without a location (today's servers): a move to the configured address.
        let bare = b"11\r\n{\"error\":\"moved\"}\r\n0\r\n\r\n";
        for got in scan_split(bare) {
            assert_eq!(got, Some(Moved { location: None }));
        }
    }

    #[test]
    fn no_signal_in_other_streams() {
        let other = br#"{"error":"replaced"}{"y":3,"b":"\"error\":\"moved\""}""error":"move"#;
        for got in scan_split(other) {
            assert_eq!(got, None);
        }
        // A repeated first byte inside a partial match still matches after it.
        let mut s = MoveScan::default();
        s.feed(br#"""error":"moved""#);
        assert!(s.signal().is_some());
        // Capture is bounded.
        let mut s = MoveScan::default();
        s.feed(JSON_SIGNAL);
        s.feed(&vec![b'x'; 10_000]);
        assert_eq!(s.after.as_ref().map(|a| a.len()), Some(CAPTURE));
        assert_eq!(s.signal(), Some(Moved { location: None }));
    }

    #[test]
    fn websocket_close_reason() {
        let reason = format!("{{\"error\":\"moved\",\"location\":\"{LOC}\"}}");
        let mut frame = vec![0x88, (reason.len() + 2) as u8, 0x03, 0xf4];
        frame.extend_from_slice(reason.as_bytes());
        for got in scan_split(&frame) {
            assert_eq!(got.and_then(|m| m.location).as_deref(), Some(LOC));
        }
    }

    #[test]
    fn msgpack_signal() {
        let mut m = vec![0x82];
        m.extend_from_slice(MSGPACK_SIGNAL);
        m.extend_from_slice(b"\xa8location\xd9");
        m.push(LOC.len() as u8);
        m.extend_from_slice(LOC.as_bytes());
        for got in scan_split(&m) {
            assert_eq!(got.and_then(|m| m.location).as_deref(), Some(LOC));
        }
        let mut short = vec![0x82];
        short.extend_from_slice(MSGPACK_SIGNAL);
        short.extend_from_slice(b"\xa8location\xa9http://h");
        assert_eq!(scan_split(&short)[0], Some(Moved { location: None }));
        short.push(b'/');
        assert_eq!(
            scan_split(&short)[0]
                .clone()
                .and_then(|m| m.location)
                .as_deref(),
            Some("http://h/")
        );
        // A WebSocket close reason is JSON whatever the codec: found too.
        assert_eq!(
            scan_split(br#"{"error":"moved"}"#)[0],
            Some(Moved { location: None })
        );
    }
}

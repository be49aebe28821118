//! The client stream decoder (`transport::decode::Decoder`) as the stream task runs it, for
//! every transport and codec: chunked or WebSocket frames in, messages / pings / close / error
//! out. The first input byte picks the mode, the message limit and where the rest is cut into
//! two reads. Never panics, never uses more than it was given, stops after a final input, and
//! gives the same inputs however the bytes were split (TCP may cut a stream anywhere).
#![no_main]

use ipush::protocol::{Codec, Mode, Transport};
use ipush::transport::decode::{Decoder, Input};
use libfuzzer_sys::fuzz_target;

/// Feeds `parts` one after another, keeping unused bytes for the next read as the stream task
/// does, and stopping after a final input; returns the inputs and the payload count.
fn feed(mode: Mode, max: usize, parts: &[&[u8]]) -> (Vec<Input>, u64) {
    let mut d = Decoder::default();
    let mut out = Vec::new();
    let mut pending = Vec::new();
    let mut payloads = 0;
    for part in parts {
        pending.extend_from_slice(part);
        let before = out.len();
        let p = d.decode(mode, &mut pending, max, &mut out);
        assert!(p.used <= pending.len());
        assert!(p.payloads <= (out.len() - before) as u64);
        payloads += p.payloads;
        if let Some(i) = out.iter().position(Input::is_final) {
            assert_eq!(i, out.len() - 1, "nothing after a final input");
            break;
        }
        pending.drain(..p.used);
    }
    (out, payloads)
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let transport = match sel & 3 {
        0 | 1 => Transport::WebSocket,
        2 => Transport::Chunked,
        _ => Transport::Sse,
    };
    let codec = if sel & 4 == 0 {
        Codec::Json
    } else {
        Codec::MsgPack
    };
    let mode = Mode { transport, codec };
    let max = if sel & 8 == 0 { 64 } else { 4096 };
    let cut = (usize::from(sel >> 4) * rest.len()) / 15;
    let whole = feed(mode, max, &[rest]);
    let split = feed(mode, max, &[&rest[..cut], &rest[cut..]]);
    assert_eq!(whole, split, "cut at {cut}");
    if transport == Transport::Sse {
        assert!(
            whole.0.is_empty(),
            "an event stream ignores what the client sends"
        );
    }
});

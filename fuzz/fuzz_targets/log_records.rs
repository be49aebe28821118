//! Store log records as recovery reads them (`storage::log`): the segment header, then record
//! after record. Random bytes rarely pass the CRC, so the input is also framed with a valid
//! length and checksum to reach the payload parser. Never panics, always makes progress, never
//! reads past the buffer.
#![no_main]

use ipush::storage::log::{decode, decode_header, Decoded};
use libfuzzer_sys::fuzz_target;

fn walk(mut rest: &[u8]) {
    loop {
        match decode(rest) {
            Decoded::Record(_, used) => {
                assert!(used >= 8 && used <= rest.len());
                rest = &rest[used..];
            }
            Decoded::Incomplete | Decoded::Corrupt(_) => break,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = decode_header(data);
    walk(data);
    // The same bytes as one record payload with a valid frame around it, then as a sequence of
    // payloads cut at each 0xff byte.
    let mut framed = Vec::with_capacity(data.len() + 64);
    for piece in std::iter::once(data).chain(data.split(|&b| b == 0xff)) {
        if piece.is_empty() {
            continue;
        }
        framed.extend_from_slice(&(piece.len() as u32).to_le_bytes());
        framed.extend_from_slice(&crc32fast::hash(piece).to_le_bytes());
        framed.extend_from_slice(piece);
    }
    walk(&framed);
});

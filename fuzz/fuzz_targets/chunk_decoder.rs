//! Chunk decoder on arbitrary bytes, consuming chunk after chunk as a stream reader would:
//! never panics, always makes progress, never reads past the buffer or the payload limit.
#![no_main]

use ipush::http::chunk::{parse_chunk, Chunk};
use libfuzzer_sys::fuzz_target;

const MAX_PAYLOAD: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((chunk, consumed))) = parse_chunk(rest, MAX_PAYLOAD) {
        assert!(consumed > 0);
        assert!(consumed <= rest.len());
        let end = matches!(chunk, Chunk::End);
        if let Chunk::Data(payload) = chunk {
            assert!(!payload.is_empty() && payload.len() <= MAX_PAYLOAD);
        }
        rest = &rest[consumed..];
        if end {
            break;
        }
    }
});

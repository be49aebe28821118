//! Cluster bus frame decoder (`cluster::wire::decode`) on arbitrary bytes from a peer: never
//! panics; a frame it accepts encodes to bytes that decode again to the same encoding. The
//! input is decoded as is and, to get past the magic and version without a seed corpus, also
//! behind a valid `"IPB" version` prefix.
#![no_main]

use ipush::cluster::wire::{decode, encode, MAGIC, VERSION};
use libfuzzer_sys::fuzz_target;

fn check(bytes: &[u8]) {
    if let Ok(frame) = decode(bytes) {
        let encoded = encode(&frame);
        let again = decode(&encoded).expect("an encoded frame decodes");
        assert_eq!(encode(&again), encoded);
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let mut prefixed = Vec::with_capacity(data.len() + 4);
    prefixed.extend_from_slice(MAGIC);
    prefixed.push(VERSION);
    prefixed.extend_from_slice(data);
    check(&prefixed);
});

//! Cluster bus frame decoder (`cluster::wire::decode`) on arbitrary bytes from a peer: never
//! panics; a frame it accepts encodes to bytes that decode again to the same encoding.
#![no_main]

use ipush::cluster::wire::{decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = decode(data) {
        let bytes = encode(&frame);
        let again = decode(&bytes).expect("an encoded frame decodes");
        assert_eq!(encode(&again), bytes);
    }
});

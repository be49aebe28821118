//! Client message decoder on arbitrary payloads: never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ipush::protocol::decode_client_message(data);
});

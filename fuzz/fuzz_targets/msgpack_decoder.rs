//! MessagePack client message decoder (`protocol::msgpack::decode_client_message`) on arbitrary
//! bytes from a client: never panics.
#![no_main]

use ipush::protocol::msgpack::decode_client_message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode_client_message(data);
});

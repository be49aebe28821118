//! Request head parser on arbitrary bytes: never panics, never claims more than it was given;
//! what the client port does next with a head (the WebSocket handshake check, the query's
//! `uid` / `password` / `codec`) never panics either.
#![no_main]

use ipush::http::query::query_param;
use ipush::transport::ws::check_handshake;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((head, n))) = ipush::http::head::parse_head(data, 8192) {
        assert!(n <= data.len());
        assert!(n <= 8192);
        if let Ok(accept) = check_handshake(&head) {
            assert_eq!(accept.len(), 28, "base64 of a SHA-1");
        }
        for key in ["uid", "password", "codec"] {
            let _ = query_param(&head.query, key);
        }
    }
});

//! Request head parser on arbitrary bytes: never panics, never claims more than it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((_, n))) = ipush::http::head::parse_head(data, 8192) {
        assert!(n <= data.len());
        assert!(n <= 8192);
    }
});

//! Query-string decoding (`http::query`) on arbitrary query strings from `/connect`, `/send`
//! and every admin endpoint: never panics, and the two entry points agree: `query_param`
//! fails exactly when `parse_query` does, and otherwise returns the first decoded value of
//! each decoded key (`None` for a key that is absent).
#![no_main]

use ipush::http::query::{parse_query, query_param};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The head parser hands over a `String`: only UTF-8 queries reach the decoder.
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    match parse_query(query) {
        Err(_) => {
            assert!(query_param(query, "uid").is_err());
        }
        Ok(pairs) => {
            for (k, _) in &pairs {
                let first = &pairs.iter().find(|(k2, _)| k2 == k).unwrap().1;
                let got = query_param(query, k).expect("parse_query accepted it");
                assert_eq!(got.as_ref(), Some(first));
            }
            if !pairs.iter().any(|(k, _)| k == "uid") {
                assert_eq!(query_param(query, "uid"), Ok(None));
            }
        }
    }
});

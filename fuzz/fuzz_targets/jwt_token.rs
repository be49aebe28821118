//! `/connect` credentials under `--auth=jwt` (`auth::Authenticator::check`): the password is
//! whatever the client sent, parsed by jsonwebtoken (base64 segments, JSON header and claims,
//! HS256 signature). Never panics; random bytes are refused; and a token minted for a subject
//! made of the input is accepted for that uid and refused for any other.
#![no_main]

use std::sync::OnceLock;

use ipush::auth::{mint_hs256, Authenticator};
use libfuzzer_sys::fuzz_target;

const SECRET: &[u8] = b"fuzz-secret";

fn auth() -> &'static Authenticator {
    static AUTH: OnceLock<Authenticator> = OnceLock::new();
    AUTH.get_or_init(|| Authenticator::jwt(SECRET))
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // As a password: split "uid\npassword" so both come from the input.
    let (uid, password) = text.split_once('\n').unwrap_or(("u", &text));
    let verdict = auth().check(uid, password);
    if password.is_empty() {
        assert!(verdict.is_err());
    }
    // As a subject: mint, then check it for that uid and for another one.
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let token = mint_hs256(SECRET, &text, exp);
    if let Err(e) = auth().check(&text, &token) {
        panic!("minted token refused for its subject: {e}");
    }
    let other = format!("{text}x");
    assert!(auth().check(&other, &token).is_err());
});

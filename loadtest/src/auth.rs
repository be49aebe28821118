//! Stream passwords: the fixed `--password`, or with `--auth_secret` an HS256 JWT per uid
//! (`sub` = uid, `exp` = run start + 24 h, what the server's `--auth=jwt` checks), minted
//! when a connection's request is built. Built once per run, used on the run's thread.

use anyhow::{ensure, Result};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

/// Lifetime of a minted token, from the start of the run.
pub const TOKEN_TTL_SECS: u64 = 24 * 3600;

/// HS256 JWT with claims `{"sub": sub, "exp": exp}` (exp in unix seconds).
pub fn mint_hs256(key: &EncodingKey, sub: &str, exp: u64) -> String {
    let claims = serde_json::json!({ "sub": sub, "exp": exp });
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, key)
        .expect("HS256 signing of two plain claims cannot fail")
}

/// A Centrifugo connection token: HS256 with `{"sub": sub, "exp": exp, "channels": [channel]}`;
/// the `channels` claim makes Centrifugo subscribe the connection on connect (server-side
/// subscription, the only kind a uni-directional transport has).
pub fn mint_centrifugo(key: &EncodingKey, sub: &str, channel: &str, exp: u64) -> String {
    let claims = serde_json::json!({ "sub": sub, "exp": exp, "channels": [channel] });
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, key)
        .expect("HS256 signing of plain claims cannot fail")
}

/// The password every stream of a run sends. The engines rebuild a request on every
/// writable event and resume at the bytes already written, so `for_uid` must give the same
/// answer for a uid all run long: `exp` is fixed once (HS256 is deterministic).
pub enum Password {
    Fixed(String),
    Jwt { key: EncodingKey, exp: u64 },
}

impl Password {
    /// `password` as is, or, with a secret, tokens expiring 24 h from now.
    pub fn new(password: &str, auth_secret: Option<&str>) -> Result<Password> {
        match auth_secret {
            None => Ok(Password::Fixed(password.to_string())),
            Some(secret) => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                Password::jwt(secret, now + TOKEN_TTL_SECS)
            }
        }
    }

    /// Tokens signed with `secret`, expiring at `exp` (unix seconds).
    pub fn jwt(secret: &str, exp: u64) -> Result<Password> {
        ensure!(!secret.is_empty(), "--auth_secret must not be empty");
        Ok(Password::Jwt {
            key: EncodingKey::from_secret(secret.as_bytes()),
            exp,
        })
    }

    /// A Centrifugo connection token for `uid` subscribed to `channel`; `None` without a
    /// secret.
    pub fn centrifugo_token(&self, uid: &str, channel: &str) -> Option<String> {
        match self {
            Password::Fixed(_) => None,
            Password::Jwt { key, exp } => Some(mint_centrifugo(key, uid, channel, *exp)),
        }
    }

    /// The password of `uid`'s stream (a JWT is URL-safe: base64url and dots).
    pub fn for_uid(&self, uid: &str) -> Cow<'_, str> {
        match self {
            Password::Fixed(p) => Cow::Borrowed(p),
            Password::Jwt { key, exp } => Cow::Owned(mint_hs256(key, uid, *exp)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};

    /// Decode as the server does (src/auth.rs): HS256 only, exp and sub required, no leeway.
    fn decode(token: &str, secret: &str) -> jsonwebtoken::errors::Result<serde_json::Value> {
        let mut v = Validation::new(Algorithm::HS256);
        v.leeway = 0;
        v.validate_aud = false;
        v.set_required_spec_claims(&["exp", "sub"]);
        jsonwebtoken::decode::<serde_json::Value>(
            token,
            &DecodingKey::from_secret(secret.as_bytes()),
            &v,
        )
        .map(|d| d.claims)
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn fixed_password_unchanged() {
        let p = Password::new("pw", None).unwrap();
        assert_eq!(p.for_uid("lt1"), "pw");
        assert_eq!(p.for_uid("lt2"), "pw");
    }

    #[test]
    fn jwt_has_sub_and_exp_24h_ahead() {
        let before = now();
        let p = Password::new("ignored", Some("s3cret")).unwrap();
        let after = now();
        let t = p.for_uid("lt42");
        let c = decode(&t, "s3cret").unwrap();
        assert_eq!(c["sub"], "lt42");
        let exp = c["exp"].as_u64().unwrap();
        assert!(
            (before + TOKEN_TTL_SECS..=after + TOKEN_TTL_SECS).contains(&exp),
            "{exp}"
        );
        assert_eq!(c.as_object().unwrap().len(), 2, "{c}");
        let header = jsonwebtoken::decode_header(&t).unwrap();
        assert_eq!(header.alg, Algorithm::HS256);
    }

    #[test]
    fn jwt_is_per_uid_and_stable() {
        let p = Password::jwt("k", now() + 60).unwrap();
        // Requests are rebuilt and resumed mid-write: the same uid must give the same bytes.
        assert_eq!(p.for_uid("a"), p.for_uid("a"));
        assert_ne!(p.for_uid("a"), p.for_uid("b"));
        assert_eq!(decode(&p.for_uid("b"), "k").unwrap()["sub"], "b");
    }

    #[test]
    fn jwt_is_query_safe() {
        let p = Password::jwt("k", now() + 60).unwrap();
        let t = p.for_uid("user with spaces/ü");
        assert_eq!(crate::http::query_escape(&t), t);
        assert_eq!(t.matches('.').count(), 2);
    }

    #[test]
    fn wrong_secret_and_expiry_are_detectable() {
        let p = Password::jwt("right", now() + 60).unwrap();
        assert!(decode(&p.for_uid("u"), "wrong").is_err());
        let old = Password::jwt("right", now() - 2).unwrap();
        assert!(decode(&old.for_uid("u"), "right").is_err());
    }

    #[test]
    fn centrifugo_token_names_the_channel() {
        let exp = now() + 60;
        let t = mint_centrifugo(&EncodingKey::from_secret(b"k"), "u1", "ch", exp);
        let c = decode(&t, "k").unwrap();
        assert_eq!(c["sub"], "u1");
        assert_eq!(c["exp"], exp);
        assert_eq!(c["channels"], serde_json::json!(["ch"]));
        assert!(decode(&t, "other").is_err());
    }

    #[test]
    fn empty_secret_rejected() {
        assert!(Password::new("pw", Some("")).is_err());
    }
}

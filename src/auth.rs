//! Client authentication of `/connect` (uid + password, `--auth=none|jwt`); built once from the config, cloned into each core and called on that core's thread.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::{AuthMode, Config, ConfigError};

/// Checks `/connect` credentials. Cheap to clone: one per core.
// One per core, built once: its size does not matter, and the fields stay plain as the API says.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
pub enum Authenticator {
    /// `--auth=none`: any non-empty password (development).
    None,
    /// `--auth=jwt`: the password is an HS256 JWT signed with `--auth_secret`.
    Jwt {
        key: DecodingKey,
        validation: Validation,
    },
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Authenticator::None => f.write_str("Authenticator::None"),
            Authenticator::Jwt { .. } => f.write_str("Authenticator::Jwt(HS256)"),
        }
    }
}

/// Why credentials were refused (all answered `401 {"error":"auth failed"}`).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("empty password")]
    EmptyPassword,
    #[error("invalid token: {0}")]
    Token(String),
    #[error("token subject does not match uid")]
    Subject,
}

/// The claims ipush reads; other claims in the token are ignored.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
}

impl Authenticator {
    /// The authenticator `--auth` / `--auth_secret` ask for (config validation guarantees a
    /// non-empty secret for jwt).
    pub fn from_config(cfg: &Config) -> Self {
        match cfg.auth {
            AuthMode::None => Authenticator::None,
            AuthMode::Jwt => Self::jwt(cfg.auth_secret.as_bytes()),
        }
    }

    /// An HS256 authenticator with `secret`: `sub` and `exp` required, `exp` checked with no
    /// leeway, `nbf` honoured when present, every other algorithm rejected.
    pub fn jwt(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.leeway = 0;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Authenticator::Jwt {
            key: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// none: any non-empty password. jwt: password is an HS256 JWT signed with auth_secret,
    /// `sub` == uid, `exp` required and honoured (leeway 0); other algorithms rejected.
    pub fn check(&self, uid: &str, password: &str) -> Result<(), AuthError> {
        if password.is_empty() {
            return Err(AuthError::EmptyPassword);
        }
        match self {
            Authenticator::None => Ok(()),
            Authenticator::Jwt { key, validation } => {
                let data = jsonwebtoken::decode::<Claims>(password, key, validation)
                    .map_err(|e| AuthError::Token(e.to_string()))?;
                if data.claims.sub != uid {
                    return Err(AuthError::Subject);
                }
                Ok(())
            }
        }
    }
}

/// For tests and loadtest: HS256 token with `sub` and `exp` (unix seconds).
pub fn mint_hs256(secret: &[u8], sub: &str, exp: u64) -> String {
    let claims = Claims {
        sub: sub.to_string(),
        exp,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .expect("HS256 signing of two plain claims cannot fail")
}

/// `ipush_server gentoken`: mints a token that `--auth=jwt --auth_secret=S` accepts for one uid.
#[derive(Debug, clap::Parser)]
#[command(
    name = "ipush_server gentoken",
    bin_name = "ipush_server gentoken",
    about = "Print an HS256 JWT for --auth=jwt: sub = --uid, exp = now + --ttl_s",
    rename_all = "snake_case"
)]
pub struct GenToken {
    /// The server's --auth_secret (non-empty)
    #[arg(long)]
    pub auth_secret: String,
    /// The uid the token is for (its `sub`)
    #[arg(long)]
    pub uid: String,
    /// Seconds until the token expires (1-315360000)
    #[arg(long, default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(1..=315_360_000))]
    pub ttl_s: u64,
}

/// Parses `gentoken` arguments (`args[0]` is the subcommand name) and mints the token.
pub fn gentoken(args: impl IntoIterator<Item = String>) -> Result<String, ConfigError> {
    use clap::Parser as _;
    let g = GenToken::try_parse_from(args)?;
    if g.auth_secret.is_empty() {
        return Err(ConfigError::Invalid(
            "--auth_secret must not be empty".into(),
        ));
    }
    if !crate::protocol::valid_id(&g.uid) {
        return Err(ConfigError::Invalid(format!(
            "--uid={:?} is not a valid uid",
            g.uid
        )));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Ok(mint_hs256(g.auth_secret.as_bytes(), &g.uid, now + g.ttl_s))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"test-secret";

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn b64url(data: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in data.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
            for i in 0..=chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }

    /// A token with an arbitrary header and signature part.
    fn forged(header: &str, claims: &str, sig: &str) -> String {
        format!(
            "{}.{}.{sig}",
            b64url(header.as_bytes()),
            b64url(claims.as_bytes())
        )
    }

    #[test]
    fn none_mode() {
        let a = Authenticator::None;
        assert!(a.check("u1", "x").is_ok());
        assert!(matches!(a.check("u1", ""), Err(AuthError::EmptyPassword)));
    }

    #[test]
    fn from_config_follows_flags() {
        let cfg = crate::config::parse_args(
            ["ipush_server", "--auth=jwt", "--auth_secret=test-secret"]
                .into_iter()
                .map(String::from),
        )
        .unwrap();
        let a = Authenticator::from_config(&cfg);
        assert!(matches!(a, Authenticator::Jwt { .. }));
        assert!(a.check("u1", &mint_hs256(SECRET, "u1", now() + 60)).is_ok());
        let cfg = crate::config::Config::default();
        assert!(matches!(
            Authenticator::from_config(&cfg),
            Authenticator::None
        ));
    }

    #[test]
    fn gentoken_mints_what_jwt_accepts() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let t = gentoken(args(&[
            "gentoken",
            "--auth_secret=s3",
            "--uid=u7",
            "--ttl_s=60",
        ]))
        .unwrap();
        let a = Authenticator::jwt(b"s3");
        assert!(a.check("u7", &t).is_ok());
        assert!(matches!(a.check("u8", &t), Err(AuthError::Subject)));
        assert!(Authenticator::jwt(b"other").check("u7", &t).is_err());
        assert!(gentoken(args(&["gentoken", "--auth_secret=", "--uid=u7"])).is_err());
        assert!(gentoken(args(&["gentoken", "--auth_secret=x", "--uid=a b"])).is_err());
        assert!(gentoken(args(&[
            "gentoken",
            "--auth_secret=x",
            "--uid=u",
            "--ttl_s=0"
        ]))
        .is_err());
        assert!(gentoken(args(&["gentoken", "--uid=u"])).is_err());
    }

    #[test]
    fn good_token() {
        let a = Authenticator::jwt(SECRET);
        let t = mint_hs256(SECRET, "user001", now() + 3600);
        a.check("user001", &t).unwrap();
    }

    #[test]
    fn wrong_secret() {
        let a = Authenticator::jwt(SECRET);
        let t = mint_hs256(b"other", "user001", now() + 3600);
        assert!(matches!(a.check("user001", &t), Err(AuthError::Token(_))));
    }

    #[test]
    fn expired() {
        let a = Authenticator::jwt(SECRET);
        let t = mint_hs256(SECRET, "user001", now() - 2);
        let e = a.check("user001", &t).unwrap_err();
        assert!(
            matches!(e, AuthError::Token(ref m) if m.contains("xpired")),
            "{e}"
        );
    }

    #[test]
    fn wrong_subject() {
        let a = Authenticator::jwt(SECRET);
        let t = mint_hs256(SECRET, "user002", now() + 3600);
        assert!(matches!(a.check("user001", &t), Err(AuthError::Subject)));
    }

    #[test]
    fn missing_exp_or_sub_rejected() {
        let a = Authenticator::jwt(SECRET);
        let enc = |claims: &serde_json::Value| {
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                claims,
                &EncodingKey::from_secret(SECRET),
            )
            .unwrap()
        };
        let no_exp = enc(&serde_json::json!({"sub": "u1"}));
        assert!(matches!(a.check("u1", &no_exp), Err(AuthError::Token(_))));
        let no_sub = enc(&serde_json::json!({"exp": now() + 60}));
        assert!(matches!(a.check("u1", &no_sub), Err(AuthError::Token(_))));
    }

    #[test]
    fn other_algorithms_rejected() {
        let a = Authenticator::jwt(SECRET);
        let claims = format!(r#"{{"sub":"u1","exp":{}}}"#, now() + 3600);
        // alg none, with and without a signature part
        let t = forged(r#"{"alg":"none","typ":"JWT"}"#, &claims, "");
        assert!(matches!(a.check("u1", &t), Err(AuthError::Token(_))));
        let t = forged(r#"{"alg":"none","typ":"JWT"}"#, &claims, "AAAA");
        assert!(matches!(a.check("u1", &t), Err(AuthError::Token(_))));
        // HS512 with the right secret
        let t = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &Claims {
                sub: "u1".into(),
                exp: now() + 3600,
            },
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert!(matches!(a.check("u1", &t), Err(AuthError::Token(_))));
        // RS256 header over an HS256 signature (key confusion)
        let good = mint_hs256(SECRET, "u1", now() + 3600);
        let sig = good.rsplit('.').next().unwrap();
        let t = forged(r#"{"alg":"RS256","typ":"JWT"}"#, &claims, sig);
        assert!(matches!(a.check("u1", &t), Err(AuthError::Token(_))));
    }

    #[test]
    fn garbage() {
        let a = Authenticator::jwt(SECRET);
        for p in [
            "x",
            "a.b.c",
            "...",
            "eyJhbGciOiJIUzI1NiJ9",
            "\u{0}\u{1}",
            "ü.ö.ä",
        ] {
            assert!(matches!(a.check("u1", p), Err(AuthError::Token(_))), "{p}");
        }
        assert!(matches!(a.check("u1", ""), Err(AuthError::EmptyPassword)));
    }
}

//! CORS on the client port (`--client_allow_origin`): which web origins may read its answers
//! (a page on one origin following a 303 or a move to another node's client port), and the
//! preflight answer. Pure code, no I/O; runs on the connection's core.
//!
//! The policy is the flag's text: `*` (any origin), a comma-separated list of origins
//! (`https://app.example.com`, or `null` for the opaque origin a browser sends after a
//! cross-origin redirect), or empty (no CORS headers: browsers allow same-origin pages only).
//! No `Access-Control-Allow-Credentials`: the client port authenticates by the password or JWT
//! in the query, never by cookies, so `*` lets no page do more than its own token allows.

/// Methods a page may use on the client port.
pub const ALLOW_METHODS: &str = "GET, HEAD, POST, OPTIONS";
/// Request headers the SDKs set on a cross-origin request (`Last-Event-ID` on an SSE resume,
/// `Content-Type` on `POST /send`).
pub const ALLOW_HEADERS: &str = "Accept, Cache-Control, Content-Type, Last-Event-ID";
/// Response headers a page may read beyond the safelisted ones.
pub const EXPOSE_HEADERS: &str = "Location, Date";
/// How long (seconds) a browser may reuse a preflight answer.
pub const MAX_AGE: &str = "600";

/// The `Access-Control-Allow-Origin` value for a request from `origin` under `policy`, or
/// None when the answer must carry no CORS headers.
pub fn allow_origin<'a>(policy: &'a str, origin: Option<&'a str>) -> Option<&'a str> {
    let policy = policy.trim();
    if policy.is_empty() {
        return None;
    }
    if policy == "*" {
        return Some("*");
    }
    let origin = origin?;
    policy
        .split(',')
        .map(str::trim)
        .any(|allowed| allowed.eq_ignore_ascii_case(origin))
        .then_some(origin)
}

/// Checks a `--client_allow_origin` value; the error says what is wrong.
pub fn check_policy(policy: &str) -> Result<(), String> {
    let policy = policy.trim();
    if policy.is_empty() || policy == "*" {
        return Ok(());
    }
    for entry in policy.split(',').map(str::trim) {
        if entry == "*" {
            return Err("`*` stands alone, not in a list".into());
        }
        if entry != "null" && !is_origin(entry) {
            return Err(format!(
                "'{entry}' is not an origin (scheme://host[:port], no path), `null` or `*`"
            ));
        }
    }
    Ok(())
}

fn is_origin(s: &str) -> bool {
    let Some((scheme, authority)) = s.split_once("://") else {
        return false;
    };
    !scheme.is_empty()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        && !authority.is_empty()
        && authority
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_~:[]%".contains(&b))
}

/// The CORS headers of an answer (a stream head, a 303, an error) allowed to `allow`.
pub fn answer_headers(allow: Option<&str>) -> Vec<(&'static str, &str)> {
    let Some(allow) = allow else {
        return Vec::new();
    };
    let mut h = vec![
        ("Access-Control-Allow-Origin", allow),
        ("Access-Control-Expose-Headers", EXPOSE_HEADERS),
    ];
    if allow != "*" {
        // The answer depends on the request's Origin: caches must not share it.
        h.push(("Vary", "Origin"));
    }
    h
}

/// The headers of the answer to a preflight `OPTIONS` allowed to `allow` (plus `Allow`).
pub fn preflight_headers(allow: Option<&str>) -> Vec<(&'static str, &str)> {
    let mut h = vec![("Allow", ALLOW_METHODS)];
    if let Some(a) = allow {
        h.extend([
            ("Access-Control-Allow-Origin", a),
            ("Access-Control-Allow-Methods", ALLOW_METHODS),
            ("Access-Control-Allow-Headers", ALLOW_HEADERS),
            ("Access-Control-Max-Age", MAX_AGE),
        ]);
        if a != "*" {
            h.push(("Vary", "Origin"));
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies() {
        assert_eq!(allow_origin("*", None), Some("*"));
        assert_eq!(allow_origin("*", Some("https://a.example")), Some("*"));
        assert_eq!(allow_origin("", Some("https://a.example")), None);
        let list = "https://a.example, http://localhost:8080,null";
        assert_eq!(
            allow_origin(list, Some("https://a.example")),
            Some("https://a.example")
        );
        assert_eq!(
            allow_origin(list, Some("http://localhost:8080")),
            Some("http://localhost:8080")
        );
        assert_eq!(allow_origin(list, Some("null")), Some("null"));
        assert_eq!(allow_origin(list, Some("https://b.example")), None);
        assert_eq!(allow_origin(list, None), None);
    }

    #[test]
    fn policy_checks() {
        for ok in ["", "*", " * ", "https://a.example", "http://h:1, null"] {
            assert!(check_policy(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "*,https://a.example",
            "a.example",
            "https://a.example/path",
            "https://",
            "https://a b",
        ] {
            assert!(check_policy(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn headers() {
        assert!(answer_headers(None).is_empty());
        let any = answer_headers(Some("*"));
        assert!(any.contains(&("Access-Control-Allow-Origin", "*")));
        assert!(!any.iter().any(|(k, _)| *k == "Vary"));
        let one = answer_headers(Some("https://a.example"));
        assert!(one.contains(&("Vary", "Origin")));
        assert_eq!(preflight_headers(None), vec![("Allow", ALLOW_METHODS)]);
        let pre = preflight_headers(Some("*"));
        assert!(pre.contains(&("Access-Control-Allow-Headers", ALLOW_HEADERS)));
    }
}

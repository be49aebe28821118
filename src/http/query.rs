//! Query-string decoding (`application/x-www-form-urlencoded` rules: `%XX` escapes, `+` as
//! space). Pure code, no I/O; runs on the connection's core.

use std::borrow::Cow;
use std::fmt;

/// A query string with a bad `%` escape, or one that decodes to invalid UTF-8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryError;

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid query string")
    }
}

impl std::error::Error for QueryError {}

/// Decoded value of the first `key` in `query` (keys are compared after decoding); `Ok(None)`
/// if absent, `Ok(Some(""))` for `key` or `key=` with no value. Every pair of the query is
/// validated, so a bad escape anywhere gives `Err` whether or not it is in the wanted pair.
pub fn query_param(query: &str, key: &str) -> Result<Option<String>, QueryError> {
    let mut found = None;
    for (k, v) in pairs(query) {
        let k = decode(k)?;
        let v = decode(v)?;
        if found.is_none() && k == key {
            found = Some(v.into_owned());
        }
    }
    Ok(found)
}

/// All `key=value` pairs, decoded, in order; empty segments (`a=1&&b=2`) are skipped and a
/// segment without `=` has the value "".
pub fn parse_query(query: &str) -> Result<Vec<(String, String)>, QueryError> {
    pairs(query)
        .map(|(k, v)| Ok((decode(k)?.into_owned(), decode(v)?.into_owned())))
        .collect()
}

fn pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|s| s.split_once('=').unwrap_or((s, "")))
}

fn decode(s: &str) -> Result<Cow<'_, str>, QueryError> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Ok(Cow::Borrowed(s));
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hi = bytes.get(i + 1).and_then(|&b| hex(b)).ok_or(QueryError)?;
                let lo = bytes.get(i + 2).and_then(|&b| hex(b)).ok_or(QueryError)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| QueryError)
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_query() {
        let q = "uid=user001&password=pwd001";
        assert_eq!(query_param(q, "uid"), Ok(Some("user001".into())));
        assert_eq!(query_param(q, "password"), Ok(Some("pwd001".into())));
        assert_eq!(query_param(q, "codec"), Ok(None));
        assert_eq!(
            parse_query(q),
            Ok(vec![
                ("uid".into(), "user001".into()),
                ("password".into(), "pwd001".into())
            ])
        );
    }

    #[test]
    fn decoding() {
        assert_eq!(
            query_param("b=hello+world%21%2b", "b"),
            Ok(Some("hello world!+".into()))
        );
        assert_eq!(query_param("u%69d=x", "uid"), Ok(Some("x".into())));
        assert_eq!(
            query_param("n=%E4%BD%A0%e5%a5%bd", "n"),
            Ok(Some("你好".into()))
        );
        assert_eq!(query_param("a=1=2", "a"), Ok(Some("1=2".into())));
        assert_eq!(query_param("flag&x=1", "flag"), Ok(Some(String::new())));
        assert_eq!(query_param("flag=&x=1", "flag"), Ok(Some(String::new())));
    }

    #[test]
    fn first_occurrence_wins() {
        assert_eq!(query_param("uid=a&uid=b", "uid"), Ok(Some("a".into())));
    }

    #[test]
    fn empty_segments() {
        assert_eq!(parse_query(""), Ok(vec![]));
        assert_eq!(
            parse_query("&a=1&&b&"),
            Ok(vec![("a".into(), "1".into()), ("b".into(), String::new())])
        );
    }

    #[test]
    fn errors() {
        for q in [
            "a=%", "a=%4", "a=%zz", "a=%4g", "%ff=1", "a=%C3%28", "a=%80",
        ] {
            assert_eq!(parse_query(q), Err(QueryError), "{q}");
            assert_eq!(query_param(q, "a"), Err(QueryError), "{q}");
        }
        // A bad escape in another pair still invalidates the query.
        assert_eq!(query_param("uid=a&b=%zz", "uid"), Err(QueryError));
        assert_eq!(QueryError.to_string(), "invalid query string");
    }
}

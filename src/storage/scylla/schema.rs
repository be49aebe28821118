//! The keyspace and tables of `cql/create_schema.cql`: renaming its keyspace, running
//! statements from a plain thread (tests, tools, the start-up check). Never called on a core.

use std::time::Duration;

use scylla::client::session_builder::SessionBuilder;

use super::bridge::timed;
use super::unavailable;
use crate::storage::StorageError;

/// The statements of a schema file (`cql/create_schema.cql`) with the keyspace `ipush`
/// renamed to `keyspace`: comments removed, split on `;`. For tests and tools that create a
/// keyspace of their own.
pub fn schema_statements(cql: &str, keyspace: &str) -> Vec<String> {
    let text: String = cql
        .lines()
        .map(|l| match l.find("--") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    text.split(';')
        .map(|s| rename_keyspace(s.trim(), keyspace))
        .filter(|s| !s.is_empty())
        .collect()
}

/// Replaces the identifier `ipush` (a whole word) by `keyspace`.
pub(super) fn rename_keyspace(stmt: &str, keyspace: &str) -> String {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::with_capacity(stmt.len());
    let mut rest = stmt;
    while let Some(i) = rest.find("ipush") {
        let before = rest[..i].chars().next_back();
        let after = rest[i + 5..].chars().next();
        out.push_str(&rest[..i]);
        if before.is_some_and(word) || after.is_some_and(word) {
            out.push_str("ipush");
        } else {
            out.push_str(keyspace);
        }
        rest = &rest[i + 5..];
    }
    out.push_str(rest);
    out
}

/// Runs `statements` one after another on a session of its own, blocking the calling thread
/// (it starts a tokio runtime). For tests and tools (creating or dropping a keyspace); never
/// call it on a core.
pub fn execute_blocking(
    nodes: &[String],
    statements: &[String],
    timeout: Duration,
) -> Result<(), StorageError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| unavailable(format!("cannot start a tokio runtime: {e}")))?;
    rt.block_on(async {
        let session = timed(
            timeout,
            "connect",
            SessionBuilder::new()
                .known_nodes(nodes)
                .connection_timeout(timeout)
                .build(),
        )
        .await
        .map_err(StorageError::Unavailable)?;
        for s in statements {
            let what = s.lines().next().unwrap_or_default();
            timed(timeout, what, session.query_unpaged(s.as_str(), &[]))
                .await
                .map_err(StorageError::Unavailable)?;
        }
        Ok(())
    })
}

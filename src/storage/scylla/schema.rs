//! The keyspace and tables of `cql/create_schema.cql`: renaming its keyspace, running
//! statements from a plain thread (tests, tools, the start-up check). Never called on a core.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;

use super::ops::timed;
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

/// `cql/create_schema.cql`, built into the binary for `--scylla_init_schema=true`.
pub const CREATE_SCHEMA: &str = include_str!("../../../cql/create_schema.cql");

/// Every column the backend reads or writes: `(table, column, kind, type)` as Cassandra and
/// ScyllaDB list them in `system_schema.columns`. A keyspace whose tables lack one of these, or
/// hold it with another kind or type, has the schema of another ipush version.
const COLUMNS: &[(&str, &str, &str, &str)] = &[
    ("messages", "uid", "partition_key", "text"),
    ("messages", "seq", "clustering", "bigint"),
    ("messages", "max_seq", "static", "bigint"),
    ("messages", "expires_at", "regular", "bigint"),
    ("messages", "kind", "regular", "tinyint"),
    ("messages", "sender", "regular", "text"),
    ("messages", "channel", "regular", "text"),
    ("messages", "body", "regular", "text"),
    ("messages", "body_id", "regular", "uuid"),
    ("bodies", "id", "partition_key", "uuid"),
    ("bodies", "kind", "regular", "tinyint"),
    ("bodies", "sender", "regular", "text"),
    ("bodies", "channel", "regular", "text"),
    ("bodies", "body", "regular", "text"),
    ("users", "uid", "partition_key", "text"),
    ("users", "max_seq", "regular", "bigint"),
    ("users", "last_ack", "regular", "bigint"),
    ("channel_members", "cid", "partition_key", "text"),
    ("channel_members", "shard", "partition_key", "text"),
    ("channel_members", "uid", "clustering", "text"),
    ("idempotency", "id", "partition_key", "text"),
    ("idempotency", "fingerprint", "regular", "bigint"),
    ("idempotency", "answer", "regular", "bigint"),
    ("idempotency", "expires_at", "regular", "bigint"),
];

/// What `schema_problems` says of a keyspace made before the static highest seq: the one
/// difference `--scylla_init_schema=true` repairs in place (adding a column loses nothing).
const NO_STATIC_MAX: &str = "table messages has no column max_seq";

/// The tables of the schema.
pub fn tables() -> BTreeSet<&'static str> {
    COLUMNS.iter().map(|c| c.0).collect()
}

/// What is wrong with a keyspace whose `system_schema.columns` rows are `found`
/// (`(table, column, kind, type)`), one line per problem; empty when it is what this version
/// needs. Columns the backend does not use are allowed.
pub fn schema_problems(found: &[(String, String, String, String)]) -> Vec<String> {
    let mut out = Vec::new();
    let present: BTreeSet<&str> = found.iter().map(|c| c.0.as_str()).collect();
    let missing: Vec<&str> = tables()
        .into_iter()
        .filter(|t| !present.contains(t))
        .collect();
    if !missing.is_empty() {
        out.push(format!("missing table(s) {}", missing.join(", ")));
    }
    for (table, column, kind, ty) in COLUMNS {
        if !present.contains(table) {
            continue;
        }
        match found.iter().find(|c| c.0 == *table && c.1 == *column) {
            None => out.push(format!("table {table} has no column {column}")),
            Some(c) if c.2 != *kind || c.3 != *ty => out.push(format!(
                "column {table}.{column} is {} {}, expected {kind} {ty}",
                c.2, c.3
            )),
            Some(_) => {}
        }
    }
    out
}

/// The start-up check of `--storage=scylla`, on the main thread before any core starts:
/// connects (retrying for `retry_for`, so a database that is still starting is waited for),
/// then makes sure `keyspace` holds the schema this version needs. A missing keyspace or
/// table is created from [`CREATE_SCHEMA`] when `init` is set and is an error naming both
/// remedies otherwise; a table of another layout is always an error (nothing is altered).
/// Returns whether anything was created. Blocks (it starts a tokio runtime of its own).
pub fn check_blocking(
    nodes: &[String],
    keyspace: &str,
    init: bool,
    timeout: Duration,
    retry_for: Duration,
) -> Result<bool, StorageError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| unavailable(format!("cannot start a tokio runtime: {e}")))?;
    rt.block_on(async {
        let session = connect_retrying(nodes, timeout, retry_for).await?;
        let found = columns(&session, keyspace, timeout).await?;
        let problems = schema_problems(&found);
        if problems.is_empty() {
            return Ok(false);
        }
        if problems == [NO_STATIC_MAX] {
            let alter = format!("ALTER TABLE {keyspace}.messages ADD max_seq bigint static");
            if !init {
                return Err(StorageError::Unavailable(format!(
                    "scylla: keyspace {keyspace} was made before the static highest seq \
                     (messages.max_seq, which fences a moved user's rows): start once with \
                     --scylla_init_schema=true, or run `{alter}` (users.max_seq still counts)"
                )));
            }
            tracing::warn!(%keyspace, "adding messages.max_seq (static): {alter}");
            timed(timeout, &alter, session.query_unpaged(alter.as_str(), &[]))
                .await
                .map_err(StorageError::Unavailable)?;
            let problems = schema_problems(&columns(&session, keyspace, timeout).await?);
            if !problems.is_empty() {
                return Err(StorageError::Corrupt(format!(
                    "scylla: keyspace {keyspace} after adding messages.max_seq: {}",
                    problems.join("; ")
                )));
            }
            return Ok(true);
        }
        let all_missing = found.is_empty();
        let only_tables_missing = problems.len() == 1 && problems[0].starts_with("missing table");
        if !(all_missing || only_tables_missing) {
            return Err(StorageError::Corrupt(format!(
                "scylla: keyspace {keyspace} has a schema this ipush cannot use ({}): it was \
                 made by another version; compare it with cql/create_schema.cql, or use a new \
                 keyspace (--scylla_keyspace)",
                problems.join("; ")
            )));
        }
        let what = if all_missing {
            format!("keyspace {keyspace} has no ipush tables (or does not exist)")
        } else {
            format!("keyspace {keyspace}: {}", problems[0])
        };
        if !init {
            return Err(StorageError::Unavailable(format!(
                "scylla: {what}: start once with --scylla_init_schema=true, or create it with \
                 `cqlsh -f cql/create_schema.cql` (keyspace renamed to {keyspace})"
            )));
        }
        tracing::warn!(%keyspace, "{what}: creating it from cql/create_schema.cql \
            (SimpleStrategy, replication_factor 1: a dev setup)");
        for stmt in schema_statements(CREATE_SCHEMA, keyspace) {
            let first = stmt.lines().next().unwrap_or_default().to_string();
            timed(timeout, &first, session.query_unpaged(stmt, &[]))
                .await
                .map_err(StorageError::Unavailable)?;
        }
        let problems = schema_problems(&columns(&session, keyspace, timeout).await?);
        if !problems.is_empty() {
            return Err(StorageError::Corrupt(format!(
                "scylla: keyspace {keyspace} after creating the schema: {}",
                problems.join("; ")
            )));
        }
        Ok(true)
    })
}

/// A session to `nodes`, retried every second or so until `retry_for` has passed.
async fn connect_retrying(
    nodes: &[String],
    timeout: Duration,
    retry_for: Duration,
) -> Result<Session, StorageError> {
    let start = Instant::now();
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let res = timed(
            timeout,
            "connect",
            SessionBuilder::new()
                .known_nodes(nodes)
                .connection_timeout(timeout)
                .build(),
        )
        .await;
        match res {
            Ok(s) => return Ok(s),
            Err(e) if start.elapsed() >= retry_for => {
                return Err(StorageError::Unavailable(format!(
                    "scylla: cannot connect to {} ({attempt} attempts in {} s): {e}",
                    nodes.join(","),
                    start.elapsed().as_secs()
                )))
            }
            Err(e) => {
                tracing::warn!(nodes = %nodes.join(","), attempt, error = %e,
                    "scylla is not reachable yet; retrying");
                tokio::time::sleep(Duration::from_millis(1000)).await;
            }
        }
    }
}

async fn columns(
    session: &Session,
    keyspace: &str,
    timeout: Duration,
) -> Result<Vec<(String, String, String, String)>, StorageError> {
    let what = "read system_schema.columns";
    let res = timed(
        timeout,
        what,
        session.query_unpaged(
            "SELECT table_name, column_name, kind, type FROM system_schema.columns \
             WHERE keyspace_name = ?",
            (keyspace,),
        ),
    )
    .await
    .map_err(StorageError::Unavailable)?;
    let rows = res
        .into_rows_result()
        .map_err(|e| unavailable(format!("{what}: {e}")))?;
    let mut out = Vec::new();
    for row in rows
        .rows::<(String, String, String, String)>()
        .map_err(|e| unavailable(format!("{what}: {e}")))?
    {
        out.push(row.map_err(|e| unavailable(format!("{what}: {e}")))?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols(skip: &str, change: Option<(&str, &str)>) -> Vec<(String, String, String, String)> {
        COLUMNS
            .iter()
            .filter(|c| c.0 != skip)
            .map(|&(t, c, k, ty)| {
                let (k, ty) = match change {
                    Some((col, kind)) if col == format!("{t}.{c}") => (kind, ty),
                    _ => (k, ty),
                };
                (t.into(), c.into(), k.into(), ty.into())
            })
            .collect()
    }

    #[test]
    fn the_schema_file_matches_what_the_code_checks() {
        // Every table the check knows is created by the file, and every column appears in it.
        let stmts = schema_statements(CREATE_SCHEMA, "k");
        for t in tables() {
            let create = stmts
                .iter()
                .find(|s| s.starts_with(&format!("CREATE TABLE IF NOT EXISTS k.{t} (")))
                .unwrap_or_else(|| panic!("{t} not created"));
            for (_, c, _, ty) in COLUMNS.iter().filter(|c| c.0 == t) {
                assert!(
                    create.lines().any(|l| {
                        let w: Vec<&str> = l.split_whitespace().collect();
                        w.len() >= 2 && w[0] == *c && w[1].trim_end_matches(',') == *ty
                    }),
                    "{t}.{c} {ty} not in {create}"
                );
            }
        }
    }

    #[test]
    fn problems_name_what_differs() {
        assert!(schema_problems(&cols("", None)).is_empty());
        assert_eq!(
            schema_problems(&cols("users", None)),
            ["missing table(s) users"]
        );
        let mut extra = cols("", None);
        extra.push((
            "users".into(),
            "note".into(),
            "regular".into(),
            "text".into(),
        ));
        assert!(schema_problems(&extra).is_empty(), "extra columns are fine");
        // A keyspace made before idempotency keys: only the new table is missing, which
        // --scylla_init_schema=true creates (the check treats it as "tables missing").
        assert_eq!(
            schema_problems(&cols("idempotency", None)),
            ["missing table(s) idempotency"]
        );
        // The partition key of an older layout.
        let old = schema_problems(&cols("", Some(("channel_members.shard", "clustering"))));
        assert_eq!(
            old,
            ["column channel_members.shard is clustering text, expected partition_key text"]
        );
        let mut no_max = cols("", None);
        no_max.retain(|c| !(c.0 == "messages" && c.1 == "max_seq"));
        assert_eq!(schema_problems(&no_max), [NO_STATIC_MAX]);
        let mut no_col = cols("", None);
        no_col.retain(|c| c.1 != "body_id");
        assert_eq!(
            schema_problems(&no_col),
            ["table messages has no column body_id"]
        );
        assert_eq!(
            schema_problems(&[]),
            ["missing table(s) bodies, channel_members, idempotency, messages, users"]
        );
    }
}

//! Idempotency keys of publishes (`&idempotency_key=K`): the key rule, the request fingerprint,
//! and the keys of this core whose first publish is still in flight (a repeat waits for it).
//! Finished keys live in the store (`Storage::idem_get`). Part of `Shard`; runs on its core's
//! executor.
//!
//! A key belongs to one destination: `u:<uid> <key>` on the core that owns the uid (the same
//! key to two users is two keys), `c:<channel> <key>` on the core that owns the channel id
//! (`Membership::locate(channel)`), the one core in the cluster that decides for a channel.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

use super::Shard;
use crate::storage::{IdemRecord, Storage, StorageError};

type InFlightMap = HashMap<Rc<str>, Vec<Waker>, ahash::RandomState>;

/// Longest idempotency key, in bytes.
pub const MAX_KEY_BYTES: usize = 128;

/// Why `key` is not a valid idempotency key, if it is not: 1 to 128 of `A-Z a-z 0-9 - _ . : ~`
/// (a UUID, a ULID, `order-42:retry` …), so it needs no escaping anywhere it is stored.
pub fn check_key(key: &str) -> Result<(), String> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"-_.:~".contains(&b);
    if key.is_empty() || key.len() > MAX_KEY_BYTES || !key.bytes().all(allowed) {
        return Err(format!(
            "invalid idempotency_key: 1 to {MAX_KEY_BYTES} characters of A-Z a-z 0-9 - _ . : ~"
        ));
    }
    Ok(())
}

/// The key of a unicast publish to `to`.
pub fn user_id(to: &str, key: &str) -> String {
    format!("u:{to} {key}")
}

/// The key of a channel publish.
pub fn channel_id(channel: &str, key: &str) -> String {
    format!("c:{channel} {key}")
}

/// What a repeat must match: from, ttl and body (the destination is in the key's id). Stable
/// across builds and restarts, since it is stored.
pub fn fingerprint(from: &str, ttl: u64, body: &str) -> u64 {
    const SALT: u64 = 0x4944_454d; // "IDEM"
    let h = ipush_placement::stable_hash(SALT, from.as_bytes());
    let h = ipush_placement::stable_hash(h, &ttl.to_le_bytes());
    ipush_placement::stable_hash(h, body.as_bytes())
}

/// What a keyed publish found when it looked its key up.
pub enum Begin {
    /// First use within the window: publish, then record the answer through the guard.
    Fresh(KeyGuard),
    /// Used before with the same request: answer what the first got.
    Replay(IdemRecord),
    /// Used before with another from, ttl or body.
    Mismatch,
    /// This core holds `--idempotency_max_keys` keys in their window already.
    Full,
}

/// A key claimed by the publish in flight; dropping it (the publish answered, failed or was
/// abandoned) frees the claim and wakes the repeats waiting on it, which then find the
/// record (or, after a failure, publish themselves).
pub struct KeyGuard {
    id: Rc<str>,
    fingerprint: u64,
    expires_at: u64,
    table: Rc<RefCell<InFlightMap>>,
}

impl KeyGuard {
    /// The record of this key with the publish's first answer.
    pub fn record(&self, answer: u64) -> IdemRecord {
        IdemRecord {
            id: self.id.to_string(),
            fingerprint: self.fingerprint,
            answer,
            expires_at: self.expires_at,
        }
    }
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        let waiters = self.table.borrow_mut().remove(&self.id);
        for w in waiters.into_iter().flatten() {
            w.wake();
        }
    }
}

/// The keys of this core whose first publish is in flight, with the repeats waiting on each.
#[derive(Default)]
pub(super) struct InFlight(Rc<RefCell<InFlightMap>>);

impl Shard {
    /// Looks up key `id` of a publish whose fingerprint is `fp`: waits while another publish
    /// with it is in flight, then claims it (a fresh key), or answers a replay, a mismatch, or
    /// a full table. Only successful publishes are recorded, so after a failed first attempt
    /// the key is fresh again.
    pub async fn idem_begin(&self, id: String, fp: u64) -> Result<Begin, StorageError> {
        let id: Rc<str> = Rc::from(id);
        self.wait_not_in_flight(&id).await;
        // Claimed before the first await below: a repeat arriving meanwhile waits for us.
        self.in_flight.0.borrow_mut().insert(id.clone(), Vec::new());
        let now = crate::stats::unix_now();
        let guard = KeyGuard {
            id: id.clone(),
            fingerprint: fp,
            expires_at: now.saturating_add(self.cfg.idempotency_window_s),
            table: self.in_flight.0.clone(),
        };
        if let Some(r) = self.store.idem_get(&id, now).await? {
            if r.fingerprint != fp {
                self.bump(&self.stats.idem_refused);
                return Ok(Begin::Mismatch);
            }
            self.bump(&self.stats.idem_replayed);
            return Ok(Begin::Replay(r));
        }
        let held = self.store.idem_held(now) + self.in_flight.0.borrow().len();
        if held > self.cfg.idempotency_max_keys {
            self.bump(&self.stats.idem_full);
            return Ok(Begin::Full);
        }
        Ok(Begin::Fresh(guard))
    }

    /// Records a key whose publish stored no message on this core (ttl 0, a channel).
    pub async fn idem_put(&self, r: &IdemRecord) -> Result<(), StorageError> {
        self.store.put_idem(r).await
    }

    /// Returns once no publish with key `id` is in flight on this core.
    async fn wait_not_in_flight(&self, id: &Rc<str>) {
        loop {
            let mut registered = false;
            poll_fn(|cx| {
                let mut map = self.in_flight.0.borrow_mut();
                match map.get_mut(id) {
                    Some(waiters) if !registered => {
                        waiters.push(cx.waker().clone());
                        registered = true;
                        Poll::Pending
                    }
                    _ => Poll::Ready(()),
                }
            })
            .await;
            // Woken: the first publish ended, but another repeat may have claimed it since.
            if !self.in_flight.0.borrow().contains_key(id) {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_short_and_plain() {
        for k in [
            "a",
            "9f1c2e4a-7b7d-4d3c-9a53-0c8b7e1f2a3b",
            "order-42:retry_1.x~y",
        ] {
            assert!(check_key(k).is_ok(), "{k}");
        }
        assert!(check_key(&"k".repeat(MAX_KEY_BYTES)).is_ok());
        for k in ["", "a b", "a\n", "ä", "a/b", "a&b", "a%20"] {
            let e = check_key(k).unwrap_err();
            assert!(e.starts_with("invalid idempotency_key"), "{k}: {e}");
        }
        assert!(check_key(&"k".repeat(MAX_KEY_BYTES + 1)).is_err());
    }

    #[test]
    fn ids_keep_destinations_apart() {
        assert_eq!(user_id("u1", "k"), "u:u1 k");
        assert_eq!(channel_id("u1", "k"), "c:u1 k");
        assert_ne!(user_id("u1", "k"), user_id("u2", "k"));
    }

    #[test]
    fn the_fingerprint_covers_from_ttl_and_body_and_is_stable() {
        let f = fingerprint("op", 60, "hi");
        assert_eq!(f, fingerprint("op", 60, "hi"));
        assert_ne!(f, fingerprint("op2", 60, "hi"));
        assert_ne!(f, fingerprint("op", 61, "hi"));
        assert_ne!(f, fingerprint("op", 60, "hi!"));
        assert_ne!(fingerprint("ab", 1, "c"), fingerprint("a", 1, "bc"));
        // Stored on disk and in the database: the value must never change between builds.
        assert_eq!(f, 0x574d_c6cc_9491_9030, "{f:#018x}");
    }
}

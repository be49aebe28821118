//! The storage conformance suite: every backend must pass it (memory and embedded in every CI
//! run, scylla when `IPUSH_TEST_SCYLLA=host:port` is set). Runs on a core's executor; called
//! from `tests/storage_conformance.rs`.
//!
//! `open(generation)` returns a store of core 0 over the backend's data; a persistent backend
//! returns, for a higher generation, the same data reopened (a restart). Each case uses its own
//! uids and channels (with `prefix`), so a shared database needs no cleaning between runs.

use std::future::Future;
use std::rc::Rc;

use super::{IdemRecord, Storage, Store, UserMeta};
use crate::protocol::{MsgBody, MsgType};

/// A message body from `op` (a channel message when `channel` is given), for store tests.
pub fn body(text: &str, channel: Option<&str>) -> Rc<MsgBody> {
    Rc::new(MsgBody {
        kind: if channel.is_some() {
            MsgType::Channel
        } else {
            MsgType::User
        },
        from: "op".into(),
        channel: channel.map(Into::into),
        body: text.into(),
    })
}

fn seqs(m: &[super::StoredMsg]) -> Vec<u64> {
    m.iter().map(|m| m.seq).collect()
}

const FAR: u64 = 4_000_000_000;

fn idem(prefix: &str, name: &str, answer: u64, expires_at: u64) -> IdemRecord {
    IdemRecord {
        id: format!("u:{prefix}{name} k"),
        fingerprint: 0x8000_0000_0000_0001 + answer,
        answer,
        expires_at,
    }
}

/// Idempotency records: stored with a message or alone, found until they expire. Returns the
/// time their expiries count from.
async fn idem_cases(store: &Store, prefix: &str) -> u64 {
    // Now, not the suite's start: the cases before can take seconds on a remote database.
    let now = crate::stats::unix_now();
    let k = Rc::from(format!("{prefix}keyed").as_str());
    let with_msg = idem(prefix, "keyed", 1, now + 300);
    store
        .append_keyed(&body("once", None), FAR, &[(k, 1)], &with_msg)
        .await
        .unwrap();
    let alone = idem(prefix, "alone", 0, now + 300);
    store.put_idem(&alone).await.unwrap();
    let short = idem(prefix, "short", 7, now + 30);
    store.put_idem(&short).await.unwrap();
    let got = |r: &IdemRecord, at: u64| {
        let id = r.id.clone();
        async move { store.idem_get(&id, at).await.unwrap() }
    };
    assert_eq!(
        got(&with_msg, now).await,
        Some(with_msg.clone()),
        "idem with a message"
    );
    assert_eq!(got(&alone, now).await, Some(alone.clone()), "idem alone");
    assert_eq!(
        got(&short, now).await,
        Some(short.clone()),
        "idem in its window"
    );
    assert_eq!(got(&short, now + 30).await, None, "idem expired");
    assert_eq!(
        store
            .idem_get(&format!("u:{prefix}none k"), now)
            .await
            .unwrap(),
        None
    );
    let msgs = store
        .offline(&format!("{prefix}keyed"), 0, 1, 10, now)
        .await
        .unwrap();
    assert_eq!(seqs(&msgs), [1], "the keyed message is stored");
    now
}

/// After a restart: the records in their window are still there.
async fn idem_after_restart(store: &Store, prefix: &str, now: u64) {
    for r in [
        idem(prefix, "keyed", 1, now + 300),
        idem(prefix, "alone", 0, now + 300),
    ] {
        let id = r.id.clone();
        assert_eq!(
            store.idem_get(&id, now).await.unwrap(),
            Some(r),
            "restart: idem"
        );
    }
}

/// Runs every case; panics with the case name on the first failure.
pub async fn run<F, Fut>(prefix: &str, persistent: bool, open: F)
where
    F: Fn(u32) -> Fut,
    Fut: Future<Output = Store>,
{
    let now = crate::stats::unix_now();
    let u = |s: &str| -> Rc<str> { Rc::from(format!("{prefix}{s}").as_str()) };
    let c = |s: &str| format!("{prefix}{s}");
    let store = open(0).await;

    // A user never seen has zero counters and no messages.
    let nobody = u("nobody");
    assert_eq!(store.load_user(&nobody).await.unwrap(), UserMeta::default());
    assert!(store
        .offline(&nobody, 0, 10, 10, now)
        .await
        .unwrap()
        .is_empty());

    // Appends, ordering, limits and ranges.
    let a = u("a");
    for seq in 1..=5 {
        store
            .append(&body(&format!("m{seq}"), None), FAR, &[(a.clone(), seq)])
            .await
            .unwrap();
    }
    assert_eq!(store.load_user(&a).await.unwrap().max_seq, 5, "max_seq");
    let all = store.offline(&a, 0, 5, 100, now).await.unwrap();
    assert_eq!(seqs(&all), [1, 2, 3, 4, 5], "ascending");
    assert_eq!(&*all[2].body.body, "m3", "bodies");
    assert_eq!(
        seqs(&store.offline(&a, 0, 5, 2, now).await.unwrap()),
        [4, 5],
        "the newest `limit`"
    );
    assert_eq!(
        seqs(&store.offline(&a, 1, 3, 100, now).await.unwrap()),
        [2, 3],
        "(after, upto]"
    );

    // Acks are monotonic and hide what they cover.
    store.set_ack(&a, 3).await.unwrap();
    store.set_ack(&a, 2).await.unwrap();
    let meta = store.load_user(&a).await.unwrap();
    assert_eq!((meta.max_seq, meta.last_ack), (5, 3), "ack monotonic");
    assert_eq!(
        seqs(&store.offline(&a, 3, 5, 100, now).await.unwrap()),
        [4, 5],
        "after ack"
    );

    // ttl: an expired message is never listed, and purge removes it.
    let t = u("ttl");
    store
        .append(&body("short", None), now + 2, &[(t.clone(), 1)])
        .await
        .unwrap();
    store
        .append(&body("long", None), FAR, &[(t.clone(), 2)])
        .await
        .unwrap();
    assert_eq!(
        seqs(&store.offline(&t, 0, 2, 10, now).await.unwrap()),
        [1, 2]
    );
    assert_eq!(
        seqs(&store.offline(&t, 0, 2, 10, now + 3).await.unwrap()),
        [2],
        "expired hidden"
    );
    store.purge_expired(now + 3).await.unwrap();
    assert_eq!(
        seqs(&store.offline(&t, 0, 2, 10, now + 3).await.unwrap()),
        [2]
    );
    assert_eq!(
        store.load_user(&t).await.unwrap().max_seq,
        2,
        "purge keeps max_seq"
    );

    // Channel membership.
    let ch = c("ch");
    let (m1, m2, m3) = (u("m1"), u("m2"), u("m3"));
    for m in [&m1, &m2, &m3, &m1] {
        store.subscribe(&ch, m).await.unwrap();
    }
    store.unsubscribe(&ch, &m3).await.unwrap();
    store.unsubscribe(&ch, &u("never")).await.unwrap();
    let mut members: Vec<String> = store
        .channel_members(&ch)
        .await
        .unwrap()
        .iter()
        .map(|m| m.to_string())
        .collect();
    members.sort();
    assert_eq!(members, [m1.to_string(), m2.to_string()], "members");
    assert!(store.channel_members(&c("empty")).await.unwrap().is_empty());

    // A fan-out stores one body for many (uid, seq) entries.
    let fan: Vec<(Rc<str>, u64)> = (0..1000)
        .map(|i| (u(&format!("f{i}")), 1 + i % 3))
        .collect();
    store
        .append(&body("fan", Some(&ch)), FAR, &fan)
        .await
        .unwrap();
    for (uid, seq) in fan.iter().step_by(97) {
        let got = store.offline(uid, 0, *seq, 10, now).await.unwrap();
        assert_eq!(seqs(&got), [*seq], "fan-out entry of {uid}");
        assert_eq!(got[0].body.channel.as_deref(), Some(ch.as_str()));
        assert_eq!(got[0].body.kind, MsgType::Channel);
    }

    // A user whose messages are all acked keeps its counters.
    let z = u("z");
    store
        .append(&body("only", None), FAR, &[(z.clone(), 1)])
        .await
        .unwrap();
    store.set_ack(&z, 1).await.unwrap();
    let idem_now = idem_cases(&store, prefix).await;
    store.flush().await.unwrap();

    if persistent {
        store.close().await.unwrap();
        drop(store);
        let store = open(1).await;
        let meta = store.load_user(&a).await.unwrap();
        assert_eq!((meta.max_seq, meta.last_ack), (5, 3), "restart: counters");
        let got = store.offline(&a, 3, 5, 100, now).await.unwrap();
        assert_eq!(seqs(&got), [4, 5], "restart: messages");
        assert_eq!(&*got[1].body.body, "m5", "restart: bodies");
        assert_eq!(
            store.load_user(&z).await.unwrap(),
            UserMeta {
                max_seq: 1,
                last_ack: 1
            },
            "restart: seq counter survives with no message left"
        );
        let mut members: Vec<String> = store
            .channel_members(&ch)
            .await
            .unwrap()
            .iter()
            .map(|m| m.to_string())
            .collect();
        members.sort();
        assert_eq!(
            members,
            [m1.to_string(), m2.to_string()],
            "restart: members"
        );
        let got = store.offline(&fan[5].0, 0, 10, 10, now).await.unwrap();
        assert_eq!(seqs(&got), [fan[5].1], "restart: fan-out");
        assert_eq!(
            seqs(&store.offline(&t, 0, 2, 10, now + 3).await.unwrap()),
            [2],
            "restart: expired stay gone"
        );
        idem_after_restart(&store, prefix, idem_now).await;
        store.close().await.unwrap();
    } else {
        store.close().await.unwrap();
    }
}

//! Fencing in the scylla store (rules 4–7 of `ipush::cluster::ownership`) against the real
//! database of `IPUSH_TEST_SCYLLA`: two store instances on one keyspace play an old owner at
//! epoch 1 and a new owner at epoch 2, their `Fences` and leases driven by hand. The old
//! owner's writes that land after the new owner loaded a user never show up, cannot overwrite
//! the new owner's rows, and are never answered `ok` once its lease has lapsed.
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use ipush::config::ScyllaConsistency;
use ipush::fencing::{Fences, LeaseClock};
use ipush::protocol::{MsgBody, MsgType};
use ipush::storage::scylla::{self, ScyllaParams, ScyllaStore};
use ipush::storage::{IdemRecord, Storage, StorageError};

const SLOTS: u32 = 8;

fn scylla_addr(test: &str) -> Option<String> {
    match std::env::var("IPUSH_TEST_SCYLLA") {
        Ok(a) => Some(a),
        Err(_) => {
            assert!(
                std::env::var("CI").map_or(true, |v| v != "true"),
                "CI=true but IPUSH_TEST_SCYLLA is not set"
            );
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "{test}: skipped (IPUSH_TEST_SCYLLA not set)"
            );
            None
        }
    }
}

/// A member's fences: every slot held at `epoch`, the lease running.
fn member(epoch: u32) -> (Arc<Fences>, Arc<LeaseClock>) {
    let lease = Arc::new(LeaseClock::new());
    lease.hold_for(Duration::from_secs(600));
    let f = Arc::new(Fences::new(SLOTS, lease.clone()));
    for s in 0..SLOTS {
        f.set(s, Some(epoch));
    }
    (f, lease)
}

/// A store of a member holding every slot at `epoch`.
async fn owner(p: &ScyllaParams, epoch: u32) -> (ScyllaStore, Arc<Fences>, Arc<LeaseClock>) {
    let (f, lease) = member(epoch);
    let s = ScyllaStore::open_fenced(p.clone(), f.clone())
        .await
        .unwrap();
    (s, f, lease)
}

fn msg(kind: MsgType, b: &str) -> Rc<MsgBody> {
    Rc::new(MsgBody {
        kind,
        from: "op".into(),
        channel: (kind == MsgType::Channel).then(|| "news".into()),
        body: b.into(),
    })
}

async fn append(s: &ScyllaStore, uid: &str, seq: u64, b: &str) -> Result<(), StorageError> {
    let exp = ipush::stats::unix_now() + 3600;
    s.append(&msg(MsgType::User, b), exp, &[(Rc::from(uid), seq)])
        .await
}

async fn listed(s: &ScyllaStore, uid: &str) -> Vec<(u64, String)> {
    let now = ipush::stats::unix_now();
    s.offline(uid, 0, 100, 100, now)
        .await
        .unwrap()
        .iter()
        .map(|m| (m.seq, m.body.body.to_string()))
        .collect()
}

fn unavailable<T: std::fmt::Debug>(r: Result<T, StorageError>, what: &str) -> String {
    match r {
        Err(StorageError::Unavailable(e)) => e,
        other => panic!("{what}: expected Unavailable, got {other:?}"),
    }
}

fn seqs(v: &[(u64, &str)]) -> Vec<(u64, String)> {
    v.iter().map(|(s, b)| (*s, b.to_string())).collect()
}

/// Runs `f` on a glommio executor with the store parameters of a fresh keyspace (made from
/// cql/create_schema.cql), dropped at the end, pass or fail.
fn on_keyspace<Fut>(addr: String, tag: &str, f: impl FnOnce(ScyllaParams) -> Fut + Send + 'static)
where
    Fut: std::future::Future<Output = ()> + 'static,
{
    let keyspace = format!("ipush_test_{}{tag}", std::process::id());
    let nodes = vec![addr];
    let t = Duration::from_secs(30);
    let schema = scylla::schema_statements(include_str!("../cql/create_schema.cql"), &keyspace);
    scylla::execute_blocking(&nodes, &schema, t).expect("creating the test keyspace");
    let params = ScyllaParams {
        nodes: nodes.clone(),
        keyspace: keyspace.clone(),
        node: "self".into(),
        consistency: ScyllaConsistency::One,
        timeout: Duration::from_secs(10),
        core: 0,
        cores: 1,
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        glommio::LocalExecutorBuilder::default()
            .spawn(move || f(params))
            .unwrap()
            .join()
            .unwrap()
    }));
    let dropped =
        scylla::execute_blocking(&nodes, &[format!("DROP KEYSPACE IF EXISTS {keyspace}")], t);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
    dropped.expect("dropping the test keyspace");
}

#[test]
fn an_old_owners_late_writes_never_show_and_never_overwrite() {
    let Some(addr) = scylla_addr("an_old_owners_late_writes_never_show_and_never_overwrite") else {
        return;
    };
    on_keyspace(addr, "fence", scenario);
}

async fn scenario(params: ScyllaParams) {
    let (a, _, lease_a) = owner(&params, 1).await;
    let (b, fb, _lease_b) = owner(&params, 2).await;

    // Written before any load: a fenced store does not know the user's epoch yet.
    let e = unavailable(append(&a, "u0", 1, "x").await, "unloaded");
    assert!(e.contains("before it was loaded"), "{e}");

    // The old owner, at epoch 1, serves u1 and u2.
    for uid in ["u1", "u2", "u3"] {
        assert_eq!(a.load_user(uid).await.unwrap().max_seq, 0);
    }
    for seq in 1..=3 {
        append(&a, "u1", seq, &format!("A{seq}")).await.unwrap();
    }
    for seq in 1..=2 {
        append(&a, "u2", seq, &format!("A{seq}")).await.unwrap();
    }

    // The new owner, at epoch 2, loads them (and shadows their highest seq).
    assert_eq!(b.load_user("u1").await.unwrap().max_seq, 3);
    assert_eq!(b.load_user("u2").await.unwrap().max_seq, 2);
    assert_eq!(b.load_user("u3").await.unwrap().max_seq, 0);
    append(&b, "u1", 4, "B4").await.unwrap();

    // The old owner was paused past its lease: it was declared down and its slots claimed,
    // and it does not know yet. Its writes still reach the database, late.
    lease_a.hold_for(Duration::ZERO);
    let e = unavailable(append(&a, "u1", 4, "A4").await, "late over a new row");
    assert!(e.contains("lease lapsed"), "{e}");
    // A channel message (a shared body) to u2 and u3, above what the new owner read.
    let exp = ipush::stats::unix_now() + 3600;
    let entries = [(Rc::from("u2"), 3), (Rc::from("u3"), 1)];
    let late = a
        .append(&msg(MsgType::Channel, "A-late"), exp, &entries)
        .await;
    unavailable(late, "late fan-out");

    // Not shown: row 4 of u1 is the new owner's; u2's row 3 and u3's row 1 are above their
    // highest seq.
    assert_eq!(
        listed(&b, "u1").await,
        seqs(&[(1, "A1"), (2, "A2"), (3, "A3"), (4, "B4")])
    );
    assert_eq!(listed(&b, "u2").await, seqs(&[(1, "A1"), (2, "A2")]));
    assert!(listed(&b, "u3").await.is_empty());

    // Another store at epoch 2 (the new owner restarted) reads the same highest seqs, and
    // overwrites the invisible rows whole: nothing of the old shared-body row survives.
    let c = ScyllaStore::open_fenced(params.clone(), fb.clone())
        .await
        .unwrap();
    assert_eq!(c.load_user("u1").await.unwrap().max_seq, 4);
    assert_eq!(c.load_user("u2").await.unwrap().max_seq, 2);
    assert_eq!(c.load_user("u3").await.unwrap().max_seq, 0);
    append(&c, "u2", 3, "C3").await.unwrap();
    append(&c, "u3", 1, "C1").await.unwrap();
    assert_eq!(
        listed(&c, "u2").await,
        seqs(&[(1, "A1"), (2, "A2"), (3, "C3")])
    );
    assert_eq!(listed(&c, "u3").await, seqs(&[(1, "C1")]));
    let u2 = c
        .offline("u2", 2, 3, 10, ipush::stats::unix_now())
        .await
        .unwrap();
    assert_eq!(
        u2[0].body.kind,
        MsgType::User,
        "the inline row replaced the shared one"
    );
    assert_eq!(u2[0].body.channel, None);

    // The old owner, even with a lease again, cannot load a user a newer epoch wrote; and a
    // user it failed to write must be loaded again before anything more is written.
    lease_a.hold_for(Duration::from_secs(600));
    let e = unavailable(a.load_user("u2").await, "load under a newer epoch");
    assert!(e.contains("another member owns it"), "{e}");
    let e = unavailable(append(&a, "u2", 4, "A4").await, "write after a failure");
    assert!(e.contains("loaded again"), "{e}");

    // A slot released: nothing of its users is written or loaded.
    let s = fb.slot_of("u1");
    fb.set(s, None);
    let e = unavailable(append(&c, "u1", 5, "C5").await, "released slot");
    assert!(e.contains("does not serve"), "{e}");
    unavailable(c.load_user("u1").await, "load of a released slot");
    let e = unavailable(c.set_ack("u1", 2).await, "ack of a released slot");
    assert!(e.contains("does not serve"), "{e}");
    // Held again at a later epoch: loaded afresh (and shadowed), then written.
    fb.set(s, Some(3));
    assert_eq!(c.load_user("u1").await.unwrap().max_seq, 4);
    append(&c, "u1", 5, "C5").await.unwrap();
    c.set_ack("u1", 2).await.unwrap();
    assert_eq!(c.load_user("u1").await.unwrap().last_ack, 2);
    assert_eq!(listed(&c, "u1").await.len(), 3, "acked rows hidden");

    for s in [a, b, c] {
        s.close().await.unwrap();
    }
}

#[test]
fn the_static_cluster_keeps_contiguous_seqs_across_a_failed_write() {
    // Without fences (epoch 0): a write the database refuses leaves the user to be loaded
    // again before anything more of it is written, so no later seq leaves a gap.
    let Some(addr) = scylla_addr("the_static_cluster_keeps_contiguous_seqs_across_a_failed_write")
    else {
        return;
    };
    on_keyspace(addr, "fstatic", |params| async move {
        let s = ScyllaStore::open(params).await.unwrap();
        append(&s, "w", 1, "one").await.unwrap();
        // A write refused before it is sent (a seq beyond what a fenced timestamp
        // orders): known not to be stored, and later seqs must not leave a gap.
        let e = unavailable(append(&s, "w", 1 << 50, "bad").await, "out of range");
        assert!(e.contains("out of range"), "{e}");
        let e = unavailable(append(&s, "w", 2, "two").await, "after a failure");
        assert!(e.contains("loaded again"), "{e}");
        assert_eq!(s.load_user("w").await.unwrap().max_seq, 1);
        append(&s, "w", 2, "two").await.unwrap();
        assert_eq!(listed(&s, "w").await, seqs(&[(1, "one"), (2, "two")]));
        s.close().await.unwrap();
    });
}

#[test]
fn an_old_owners_fenced_out_idempotency_record_answers_nothing() {
    let Some(addr) = scylla_addr("an_old_owners_fenced_out_idempotency_record_answers_nothing")
    else {
        return;
    };
    on_keyspace(addr, "fidem", idem_scenario);
}

fn key(uid: &str, k: &str, seq: u64) -> IdemRecord {
    IdemRecord {
        id: format!("u:{uid} {k}"),
        fingerprint: 42,
        answer: seq,
        expires_at: ipush::stats::unix_now() + 300,
    }
}

async fn append_keyed(
    s: &ScyllaStore,
    uid: &str,
    seq: u64,
    b: &str,
    exp: u64,
    r: &IdemRecord,
) -> Result<(), StorageError> {
    s.append_keyed(&msg(MsgType::User, b), exp, &[(Rc::from(uid), seq)], r)
        .await
}

async fn got(s: &ScyllaStore, r: &IdemRecord) -> Option<IdemRecord> {
    s.idem_get(&r.id, ipush::stats::unix_now()).await.unwrap()
}

async fn idem_scenario(params: ScyllaParams) {
    let (a, _, lease_a) = owner(&params, 1).await;
    let (b, _, _lease_b) = owner(&params, 2).await;
    let now = ipush::stats::unix_now();
    let (later, gone) = (now + 3600, now.saturating_sub(10));

    // A key the old owner stored and answered: the new owner answers it too.
    for uid in ["k1", "k2", "k3"] {
        a.load_user(uid).await.unwrap();
    }
    let kept = key("k1", "kept", 1);
    append_keyed(&a, "k1", 1, "A1", later, &kept).await.unwrap();

    // The new owner loads k1..k3; the old one, paused past its lease, writes k2 and k3 late:
    // rows above their highest seq, records left behind.
    for uid in ["k1", "k2", "k3"] {
        b.load_user(uid).await.unwrap();
    }
    lease_a.hold_for(Duration::ZERO);
    let lost2 = key("k2", "lost", 1);
    unavailable(
        append_keyed(&a, "k2", 1, "A1", later, &lost2).await,
        "late keyed write",
    );
    let lost3 = key("k3", "lost", 1);
    unavailable(
        append_keyed(&a, "k3", 1, "A1", later, &lost3).await,
        "late keyed write",
    );

    assert_eq!(got(&b, &kept).await, Some(kept.clone()), "a stored key");
    // Above the highest seq: its message is not stored, the repeat must publish.
    assert_eq!(
        got(&b, &lost2).await,
        None,
        "fenced-out key, row above max_seq"
    );
    // The new owner gives seq 1 to another message: the record is not that message's.
    append(&b, "k2", 1, "B1").await.unwrap();
    assert_eq!(
        got(&b, &lost2).await,
        None,
        "fenced-out key, seq given again"
    );
    // ... nor when seq 1 goes to a message that expired before it was written (no row of
    // its own): the old row is gone too, not shown.
    append_keyed(&b, "k3", 1, "B1", gone, &key("k3", "other", 1))
        .await
        .unwrap();
    assert_eq!(got(&b, &lost3).await, None, "fenced-out key, seq expired");
    assert!(
        listed(&b, "k3").await.is_empty(),
        "the old row stays hidden"
    );
    // The repeat publishes at the new owner, and is then found.
    let again = key("k2", "lost", 2);
    append_keyed(&b, "k2", 2, "B2", later, &again)
        .await
        .unwrap();
    assert_eq!(got(&b, &again).await, Some(again.clone()));
    assert_eq!(listed(&b, "k2").await, seqs(&[(1, "B1"), (2, "B2")]));

    // A third owner still answers the keys the second stored.
    let (c, _, _lease_c) = owner(&params, 3).await;
    c.load_user("k2").await.unwrap();
    assert_eq!(got(&c, &again).await, Some(again.clone()), "after a move");
    assert_eq!(got(&c, &kept).await, Some(kept.clone()), "after two moves");

    for s in [a, b, c] {
        s.close().await.unwrap();
    }
}

//! The dynamic cluster's control loop against a real Cassandra (`IPUSH_TEST_SCYLLA`): members
//! find each other, share out the slots, a member that falls silent is declared down and its
//! slots are claimed at a new epoch, and it takes its share back when it returns.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipush::cluster::control::{Control, Settings, View};
use ipush::cluster::ownership::{desired, Timing};

const SLOTS: u32 = 64;

type Latest = Arc<Mutex<Option<Arc<View>>>>;

fn start(ks: &common::TestKeyspace, name: &str) -> (Control, Latest) {
    let latest: Latest = Arc::new(Mutex::new(None));
    let l = latest.clone();
    let s = Settings {
        nodes: vec![ks.addr.clone()],
        keyspace: ks.name.clone(),
        name: name.into(),
        client: format!("{name}:1"),
        admin: format!("{name}:2"),
        bus: format!("{name}:3"),
        timing: Timing {
            member_timeout_ms: 2000,
            beat_every_ms: 200,
            max_drift_ppm: 1000,
        },
        slots: SLOTS,
        timeout: Duration::from_secs(10),
    };
    let c = Control::start(s, move |v| *l.lock().unwrap() = Some(v), |_| true).unwrap();
    (c, latest)
}

fn view(l: &Latest) -> Option<Arc<View>> {
    l.lock().unwrap().clone()
}

/// Waits (bounded) until every view in `ls` satisfies `ok`; returns them.
fn wait_views(
    what: &str,
    limit: Duration,
    ls: &[&Latest],
    ok: impl Fn(&View) -> bool,
) -> Vec<Arc<View>> {
    let t0 = Instant::now();
    loop {
        let vs: Vec<Option<Arc<View>>> = ls.iter().map(|l| view(l)).collect();
        if vs.iter().all(|v| v.as_deref().is_some_and(&ok)) {
            return vs.into_iter().flatten().collect();
        }
        assert!(
            t0.elapsed() < limit,
            "{what}: not within {limit:?}; views: {vs:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Exactly `names` alive, and every slot held by the live member it belongs with.
fn settled(v: &View, names: &[&str]) -> bool {
    let live = v.live();
    let alive: Vec<&str> = live.iter().map(|h| h.name.as_str()).collect();
    alive == names
        && v.slots
            .iter()
            .enumerate()
            .all(|(i, r)| r.holder.as_ref() == desired(i as u32, &live))
}

fn per_holder(v: &View) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in &v.slots {
        *m.entry(r.holder.as_ref().unwrap().name.clone())
            .or_default() += 1;
    }
    m
}

#[test]
fn members_share_slots_and_take_over_from_a_silent_one() {
    let Some(ks) = common::TestKeyspace::new("control_plane") else {
        return;
    };
    ks.create();
    let (a, la) = start(&ks, "a");
    let (b, lb) = start(&ks, "b");
    let (c, lc) = start(&ks, "c");
    let three = ["a", "b", "c"];
    let vs = wait_views(
        "three members, every slot held",
        Duration::from_secs(30),
        &[&la, &lb, &lc],
        |v| settled(v, &three) && v.releasing.is_empty(),
    );
    let shares = per_holder(&vs[0]);
    assert_eq!(shares.len(), 3, "{shares:?}");
    assert!(shares.values().all(|n| *n >= 8), "uneven shares {shares:?}");
    let before = vs[0].slots.clone();
    let held_by_c: Vec<usize> = (0..SLOTS as usize)
        .filter(|i| before[*i].holder.as_ref().unwrap().name == "c")
        .collect();

    // c falls silent (its loop stops without leaving, as a crash or a long pause would).
    let t0 = Instant::now();
    drop(c);
    let vs = wait_views(
        "c declared down, its slots claimed",
        Duration::from_secs(20),
        &[&la, &lb],
        |v| settled(v, &["a", "b"]),
    );
    let failover = t0.elapsed();
    for i in &held_by_c {
        let (old, new) = (&before[*i], &vs[0].slots[*i]);
        assert!(
            new.epoch > old.epoch,
            "slot {i}: epoch {} → {}",
            old.epoch,
            new.epoch
        );
    }
    // Slots a and b held stay where they were, at the same epoch.
    for (i, old) in before.iter().enumerate() {
        if old.holder.as_ref().unwrap().name != "c" {
            assert_eq!(
                &vs[0].slots[i], old,
                "slot {i} moved though its holder lives"
            );
        }
    }
    assert!(
        failover >= Duration::from_millis(1500),
        "declared down after {failover:?}, before the member timeout"
    );
    eprintln!(
        "control_plane: c's {} slots claimed {failover:?} after it fell silent",
        held_by_c.len()
    );

    // c comes back (a new incarnation) and gets its share back by hand-over.
    let (c, lc) = start(&ks, "c");
    let vs = wait_views(
        "c back with its share",
        Duration::from_secs(30),
        &[&la, &lb, &lc],
        |v| {
            settled(v, &three)
                && v.releasing.is_empty()
                && per_holder(v).get("c").is_some_and(|n| *n >= 8)
        },
    );
    for i in &held_by_c {
        assert!(
            vs[0].slots[*i].epoch >= before[*i].epoch + 2,
            "slot {i} went back without a new epoch"
        );
    }
    for (l, me) in [(&la, "a"), (&lb, "b"), (&lc, "c")] {
        let v = view(l).unwrap();
        assert_eq!(v.me.name, me);
        let serving = (0..SLOTS).filter(|s| v.serving(*s).is_some()).count();
        assert_eq!(serving, per_holder(&v)[me], "{me} serves what it holds");
    }
    assert!(a.lease().valid_now() && b.lease().valid_now() && c.lease().valid_now());
    drop((a, b, c));
}

#[test]
fn a_different_slot_count_is_refused() {
    let Some(ks) = common::TestKeyspace::new("control_slot_count") else {
        return;
    };
    ks.create();
    let (a, la) = start(&ks, "a");
    wait_views("a up", Duration::from_secs(30), &[&la], |v| {
        settled(v, &["a"])
    });
    let s = Settings {
        nodes: vec![ks.addr.clone()],
        keyspace: ks.name.clone(),
        name: "b".into(),
        client: "b:1".into(),
        admin: "b:2".into(),
        bus: "b:3".into(),
        timing: Timing {
            member_timeout_ms: 2000,
            beat_every_ms: 200,
            max_drift_ppm: 1000,
        },
        slots: SLOTS * 2,
        timeout: Duration::from_secs(10),
    };
    let b = Control::start(s, |_| {}, |_| true).unwrap();
    let err = b
        .ended_within(Duration::from_secs(30))
        .expect("b should refuse to run")
        .unwrap_err();
    assert!(err.contains("slot count for life"), "{err}");
    drop(a);
}

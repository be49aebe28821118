//! The dynamic cluster's glue between the control loop and the cores: each view of the loop
//! becomes a routing [`Membership`] published through the [`ViewCell`], the bus learns the
//! peers to dial, and the loop learns when every core has stopped serving a slot it hands
//! over. Callbacks run on the control thread; start-up on the main thread.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::bus::{peer_urls, Outbound};
use super::control::{Control, Settings, View};
use super::ownership::Timing;
use super::{Membership, ViewCell};
use crate::config::Config;
use crate::fencing::Fences;

/// How often a member heartbeats (and reads the members and slots): a tenth of the timeout,
/// so the live set is known everywhere well within a second at the default 3 s timeout.
fn beat_every_ms(member_timeout_ms: u64) -> u64 {
    (member_timeout_ms / 10).clamp(50, 1000)
}

/// Clock drift the lease allows for: 1 %, far above what NTP-disciplined clocks show.
const MAX_DRIFT_PPM: u64 = 10_000;

struct Shared {
    cores: usize,
    /// What the scylla stores fence by: set from each view before the cores see it.
    fences: Arc<Fences>,
    generation: u64,
    cell: Option<Arc<ViewCell>>,
    bus: Option<crossbeam_channel::Sender<Outbound>>,
    latest: Option<Arc<View>>,
    /// Slots being handed over -> the generation of the first view that showed it.
    releasing: HashMap<u32, u64>,
}

/// Whether two views route alike: heartbeat counts aside (they change every beat, and each
/// new routing view costs every core a pass over its users), the same members, slots and
/// hand-overs.
fn routes_alike(a: &View, b: &View) -> bool {
    let key = |v: &View| {
        v.members
            .iter()
            .map(|m| {
                (
                    m.id,
                    m.name.clone(),
                    m.incarnation,
                    m.alive,
                    m.leaving,
                    m.client.clone(),
                    m.bus.clone(),
                )
            })
            .collect::<Vec<_>>()
    };
    a.me == b.me
        && a.id == b.id
        && a.slots == b.slots
        && a.releasing == b.releasing
        && key(a) == key(b)
}

impl Shared {
    fn on_view(&mut self, view: Arc<View>) {
        if self
            .latest
            .as_deref()
            .is_some_and(|l| routes_alike(l, &view))
        {
            self.latest = Some(view);
            return;
        }
        self.generation += 1;
        let g = self.generation;
        // The stores first: a slot this member stops serving refuses writes before any core
        // routes by the view that released it, and one it gains is writable when they do.
        for slot in 0..view.slots.len() as u32 {
            self.fences.set(slot, view.serving(slot));
        }
        self.releasing.retain(|s, _| view.releasing.contains(s));
        for s in &view.releasing {
            self.releasing.entry(*s).or_insert(g);
        }
        if let Some(cell) = &self.cell {
            let m = Arc::new(Membership::from_view(&view, self.cores, g));
            if let Some(bus) = &self.bus {
                let _ = bus.send(Outbound::Peers(peer_urls(&m)));
            }
            cell.publish(m);
        }
        self.latest = Some(view);
    }

    /// Every core has installed a view in which `slot` is no longer served here.
    fn drained(&self, slot: u32) -> bool {
        match (&self.cell, self.releasing.get(&slot)) {
            (Some(cell), Some(g)) => cell.all_installed(*g),
            _ => false,
        }
    }
}

/// A running member of the dynamic cluster.
pub struct Dynamic {
    fences: Arc<Fences>,
    shared: Arc<Mutex<Shared>>,
    beat_every_ms: u64,
    cell: Arc<ViewCell>,
    control: Control,
}

fn lock(s: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

impl Dynamic {
    /// Joins the cluster in `cfg`'s keyspace and waits (bounded) for the first view.
    pub fn start(cfg: &Config, cores: usize) -> Result<Dynamic, String> {
        let (client, admin, bus) = cfg.member_addrs();
        let settings = Settings {
            nodes: cfg
                .scylla_node_list()
                .into_iter()
                .map(str::to_string)
                .collect(),
            keyspace: cfg.scylla_keyspace.clone(),
            name: cfg.node.clone(),
            client,
            admin,
            bus,
            timing: Timing {
                member_timeout_ms: cfg.member_timeout_ms,
                beat_every_ms: beat_every_ms(cfg.member_timeout_ms),
                max_drift_ppm: MAX_DRIFT_PPM,
            },
            slots: cfg.cluster_slots,
            timeout: Duration::from_millis(cfg.scylla_timeout_ms),
        };
        let lease = Arc::new(crate::fencing::LeaseClock::new());
        let fences = Arc::new(Fences::new(cfg.cluster_slots, lease.clone()));
        let shared = Arc::new(Mutex::new(Shared {
            cores,
            fences: fences.clone(),
            generation: 0,
            cell: None,
            bus: None,
            latest: None,
            releasing: HashMap::new(),
        }));
        let (a, b) = (shared.clone(), shared.clone());
        let control = Control::start_with_lease(
            settings,
            lease,
            move |v| lock(&a).on_view(v),
            move |slot| lock(&b).drained(slot),
        )?;
        // Registering waits out an earlier incarnation's row for the member timeout.
        let limit = Duration::from_millis(2 * cfg.member_timeout_ms + 4 * cfg.scylla_timeout_ms)
            .max(Duration::from_secs(10));
        let t0 = Instant::now();
        let first = loop {
            if let Some(v) = lock(&shared).latest.clone() {
                break v;
            }
            if !control.is_running() {
                return Err(match control.stop() {
                    Err(e) => format!("the dynamic cluster: {e}"),
                    Ok(()) => "the dynamic cluster's control loop ended".into(),
                });
            }
            if t0.elapsed() >= limit {
                return Err(format!(
                    "the dynamic cluster: no view of the members within {limit:?} \
                     (is the keyspace {} reachable and its schema current?)",
                    cfg.scylla_keyspace
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let cell = {
            let mut s = lock(&shared);
            let g = s.generation;
            let cell = Arc::new(ViewCell::new(
                Arc::new(Membership::from_view(&first, cores, g)),
                cores,
            ));
            s.cell = Some(cell.clone());
            cell
        };
        Ok(Dynamic {
            fences,
            shared,
            beat_every_ms: beat_every_ms(cfg.member_timeout_ms),
            cell,
            control,
        })
    }

    pub fn cell(&self) -> Arc<ViewCell> {
        self.cell.clone()
    }

    /// What this member's scylla stores fence their writes by.
    pub fn fences(&self) -> Arc<Fences> {
        self.fences.clone()
    }

    /// From now on the bus dials the peers of every view (starting with the current one).
    pub fn attach_bus(&self, out: crossbeam_channel::Sender<Outbound>) {
        let _ = out.send(Outbound::Peers(peer_urls(&self.cell.current())));
        lock(&self.shared).bus = Some(out);
    }

    /// Leaves the cluster: every slot handed over as the cores stop serving it, then this
    /// member marks itself down. False if that did not finish within `limit`.
    pub fn leave(&self, limit: Duration) -> bool {
        self.control.leave();
        let t0 = Instant::now();
        while self.control.is_running() {
            if t0.elapsed() >= limit {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // The others learn of the new holders at their next read of the slots: until then they
        // still send requests here, which the cores answer "moving" (not served, so the
        // sender follows the slot) instead of leaving them to time out.
        std::thread::sleep(Duration::from_millis(3 * self.beat_every_ms));
        true
    }

    /// Stops taking part (the others see this member fall silent and claim its slots).
    pub fn stop(self) {
        if let Err(e) = self.control.stop() {
            tracing::warn!(error = %e, "the control loop had failed");
        }
    }
}

//! The cluster view and the one answer to "where does this uid live": its node and its core
//! there. Static (`--nodes`): rendezvous hashing over node names, so adding a node moves only
//! about 1/N of the users. Dynamic (`--storage=scylla`, no `--nodes`): the holder of the uid's
//! slot in the control loop's latest view. Pure; each view is immutable, shared by every core
//! and the bus threads, and replaced whole through a [`ViewCell`].

pub mod bus;
#[cfg(feature = "scylla")]
pub mod control;
#[cfg(feature = "scylla")]
pub mod dynamic;
pub mod ownership;
pub mod wire;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ipush_placement::{core_of, slot_of, Rendezvous};

use crate::config::{Config, NodeSpec};
pub use crate::ids::NodeId;
use crate::ids::ShardId;

/// Where a uid lives: the node that owns it and the core that owns it there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub node: NodeId,
    pub core: ShardId,
}

/// A member's state as `/health` lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    Up,
    /// Alive, and some slot that belongs with it is still held by another member.
    Joining,
    /// Alive, and still handing slots over (it has stopped serving them).
    Leaving,
    Down,
}

impl MemberState {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Up => "up",
            MemberState::Joining => "joining",
            MemberState::Leaving => "leaving",
            MemberState::Down => "down",
        }
    }
}

#[derive(Debug, Clone)]
enum Place {
    /// `--nodes`: rendezvous over the names.
    Ring(Rendezvous),
    /// The dynamic cluster: each slot's holder, and the epoch this node serves it at (None:
    /// not served here, also while it is being handed over).
    Slots {
        holder: Vec<Option<NodeId>>,
        serving: Vec<Option<u32>>,
        /// Where each slot this node is handing over goes next.
        next: Vec<Option<NodeId>>,
        /// Slots that belong with this node but are still held elsewhere (or by a member that
        /// is down): they are on their way here.
        incoming: Vec<bool>,
    },
}

#[derive(Debug, Clone)]
pub struct Membership {
    /// Indexed by `NodeId` (dynamic: the member id; ids of no member are empty entries).
    nodes: Vec<NodeSpec>,
    state: Vec<MemberState>,
    place: Place,
    me: NodeId,
    cores: usize,
    /// Which view this is (0 for the static ones); grows with every view a node installs.
    generation: u64,
}

impl Membership {
    /// The static membership of `--node`/`--nodes`; one node (this one) when they are empty.
    pub fn from_config(cfg: &Config, cores: usize) -> Self {
        if cfg.nodes.is_empty() {
            let me = NodeSpec {
                name: "self".into(),
                host: String::new(),
                client_port: cfg.client_port,
                admin_port: cfg.admin_port,
                bus_port: cfg.bus_port,
            };
            return Self::new(vec![me], 0, cores);
        }
        let me = cfg
            .nodes
            .iter()
            .position(|n| n.name == cfg.node)
            .expect("config validation guarantees --node is in --nodes");
        Self::new(cfg.nodes.clone(), me, cores)
    }

    pub fn new(nodes: Vec<NodeSpec>, me: usize, cores: usize) -> Self {
        let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
        Membership {
            place: Place::Ring(Rendezvous::new(&names)),
            state: vec![MemberState::Up; nodes.len()],
            nodes,
            me: NodeId(me as u16),
            cores: cores.max(1),
            generation: 0,
        }
    }

    /// The dynamic cluster before its first view: this node alone, serving nothing.
    pub fn joining(me: NodeSpec, id: u16, slots: u32, cores: usize) -> Self {
        let mut nodes = vec![NodeSpec::default(); id as usize + 1];
        nodes[id as usize] = me;
        let mut state = vec![MemberState::Down; nodes.len()];
        state[id as usize] = MemberState::Up;
        Membership {
            nodes,
            state,
            place: Place::Slots {
                holder: vec![None; slots as usize],
                serving: vec![None; slots as usize],
                next: vec![None; slots as usize],
                incoming: vec![false; slots as usize],
            },
            me: NodeId(id),
            cores: cores.max(1),
            generation: 0,
        }
    }

    /// The routing view of the control loop's `view`, as generation `generation`.
    #[cfg(feature = "scylla")]
    pub fn from_view(view: &control::View, cores: usize, generation: u64) -> Self {
        let len = view
            .members
            .iter()
            .map(|m| m.id as usize + 1)
            .max()
            .unwrap_or(0);
        let len = len.max(view.id as usize + 1);
        let mut nodes = vec![NodeSpec::default(); len];
        let mut state = vec![MemberState::Down; len];
        for m in &view.members {
            let i = m.id as usize;
            nodes[i] = member_spec(m);
            state[i] = match (m.alive, m.leaving) {
                (false, _) => MemberState::Down,
                (true, true) => MemberState::Leaving,
                (true, false) => MemberState::Up,
            };
        }
        let live = |h: &ownership::Holder| {
            view.members
                .iter()
                .find(|m| m.name == h.name && m.incarnation == h.incarnation)
                .map(|m| NodeId(m.id))
        };
        let holder = view
            .slots
            .iter()
            .map(|r| r.holder.as_ref().and_then(live))
            .collect();
        let serving = (0..view.slots.len() as u32)
            .map(|s| view.serving(s))
            .collect();
        let placement = view.live();
        let id_of = |h: &ownership::Holder| {
            view.members
                .iter()
                .find(|m| m.name == h.name)
                .map(|m| NodeId(m.id))
        };
        let placer = ownership::Placer::new(&placement);
        let mut next = vec![None; view.slots.len()];
        for s in &view.releasing {
            if let Some(n) = next.get_mut(*s as usize) {
                *n = placer.owner(*s).and_then(id_of);
            }
        }
        // A member some slot belongs with but is not held by yet is still joining.
        let mut incoming = vec![false; view.slots.len()];
        for (slot, row) in view.slots.iter().enumerate() {
            if let Some(want) = placer.owner(slot as u32) {
                if row.holder.as_ref() != Some(want) {
                    incoming[slot] = *want == view.me;
                    if let Some(NodeId(i)) = id_of(want) {
                        if state[i as usize] == MemberState::Up {
                            state[i as usize] = MemberState::Joining;
                        }
                    }
                }
            }
        }
        Membership {
            nodes,
            state,
            place: Place::Slots {
                holder,
                serving,
                next,
                incoming,
            },
            me: NodeId(view.id),
            cores: cores.max(1),
            generation,
        }
    }

    /// Where `uid` lives: every routing decision (`/shard`, 303s, hand-offs, bus requests)
    /// asks this, and `loadtest` uses the same placement crate. In the dynamic cluster a slot
    /// that nobody holds is this node's, to wait for ([`Membership::serves`] says no).
    pub fn locate(&self, uid: &str) -> Owner {
        let node = match &self.place {
            Place::Ring(ring) => NodeId(ring.owner(uid) as u16),
            Place::Slots { holder, .. } => {
                let slot = slot_of(uid, holder.len() as u32) as usize;
                holder[slot].unwrap_or(self.me)
            }
        };
        Owner {
            node,
            core: ShardId(core_of(uid, self.cores)),
        }
    }

    /// Whether this node serves `uid` now, and at which epoch (the static cluster: epoch 0
    /// for its own users).
    pub fn serves(&self, uid: &str) -> Option<u32> {
        match &self.place {
            Place::Ring(ring) => (NodeId(ring.owner(uid) as u16) == self.me).then_some(0),
            Place::Slots { serving, .. } => serving[slot_of(uid, serving.len() as u32) as usize],
        }
    }

    /// Where a stream of `uid` that this node no longer serves should go: its slot's holder,
    /// or the member it is being handed to (None: not known yet, or this node).
    pub fn moved_to(&self, uid: &str) -> Option<&NodeSpec> {
        let Place::Slots { holder, next, .. } = &self.place else {
            return None;
        };
        let slot = slot_of(uid, holder.len() as u32) as usize;
        let to = holder[slot].filter(|n| *n != self.me).or(next[slot])?;
        (to != self.me).then(|| self.node(to))
    }

    /// Whether `uid`'s slot belongs with this node but is still held elsewhere: a request
    /// for it here waits a moment for the hand-over rather than bouncing to the old holder.
    pub fn incoming(&self, uid: &str) -> bool {
        match &self.place {
            Place::Ring(_) => false,
            Place::Slots { incoming, .. } => incoming[slot_of(uid, incoming.len() as u32) as usize],
        }
    }

    /// Whether a slot is in motion to or from this node, or held by nobody: a channel
    /// message waits a moment for it, so that members between holders are reached.
    pub fn in_motion(&self) -> bool {
        let Place::Slots {
            holder,
            serving,
            incoming,
            ..
        } = &self.place
        else {
            return false;
        };
        (0..holder.len()).any(|s| {
            incoming[s]
                || holder[s].is_none()
                || (holder[s] == Some(self.me) && serving[s].is_none())
        })
    }

    /// The dynamic cluster's slot count (None for the static one).
    pub fn slots(&self) -> Option<u32> {
        match &self.place {
            Place::Ring(_) => None,
            Place::Slots { serving, .. } => Some(serving.len() as u32),
        }
    }

    /// How many slots this node serves now (the static cluster: 0).
    pub fn served_slots(&self) -> usize {
        match &self.place {
            Place::Ring(_) => 0,
            Place::Slots { serving, .. } => serving.iter().filter(|s| s.is_some()).count(),
        }
    }

    pub fn is_dynamic(&self) -> bool {
        matches!(self.place, Place::Slots { .. })
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Every member known, with its state (the static cluster: all `up`; the bus says which
    /// peers answer).
    pub fn members(&self) -> impl Iterator<Item = (NodeId, &NodeSpec, MemberState)> + '_ {
        self.nodes
            .iter()
            .zip(&self.state)
            .enumerate()
            .filter(|(_, (n, _))| !n.name.is_empty())
            .map(|(i, (n, s))| (NodeId(i as u16), n, *s))
    }

    pub fn me(&self) -> NodeId {
        self.me
    }

    /// This node's name (`--node`, or `self` without `--nodes`).
    pub fn me_name(&self) -> &str {
        &self.nodes[self.me.0 as usize].name
    }

    pub fn cores(&self) -> usize {
        self.cores
    }

    pub fn is_cluster(&self) -> bool {
        self.is_dynamic() || self.nodes.len() > 1
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn node(&self, id: NodeId) -> &NodeSpec {
        &self.nodes[id.0 as usize]
    }

    /// Every other node (the dynamic cluster: every other member not down).
    pub fn peers(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.members()
            .filter(move |(n, _, s)| *n != self.me && *s != MemberState::Down)
            .map(|(n, _, _)| n)
    }
}

/// A member row's addresses as a node spec (an address that does not parse: port 0, so the
/// node is never dialed and requests to it fail as to a node that is down).
#[cfg(feature = "scylla")]
fn member_spec(m: &control::Member) -> NodeSpec {
    fn split(addr: &str) -> (String, u16) {
        match addr.rsplit_once(':') {
            Some((h, p)) => (
                h.trim_start_matches('[').trim_end_matches(']').to_string(),
                p.parse().unwrap_or(0),
            ),
            None => (addr.to_string(), 0),
        }
    }
    let (host, client_port) = split(&m.client);
    NodeSpec {
        name: m.name.clone(),
        host,
        client_port,
        admin_port: split(&m.admin).1,
        bus_port: split(&m.bus).1,
    }
}

/// Where every core finds the membership in force: a new one is published whole, and a core
/// picks it up with one atomic load per routing decision (the lock is taken only when the
/// generation changed). Each core also says which generation it has installed, so the control
/// loop knows when every core stopped serving a slot it hands over.
pub struct ViewCell {
    /// `POST /drain` asked this member to leave the cluster.
    leave: AtomicBool,
    generation: AtomicU64,
    current: Mutex<Arc<Membership>>,
    installed: Vec<AtomicU64>,
}

impl ViewCell {
    pub fn new(first: Arc<Membership>, cores: usize) -> Self {
        ViewCell {
            leave: AtomicBool::new(false),
            generation: AtomicU64::new(first.generation),
            current: Mutex::new(first),
            installed: (0..cores.max(1)).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn current(&self) -> Arc<Membership> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Asks this member to leave the cluster (the start-up thread acts on it).
    pub fn request_leave(&self) {
        self.leave.store(true, Ordering::Release);
    }

    pub fn leave_requested(&self) -> bool {
        self.leave.load(Ordering::Acquire)
    }

    /// Publishes `next` (its generation must be above the current one).
    pub fn publish(&self, next: Arc<Membership>) {
        let g = next.generation;
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = next;
        self.generation.store(g, Ordering::Release);
    }

    /// Core `core` has installed generation `g` (and acted on it).
    pub fn installed(&self, core: ShardId, g: u64) {
        if let Some(a) = self.installed.get(core.0) {
            a.store(g, Ordering::Release);
        }
    }

    /// Whether every core has installed generation `g` or a later one.
    pub fn all_installed(&self, g: u64) -> bool {
        self.installed
            .iter()
            .all(|a| a.load(Ordering::Acquire) >= g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: usize) -> Vec<NodeSpec> {
        (0..n)
            .map(|i| NodeSpec {
                name: format!("n{}", i + 1),
                host: format!("127.0.0.{}", i + 1),
                client_port: 9000,
                admin_port: 9001,
                bus_port: 9002,
            })
            .collect()
    }

    #[test]
    fn every_node_agrees_and_users_spread() {
        let views: Vec<Membership> = (0..3).map(|me| Membership::new(nodes(3), me, 2)).collect();
        let mut per_node = [0usize; 3];
        for i in 0..10_000 {
            let uid = format!("user{i}");
            let o = views[0].locate(&uid);
            assert!(views.iter().all(|v| v.locate(&uid) == o));
            per_node[o.node.0 as usize] += 1;
        }
        for c in per_node {
            assert!((2_900..3_800).contains(&c), "uneven: {per_node:?}");
        }
    }

    #[test]
    fn adding_a_node_moves_about_a_quarter() {
        let three = Membership::new(nodes(3), 0, 1);
        let four = Membership::new(nodes(4), 0, 1);
        let moved = (0..10_000)
            .filter(|i| {
                let uid = format!("u{i}");
                three.node(three.locate(&uid).node).name != four.node(four.locate(&uid).node).name
            })
            .count();
        // Ideal is 1/4; only users that move go to the new node.
        assert!(moved <= 3_500, "{moved} of 10000 moved");
        assert!(
            moved >= 1_500,
            "{moved} of 10000 moved (new node got too few)"
        );
        for i in 0..10_000 {
            let uid = format!("u{i}");
            let (a, b) = (three.locate(&uid).node, four.locate(&uid).node);
            if three.node(a).name != four.node(b).name {
                assert_eq!(four.node(b).name, "n4", "a user moved between old nodes");
            }
        }
    }

    #[test]
    fn single_node_owns_everything() {
        let m = Membership::new(nodes(1), 0, 4);
        assert!(!m.is_cluster());
        assert_eq!(m.locate("anyone").node, NodeId(0));
        assert_eq!(m.peers().count(), 0);
    }
}

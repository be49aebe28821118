//! The cluster view and the one answer to "where does this uid live": its node (rendezvous
//! hashing over node names, so adding a node moves only about 1/N of the users) and its core
//! there. Pure; built once at start-up, shared by every core and the bus threads.

pub mod bus;
#[cfg(feature = "scylla")]
pub mod control;
#[cfg(feature = "scylla")]
pub mod fences;
pub mod ownership;
pub mod wire;

use ipush_placement::{core_of, Rendezvous};

use crate::config::{Config, NodeSpec};
pub use crate::ids::NodeId;
use crate::ids::ShardId;

/// Where a uid lives: the node that owns it and the core that owns it there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub node: NodeId,
    pub core: ShardId,
}

#[derive(Debug, Clone)]
pub struct Membership {
    nodes: Vec<NodeSpec>,
    ring: Rendezvous,
    me: NodeId,
    cores: usize,
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
            ring: Rendezvous::new(&names),
            nodes,
            me: NodeId(me as u16),
            cores: cores.max(1),
        }
    }

    /// Where `uid` lives: every routing decision (`/shard`, 303s, hand-offs, bus requests)
    /// asks this, and `loadtest` uses the same placement crate.
    pub fn locate(&self, uid: &str) -> Owner {
        Owner {
            node: NodeId(self.ring.owner(uid) as u16),
            core: ShardId(core_of(uid, self.cores)),
        }
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
        self.nodes.len() > 1
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

    /// Every other node.
    pub fn peers(&self) -> impl Iterator<Item = NodeId> + '_ {
        (0..self.nodes.len() as u16)
            .map(NodeId)
            .filter(move |n| *n != self.me)
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

//! Cluster membership and ownership: which node owns a uid (rendezvous hashing over node
//! names, so adding a node moves only about 1/N of the users) and which core on it. Pure;
//! built once at start-up and read by every core.

pub mod bridge;
pub mod wire;

use crate::config::{Config, NodeSpec};
use crate::shard::ids::{shard_of, stable_hash, ShardId};

/// Index of a node in `--nodes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u16);

/// Where a uid lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub node: NodeId,
    pub core: ShardId,
}

#[derive(Debug, Clone)]
pub struct Membership {
    nodes: Vec<NodeSpec>,
    salts: Vec<u64>,
    me: NodeId,
    cores: usize,
}

impl Membership {
    /// The static membership of `--node`/`--nodes`; one node (this one) when they are empty.
    pub fn from_config(cfg: &Config) -> Self {
        if cfg.nodes.is_empty() {
            let me = NodeSpec {
                name: "self".into(),
                host: String::new(),
                client_port: cfg.client_port,
                admin_port: cfg.admin_port,
                bus_port: cfg.bus_port,
            };
            return Self::new(vec![me], 0, cfg.cores);
        }
        let me = cfg
            .nodes
            .iter()
            .position(|n| n.name == cfg.node)
            .expect("config validation guarantees --node is in --nodes");
        Self::new(cfg.nodes.clone(), me, cfg.cores)
    }

    pub fn new(nodes: Vec<NodeSpec>, me: usize, cores: usize) -> Self {
        let salts = nodes
            .iter()
            .map(|n| stable_hash(0x4e4f_4445, n.name.as_bytes()))
            .collect();
        Membership {
            nodes,
            salts,
            me: NodeId(me as u16),
            cores: cores.max(1),
        }
    }

    /// The node that owns `uid`: the highest `hash(node, uid)` (rendezvous hashing).
    pub fn owner(&self, uid: &str) -> NodeId {
        if self.nodes.len() == 1 {
            return NodeId(0);
        }
        let mut best = (0u64, 0usize);
        for (i, salt) in self.salts.iter().enumerate() {
            let score = stable_hash(*salt, uid.as_bytes());
            if i == 0 || score > best.0 {
                best = (score, i);
            }
        }
        NodeId(best.1 as u16)
    }

    /// Node and core of `uid` (the core hash is independent of the node hash).
    pub fn locate(&self, uid: &str) -> Location {
        Location {
            node: self.owner(uid),
            core: shard_of(uid, self.cores),
        }
    }

    pub fn me(&self) -> NodeId {
        self.me
    }

    /// This node's name (`--node`, or `self` without `--nodes`).
    pub fn me_name(&self) -> &str {
        &self.nodes[self.me.0 as usize].name
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
            let o = views[0].owner(&uid);
            assert!(views.iter().all(|v| v.owner(&uid) == o));
            per_node[o.0 as usize] += 1;
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
                three.node(three.owner(&uid)).name != four.node(four.owner(&uid)).name
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
            let (a, b) = (three.owner(&uid), four.owner(&uid));
            if three.node(a).name != four.node(b).name {
                assert_eq!(four.node(b).name, "n4", "a user moved between old nodes");
            }
        }
    }

    #[test]
    fn single_node_owns_everything() {
        let m = Membership::new(nodes(1), 0, 4);
        assert!(!m.is_cluster());
        assert_eq!(m.owner("anyone"), NodeId(0));
        assert_eq!(m.peers().count(), 0);
    }
}

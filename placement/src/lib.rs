//! Where a uid lives: the stable hash, the core that owns it on a node and the node that owns it
//! in a cluster (rendezvous hashing over node names). Pure, any thread; shared by the server and
//! `loadtest`, so both always agree.

/// FNV-1a 64 with a murmur3 finaliser: stable across builds and machines, unlike `ahash`,
/// because a uid's core must stay the same across restarts (per-core stores own its data).
pub fn stable_hash(salt: u64, s: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ salt;
    for &b in s {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

const CORE_SALT: u64 = 0x0053_4841_5244;
const NODE_SALT: u64 = 0x4e4f_4445;
const SLOT_SALT: u64 = 0x534c_4f54;

/// The slot of `uid` among `slots` (the dynamic cluster's unit of ownership: a slot moves
/// between nodes whole, with its users). Independent of the core and node hashes.
pub fn slot_of(uid: &str, slots: u32) -> u32 {
    (stable_hash(SLOT_SALT, uid.as_bytes()) % u64::from(slots.max(1))) as u32
}

/// Index of the core that owns `uid` on a node of `cores` cores (independent of the node hash).
pub fn core_of(uid: &str, cores: usize) -> usize {
    (stable_hash(CORE_SALT, uid.as_bytes()) % cores.max(1) as u64) as usize
}

/// Rendezvous hashing over node names: the owner of a uid is the node with the highest
/// `hash(node, uid)`, so adding a node moves only the uids it now wins (about 1/N).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendezvous {
    salts: Vec<u64>,
}

impl Rendezvous {
    pub fn new<S: AsRef<str>>(names: &[S]) -> Self {
        Rendezvous {
            salts: names
                .iter()
                .map(|n| stable_hash(NODE_SALT, n.as_ref().as_bytes()))
                .collect(),
        }
    }

    /// Index (in the order given to `new`) of the node that owns `uid`; the first on ties.
    pub fn owner(&self, uid: &str) -> usize {
        if self.salts.len() <= 1 {
            return 0;
        }
        let mut best = (0u64, 0usize);
        for (i, salt) in self.salts.iter().enumerate() {
            let score = stable_hash(*salt, uid.as_bytes());
            if i == 0 || score > best.0 {
                best = (score, i);
            }
        }
        best.1
    }

    pub fn len(&self) -> usize {
        self.salts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.salts.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    const KNOWN_HASH: u64 = 0x1672_9071_c822_5499;
    const KNOWN_CORES: [usize; 8] = [2, 0, 2, 0, 1, 3, 0, 0];
    const KNOWN_NODES: [usize; 8] = [0, 1, 1, 2, 2, 1, 2, 0];

    #[test]
    fn cores_are_stable_and_spread() {
        assert_eq!(core_of("user001", 1), 0);
        assert_eq!(stable_hash(0, b"user001"), stable_hash(0, b"user001"));
        let mut counts = [0usize; 4];
        for i in 0..10_000 {
            counts[core_of(&format!("user{i}"), 4)] += 1;
        }
        for c in counts {
            assert!((2_200..2_800).contains(&c), "uneven spread {counts:?}");
        }
    }

    #[test]
    fn known_values_never_change() {
        // Data on disk and clients' caches are placed by these: a change strands every user.
        assert_eq!(stable_hash(0, b"user001"), KNOWN_HASH);
        let cores: Vec<usize> = (0..8).map(|i| core_of(&format!("user{i}"), 4)).collect();
        assert_eq!(cores, KNOWN_CORES);
        let r = Rendezvous::new(&["n1", "n2", "n3"]);
        let nodes: Vec<usize> = (0..8).map(|i| r.owner(&format!("user{i}"))).collect();
        assert_eq!(nodes, KNOWN_NODES);
    }

    #[test]
    fn adding_a_node_moves_only_to_it() {
        let three = Rendezvous::new(&["n1", "n2", "n3"]);
        let four = Rendezvous::new(&["n1", "n2", "n3", "n4"]);
        let mut moved = 0;
        for i in 0..10_000 {
            let uid = format!("u{i}");
            let (a, b) = (three.owner(&uid), four.owner(&uid));
            if a != b {
                assert_eq!(b, 3, "a user moved between old nodes");
                moved += 1;
            }
        }
        assert!((1_500..=3_500).contains(&moved), "{moved} of 10000 moved");
        assert_eq!(Rendezvous::new(&["only"]).owner("x"), 0);
    }

    #[test]
    fn slots_spread_and_stay_put() {
        let mut counts = [0usize; 16];
        for i in 0..16_000 {
            counts[slot_of(&format!("u{i}"), 16) as usize] += 1;
        }
        for c in counts {
            assert!((850..1_150).contains(&c), "uneven slots {counts:?}");
        }
        let slots: Vec<u32> = (0..8).map(|i| slot_of(&format!("user{i}"), 1024)).collect();
        // Stored slot rows and channel memberships are keyed by these: a change strands users.
        assert_eq!(slots, [442, 477, 937, 1009, 530, 185, 472, 479]);
        assert_eq!(slot_of("x", 0), 0);
    }
}

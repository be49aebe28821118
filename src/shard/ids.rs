//! Identity newtypes and the one function that decides which core owns a uid; pure, any thread.

use std::fmt;

/// Index of a core (executor) within this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub usize);

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A stream's identity on its core (unique per core, never reused while the process lives).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId(pub u64);

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

/// The core that owns `uid` on a node of `cores` cores.
pub fn shard_of(uid: &str, cores: usize) -> ShardId {
    ShardId((stable_hash(0x0053_4841_5244, uid.as_bytes()) % cores as u64) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_spread() {
        assert_eq!(shard_of("user001", 1), ShardId(0));
        assert_eq!(
            stable_hash(0, b"user001"),
            stable_hash(0, b"user001"),
            "deterministic"
        );
        let mut counts = [0usize; 4];
        for i in 0..10_000 {
            counts[shard_of(&format!("user{i}"), 4).0] += 1;
        }
        for c in counts {
            assert!((2_200..2_800).contains(&c), "uneven spread {counts:?}");
        }
    }
}

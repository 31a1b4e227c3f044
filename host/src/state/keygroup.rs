//! Key groups: the unit state is sharded, stored and moved by.
//!
//! A plugin's key (a page, a session, a user, or `""`) hashes into one of
//! [`KEY_GROUPS`] key groups, a fixed number (Flink's max-parallelism).
//! The store keeps each key group's keys together (see `super::store`), the
//! changelog has one partition per key group, and the pipeline gives each
//! key group one owner (`crate::pipeline::exchange::owner`) — so a key
//! group's state can be read, dropped or restored as a whole wherever it
//! moves, never rehashed.

use std::ops::Range;

/// The number of key groups.
pub const KEY_GROUPS: u32 = 128;

/// A key's key group: a stable hash (FNV-1a, then a 64-bit finalizer) of
/// its bytes — the same on every host and every build.
pub fn key_group(key: &str) -> u32 {
    let mut h = fnv1a(key.as_bytes());
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    (h % u64::from(KEY_GROUPS)) as u32
}

/// FNV-1a (64 bits) of `bytes`: stable on every host and every build.
#[inline]
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Every key group.
pub fn all() -> Range<u32> {
    0..KEY_GROUPS
}

/// The key groups of `part` of `parts` contiguous ranges, as Flink assigns
/// key groups to operator instances: key group `kg` is in part
/// `kg * parts / KEY_GROUPS`.
pub fn range_of(part: usize, parts: usize) -> Range<u32> {
    let first = |i: usize| (i * KEY_GROUPS as usize).div_ceil(parts) as u32;
    first(part)..first(part + 1).min(KEY_GROUPS)
}

/// The part (of `parts`) that key group `kg` belongs to: the inverse of
/// [`range_of`].
pub fn part_of(kg: u32, parts: usize) -> usize {
    kg as usize * parts / KEY_GROUPS as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_groups_are_stable_and_spread() {
        // Fixed values: hosts and builds must agree on them.
        let kgs: Vec<u32> = ["", "/", "user-1", "user-2"]
            .iter()
            .map(|k| key_group(k))
            .collect();
        assert_eq!(kgs, vec![82, 74, 45, 47]);
        let mut hits = [0u32; KEY_GROUPS as usize];
        for i in 0..100_000 {
            hits[key_group(&format!("user-{i}")) as usize] += 1;
        }
        let (lo, hi) = (hits.iter().min().unwrap(), hits.iter().max().unwrap());
        assert!(*lo > 600 && *hi < 960, "uneven: {lo}..{hi}");
    }

    #[test]
    fn the_ranges_are_the_parts_key_groups() {
        for parts in 1..=KEY_GROUPS as usize {
            let mut next = 0;
            for part in 0..parts {
                let r = range_of(part, parts);
                assert_eq!(r.start, next, "{part} of {parts}: contiguous");
                assert!(
                    !r.is_empty(),
                    "{part} of {parts}: every part has key groups"
                );
                for kg in r.clone() {
                    assert_eq!(part_of(kg, parts), part, "key group {kg} of {parts} parts");
                }
                next = r.end;
            }
            assert_eq!(next, KEY_GROUPS, "{parts} parts cover every key group");
        }
    }
}

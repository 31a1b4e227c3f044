//! Merging logged commits: each key's newest change, in key order — the
//! heart of a checkpoint fold (see `crate::checkpoint`).

use super::Key;
use super::codec::Changes;

/// What a checkpoint fold did, for the log.
#[derive(Debug, Default, Clone, Copy)]
pub struct Fold {
    /// Logged commits folded.
    pub commits: usize,
    /// Changes merged: those of the plugins still present, up to each
    /// one's latest rewrite.
    pub changes: usize,
    /// Keys written.
    pub keys: usize,
    /// Reading and merging the logged commits.
    pub read: std::time::Duration,
    /// Of `read`: loading and decoding them.
    pub load: std::time::Duration,
    /// The one write of the keys, the meta and the log's deletion.
    pub write: std::time::Duration,
}

/// One change as a fold keeps it: the key copied inline (up to 24 bytes),
/// the entry pointing into its decoded commit.
#[derive(Default)]
pub(super) struct Kept<'c> {
    pub key: Key,
    pub value: Option<&'c [u8]>,
}

/// Changes per partition of a fold, about: a partition's keys and map stay
/// in the L2 cache.
const PART: usize = 4096;

/// Each key's newest change in one plugin's logged changes (`logs`, newest
/// commit first), in key order — the memtable, a skip list, takes sorted
/// inserts faster.
///
/// Measured at 100 000 events/s, a fold merges ~2 M changes into ~400 000
/// keys. Probing one map of that size cost a cache miss for the bucket and
/// another for the key bytes in some older commit, per change: ~1 s of a
/// core per checkpoint, taken from the processing thread on two cores. So
/// the changes are first placed by key hash into partitions of a few
/// thousand, keys copied inline — sequential reads and writes, into one
/// allocation (a vector per partition spent a quarter of the fold in the
/// allocator) — and each partition is then deduplicated with a map that
/// stays in the cache.
pub(super) fn newest_changes<'c>(logs: &[&'c Changes]) -> Result<Vec<Kept<'c>>, String> {
    use std::hash::BuildHasher;
    let total: usize = logs.iter().map(|c| c.len()).sum();
    let parts = (total / PART).next_power_of_two().clamp(1, 1 << 16);
    // Bits 40.. pick the partition: a partition's map indexes by the low
    // bits and tags by the top seven, so both stay spread.
    let part_of =
        |key: &str| (rustc_hash::FxBuildHasher.hash_one(key) >> 40) as usize & (parts - 1);
    // Count, then place each change at its partition's next slot.
    let mut at = vec![0usize; parts + 1];
    for log in logs {
        for c in log.iter() {
            at[part_of(c?.0) + 1] += 1;
        }
    }
    for p in 1..=parts {
        at[p] += at[p - 1];
    }
    let bounds = at.clone();
    let mut all: Vec<Kept> = Vec::new();
    all.resize_with(total, Kept::default);
    for log in logs {
        for c in log.iter() {
            let (key, value) = c?;
            let slot = &mut at[part_of(key)];
            all[*slot] = Kept {
                key: Key::from(key),
                value,
            };
            *slot += 1;
        }
    }
    // Per partition, the first (newest) change of each key.
    let mut keep = vec![false; total];
    let mut set = rustc_hash::FxHashSet::default();
    for p in 0..parts {
        set.clear();
        for i in bounds[p]..bounds[p + 1] {
            keep[i] = set.insert(all[i].key.as_str());
        }
    }
    drop(set);
    let mut out: Vec<Kept> = all
        .into_iter()
        .zip(keep)
        .filter_map(|(c, k)| k.then_some(c))
        .collect();
    // Key order, sorting (first 16 bytes as a number, index) pairs: most
    // keys differ there, so most comparisons are one integer compare
    // instead of a string compare of two 40-byte items.
    let mut order: Vec<(u128, u32)> = out
        .iter()
        .enumerate()
        .map(|(i, c)| (prefix16(c.key.as_bytes()), i as u32))
        .collect();
    order.sort_unstable_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| out[a.1 as usize].key.cmp(&out[b.1 as usize].key))
    });
    Ok(order
        .into_iter()
        .map(|(_, i)| std::mem::take(&mut out[i as usize]))
        .collect())
}

/// A key's first 16 bytes, zero-padded, as a big-endian number: where two
/// of these differ they order the keys as the bytes do (a zero byte that
/// pads compares like the end of the shorter key); where they are equal the
/// keys must be compared whole.
fn prefix16(key: &[u8]) -> u128 {
    let mut b = [0u8; 16];
    let n = key.len().min(16);
    b[..n].copy_from_slice(&key[..n]);
    u128::from_be_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fold_keeps_each_keys_newest_change_in_key_order() {
        // Enough changes for many partitions; keys short and long (inline
        // and heap), entries and deletions, repeated across the logs.
        let mut rng = 11u64;
        let mut logs = Vec::new();
        for _ in 0..12 {
            // A commit holds each key once.
            let mut c = Changes::default();
            let mut once = std::collections::HashSet::new();
            for _ in 0..3_000 {
                rng = rng
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let n = (rng >> 33) % 9_000;
                let key = if n.is_multiple_of(7) {
                    format!("a-rather-long-session-key-{n}")
                } else {
                    format!("u{n}")
                };
                if !once.insert(n) {
                    continue;
                }
                let v = (rng >> 20).to_le_bytes();
                c.put(
                    &key,
                    (!n.is_multiple_of(5) || rng & 1 == 0).then_some(&v[..]),
                );
            }
            logs.push(c);
        }
        // Newest first, as the fold hands them over.
        let newest_first: Vec<&Changes> = logs.iter().rev().collect();
        let mut want: std::collections::BTreeMap<String, Option<Vec<u8>>> = Default::default();
        for c in &logs {
            for e in c.iter() {
                let (k, v) = e.unwrap();
                want.insert(k.to_string(), v.map(<[u8]>::to_vec));
            }
        }
        let got: Vec<(String, Option<Vec<u8>>)> = newest_changes(&newest_first)
            .unwrap()
            .into_iter()
            .map(|c| (c.key.to_string(), c.value.map(<[u8]>::to_vec)))
            .collect();
        assert!(got.len() > 8_000, "{} keys", got.len());
        assert_eq!(got, want.into_iter().collect::<Vec<_>>());
    }
}

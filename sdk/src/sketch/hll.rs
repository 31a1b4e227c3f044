//! HyperLogLog distinct counting (Flajolet et al. 2007) with a sparse
//! representation and Ertl's improved estimator (2017).
//!
//! Plugins keep one sketch per window, and sliding windows overlap (twelve
//! live windows for a one-minute window sliding by five seconds), so a sketch
//! of a few values must stay a few bytes: small sketches keep a sorted list of
//! the non-zero registers and switch to one byte per register only once that
//! is smaller. The estimator needs no empirical bias tables, no switch-over
//! threshold and no logarithm, so `count` is bit-identical on every platform.

use serde::{Deserialize, Serialize};

/// Smallest precision (16 registers).
pub const MIN_PRECISION: u8 = 4;
/// Largest precision (65 536 registers).
pub const MAX_PRECISION: u8 = 16;
/// Default precision: 4 096 registers, about 1.6 % standard error.
pub const DEFAULT_PRECISION: u8 = 12;

/// A distinct-count sketch.
///
/// With precision `p` it has `m = 2^p` registers and estimates the number of
/// distinct items with a relative standard error of about `1.04 / sqrt(m)`:
/// 1.6 % for the default `p = 12` (so 99.7 % of estimates fall within ±4.9 %),
/// 0.4 % for `p = 16`. Small cardinalities are counted almost exactly (the
/// estimator degenerates to linear counting there).
///
/// Memory: an empty sketch serializes to 3 bytes; a sketch with `k` non-zero
/// registers keeps a sorted list of `k` entries (about 3 bytes each once
/// serialized) until `k > m / 4`, then one byte per register (`m` bytes:
/// 4 KiB at `p = 12`).
///
/// Items are hashed with [`hash64`], which never changes between versions, so
/// sketches persisted in states stay mergeable.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Raw")]
pub struct HyperLogLog {
    p: u8,
    regs: Registers,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Registers {
    /// Non-zero registers as `index << 8 | rank`, strictly ascending.
    Sparse(Vec<u32>),
    /// One rank per register.
    Dense(#[serde(with = "super::bytes")] Vec<u8>),
}

#[derive(Deserialize)]
struct Raw {
    p: u8,
    regs: Registers,
}

impl TryFrom<Raw> for HyperLogLog {
    type Error = String;

    fn try_from(raw: Raw) -> Result<Self, String> {
        if crate::layout::tracing() {
            return Ok(HyperLogLog::default());
        }
        let p = raw.p;
        if !(MIN_PRECISION..=MAX_PRECISION).contains(&p) {
            return Err(format!(
                "HyperLogLog precision {p} out of {MIN_PRECISION}..={MAX_PRECISION}"
            ));
        }
        let m = 1usize << p;
        let max_rank = 65 - p as u32;
        let ok = match &raw.regs {
            Registers::Sparse(es) => {
                es.iter()
                    .all(|&e| (e >> 8) < m as u32 && (1..=max_rank).contains(&(e & 0xff)))
                    && es.windows(2).all(|w| w[0] >> 8 < w[1] >> 8)
            }
            Registers::Dense(rs) => rs.len() == m && rs.iter().all(|&r| r as u32 <= max_rank),
        };
        if !ok {
            return Err("corrupt HyperLogLog registers".into());
        }
        Ok(HyperLogLog { p, regs: raw.regs })
    }
}

impl Default for HyperLogLog {
    fn default() -> Self {
        Self::new(DEFAULT_PRECISION)
    }
}

impl HyperLogLog {
    /// An empty sketch with `2^p` registers.
    ///
    /// # Panics
    /// If `p` is outside `4..=16`.
    pub fn new(p: u8) -> Self {
        assert!(
            (MIN_PRECISION..=MAX_PRECISION).contains(&p),
            "HyperLogLog precision {p} out of {MIN_PRECISION}..={MAX_PRECISION}"
        );
        HyperLogLog {
            p,
            regs: Registers::Sparse(Vec::new()),
        }
    }

    /// The precision `p` (`2^p` registers).
    pub fn precision(&self) -> u8 {
        self.p
    }

    /// Add an item (hashed with [`hash64`]).
    pub fn insert(&mut self, item: &[u8]) {
        self.insert_hash(hash64(item));
    }

    /// Add a string item.
    pub fn insert_str(&mut self, item: &str) {
        self.insert_hash(hash64(item.as_bytes()));
    }

    /// Add an item by its 64-bit hash; the hash must be well mixed (use
    /// [`hash64`] unless the value already is one).
    pub fn insert_hash(&mut self, hash: u64) {
        let p = self.p as u32;
        let index = (hash >> (64 - p)) as u32;
        let rank = (hash << p).leading_zeros().min(64 - p) + 1;
        self.set(index, rank as u8);
    }

    /// Estimated number of distinct items.
    pub fn count(&self) -> u64 {
        let p = self.p as u32;
        let q = (64 - p) as usize;
        let m = (1u64 << p) as f64;
        let mut hist = [0u32; 66];
        match &self.regs {
            Registers::Sparse(es) => {
                hist[0] = (1u32 << p) - es.len() as u32;
                for &e in es {
                    hist[(e & 0xff) as usize] += 1;
                }
            }
            Registers::Dense(rs) => {
                for &r in rs {
                    hist[r as usize] += 1;
                }
            }
        }
        if hist[0] as f64 == m {
            return 0;
        }
        let mut z = m * tau(1.0 - hist[q + 1] as f64 / m);
        for k in (1..=q).rev() {
            z = 0.5 * (z + hist[k] as f64);
        }
        z += m * sigma(hist[0] as f64 / m);
        let alpha_inf = 0.5 / std::f64::consts::LN_2;
        (alpha_inf * m * m / z).round() as u64
    }

    /// Whether nothing was inserted.
    pub fn is_empty(&self) -> bool {
        match &self.regs {
            Registers::Sparse(es) => es.is_empty(),
            Registers::Dense(rs) => rs.iter().all(|&r| r == 0),
        }
    }

    /// Fold `other` in: afterwards `self` estimates the union. Sketches of
    /// different precisions merge at the lower one (exactly, as if built at
    /// that precision).
    pub fn merge(&mut self, other: &Self) {
        if other.p < self.p {
            *self = self.reduced(other.p);
        } else if other.p > self.p {
            return self.merge(&other.reduced(self.p));
        }
        let limit = self.sparse_limit();
        match (&mut self.regs, &other.regs) {
            (Registers::Dense(a), Registers::Dense(b)) => {
                for (x, &y) in a.iter_mut().zip(b) {
                    *x = (*x).max(y);
                }
            }
            (Registers::Dense(a), Registers::Sparse(b)) => {
                for &e in b {
                    let r = &mut a[(e >> 8) as usize];
                    *r = (*r).max(e as u8);
                }
            }
            (Registers::Sparse(_), Registers::Dense(_)) => {
                self.densify();
                self.merge(other);
            }
            (Registers::Sparse(a), Registers::Sparse(b)) => {
                let merged = merge_sparse(a, b);
                *a = merged;
                if a.len() > limit {
                    self.densify();
                }
            }
        }
    }

    fn sparse_limit(&self) -> usize {
        (1usize << self.p) / 4
    }

    fn set(&mut self, index: u32, rank: u8) {
        let limit = self.sparse_limit();
        match &mut self.regs {
            Registers::Dense(rs) => {
                let r = &mut rs[index as usize];
                *r = (*r).max(rank);
            }
            Registers::Sparse(es) => match es.binary_search_by_key(&index, |&e| e >> 8) {
                Ok(i) => {
                    if rank > es[i] as u8 {
                        es[i] = index << 8 | rank as u32;
                    }
                }
                Err(i) => {
                    es.insert(i, index << 8 | rank as u32);
                    if es.len() > limit {
                        self.densify();
                    }
                }
            },
        }
    }

    fn densify(&mut self) {
        if let Registers::Sparse(es) = &self.regs {
            let mut rs = vec![0u8; 1 << self.p];
            for &e in es {
                rs[(e >> 8) as usize] = e as u8;
            }
            self.regs = Registers::Dense(rs);
        }
    }

    /// Non-zero registers as (index, rank).
    fn nonzero(&self) -> Vec<(u32, u8)> {
        match &self.regs {
            Registers::Sparse(es) => es.iter().map(|&e| (e >> 8, e as u8)).collect(),
            Registers::Dense(rs) => rs
                .iter()
                .enumerate()
                .filter(|(_, r)| **r != 0)
                .map(|(i, &r)| (i as u32, r))
                .collect(),
        }
    }

    /// The same sketch at a lower precision `p`.
    fn reduced(&self, p: u8) -> Self {
        let d = (self.p - p) as u32;
        let mut out = HyperLogLog::new(p);
        for (index, rank) in self.nonzero() {
            let low = index & ((1 << d) - 1);
            let r = if low != 0 {
                low.leading_zeros() - (32 - d) + 1
            } else {
                d + rank as u32
            };
            out.set(index >> d, r as u8);
        }
        out
    }
}

fn merge_sparse(a: &[u32], b: &[u32]) -> Vec<u32> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        let (x, y) = (a[i], b[j]);
        match (x >> 8).cmp(&(y >> 8)) {
            std::cmp::Ordering::Less => {
                out.push(x);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(y);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                out.push(x.max(y));
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

fn sigma(mut x: f64) -> f64 {
    if x == 1.0 {
        return f64::INFINITY;
    }
    let mut y = 1.0;
    let mut z = x;
    loop {
        x *= x;
        let prev = z;
        z += x * y;
        y += y;
        if z == prev {
            return z;
        }
    }
}

fn tau(mut x: f64) -> f64 {
    if x == 0.0 || x == 1.0 {
        return 0.0;
    }
    let mut y = 1.0;
    let mut z = 1.0 - x;
    loop {
        x = x.sqrt();
        let prev = z;
        y *= 0.5;
        z -= (1.0 - x) * (1.0 - x) * y;
        if z == prev {
            return z / 3.0;
        }
    }
}

const P1: u64 = 0x9E37_79B1_85EB_CA87;
const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
const P3: u64 = 0x1656_67B1_9E37_79F9;
const P4: u64 = 0x85EB_CA77_C2B2_AE63;
const P5: u64 = 0x27D4_EB2F_1656_67C5;

/// The 64-bit hash the sketches use: XXH64 with seed 0.
///
/// It is part of the state format: sketches persisted in states are only
/// mergeable with sketches built by the same hash, so this function will
/// never change (it is tested against XXH64's reference outputs).
pub fn hash64(bytes: &[u8]) -> u64 {
    fn round(acc: u64, lane: u64) -> u64 {
        acc.wrapping_add(lane.wrapping_mul(P2))
            .rotate_left(31)
            .wrapping_mul(P1)
    }
    fn merge_round(acc: u64, v: u64) -> u64 {
        (acc ^ round(0, v)).wrapping_mul(P1).wrapping_add(P4)
    }
    fn u64_at(b: &[u8]) -> u64 {
        u64::from_le_bytes(b[..8].try_into().expect("8 bytes"))
    }

    let mut rest = bytes;
    let mut h = if bytes.len() >= 32 {
        let mut v = [P1.wrapping_add(P2), P2, 0, 0u64.wrapping_sub(P1)];
        while rest.len() >= 32 {
            for (k, lane) in v.iter_mut().enumerate() {
                *lane = round(*lane, u64_at(&rest[8 * k..]));
            }
            rest = &rest[32..];
        }
        let mut h = v[0]
            .rotate_left(1)
            .wrapping_add(v[1].rotate_left(7))
            .wrapping_add(v[2].rotate_left(12))
            .wrapping_add(v[3].rotate_left(18));
        for lane in v {
            h = merge_round(h, lane);
        }
        h
    } else {
        P5
    };
    h = h.wrapping_add(bytes.len() as u64);
    while rest.len() >= 8 {
        h ^= round(0, u64_at(rest));
        h = h.rotate_left(27).wrapping_mul(P1).wrapping_add(P4);
        rest = &rest[8..];
    }
    if rest.len() >= 4 {
        let w = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as u64;
        h ^= w.wrapping_mul(P1);
        h = h.rotate_left(23).wrapping_mul(P2).wrapping_add(P3);
        rest = &rest[4..];
    }
    for &b in rest {
        h ^= (b as u64).wrapping_mul(P5);
        h = h.rotate_left(11).wrapping_mul(P1);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(P2);
    h ^= h >> 29;
    h = h.wrapping_mul(P3);
    h ^ (h >> 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(p: u8, range: std::ops::Range<u64>) -> HyperLogLog {
        let mut h = HyperLogLog::new(p);
        for i in range {
            h.insert_str(&format!("user-{i}"));
        }
        h
    }

    #[test]
    fn hash64_is_xxh64() {
        let hundred: Vec<u8> = (0..100).collect();
        let cases: [(&[u8], u64); 6] = [
            (b"", 0xef46db3751d8e999),
            (b"a", 0xd24ec4f1a98c6e5b),
            (b"abc", 0x44bc2cf5ad770999),
            (b"hello world", 0x45ab6734b21e6968),
            (b"0123456789abcdef0123456789abcdefXYZ", 0x654f6a2b39e4d8c1),
            (&hundred, 0x6ac1e58032166597),
        ];
        for (input, want) in cases {
            assert_eq!(hash64(input), want, "input {input:?}");
        }
    }

    #[test]
    fn error_within_three_sigma() {
        let sigma = 1.04 / 4096f64.sqrt();
        for n in [1_000u64, 10_000, 100_000, 1_000_000] {
            let est = filled(12, 0..n).count() as f64;
            let err = (est - n as f64).abs() / n as f64;
            assert!(err < 3.0 * sigma, "n={n} estimate={est} error={err:.4}");
        }
    }

    #[test]
    fn small_counts_are_nearly_exact() {
        let h = HyperLogLog::default();
        assert_eq!(h.count(), 0);
        assert!(h.is_empty());
        for n in [1u64, 2, 10, 100, 300] {
            let est = filled(12, 0..n).count();
            assert!(est.abs_diff(n) <= n / 100, "n={n} estimate={est}");
        }
        let mut dup = HyperLogLog::default();
        for _ in 0..1000 {
            dup.insert(b"same");
        }
        assert_eq!(dup.count(), 1);
    }

    #[test]
    fn merge_equals_union() {
        for (a, b) in [
            (0..50, 30..90),
            (0..3000, 1000..20_000),
            (0..20_000, 100..200),
        ] {
            let union = filled(12, a.start..a.end.max(b.end));
            let mut x = filled(12, a.clone());
            x.merge(&filled(12, b.clone()));
            assert_eq!(x, union);
            let mut y = filled(12, b);
            y.merge(&filled(12, a));
            assert_eq!(y, union);
        }
        let mut e = HyperLogLog::default();
        e.merge(&HyperLogLog::default());
        assert!(e.is_empty());
    }

    #[test]
    fn merge_across_precisions_reduces() {
        let low = filled(10, 0..5000);
        let mut high = filled(14, 2000..8000);
        high.merge(&low);
        assert_eq!(high.precision(), 10);
        assert_eq!(high, filled(10, 0..8000));
        let mut low2 = filled(10, 0..5000);
        low2.merge(&filled(14, 2000..8000));
        assert_eq!(low2, filled(10, 0..8000));
    }

    #[test]
    fn sparse_until_dense_is_smaller() {
        let mut h = HyperLogLog::default();
        assert_eq!(postcard::to_allocvec(&h).unwrap().len(), 3);
        for i in 0..200 {
            h.insert_str(&format!("u{i}"));
        }
        assert!(matches!(h.regs, Registers::Sparse(_)));
        assert!(postcard::to_allocvec(&h).unwrap().len() < 1000);
        for i in 200..5000 {
            h.insert_str(&format!("u{i}"));
        }
        assert!(matches!(h.regs, Registers::Dense(_)));
        let bytes = postcard::to_allocvec(&h).unwrap();
        assert!(bytes.len() <= 4096 + 8, "{}", bytes.len());
        let err = (h.count() as f64 - 5000.0).abs() / 5000.0;
        assert!(err < 0.05, "{err}");
    }

    #[test]
    fn serde_roundtrip() {
        for h in [
            HyperLogLog::default(),
            filled(12, 0..300),
            filled(12, 0..50_000),
            filled(4, 0..10),
        ] {
            let bytes = postcard::to_allocvec(&h).unwrap();
            let back: HyperLogLog = postcard::from_bytes(&bytes).unwrap();
            assert_eq!(back, h);
            assert_eq!(back.count(), h.count());
        }
    }

    #[test]
    fn corrupt_state_is_rejected() {
        let mut bytes = postcard::to_allocvec(&filled(12, 0..10)).unwrap();
        bytes[0] = 30;
        assert!(postcard::from_bytes::<HyperLogLog>(&bytes).is_err());
    }
}

//! DDSketch quantiles (Masson, Rim and Lee, VLDB 2019).
//!
//! Latency percentiles need a relative guarantee (1 % of 3 ms and 1 % of 3 s),
//! a bounded size whatever the number of samples, and an exact merge for
//! session windows and pre-aggregation. DDSketch gives all three with
//! logarithmic buckets: a value `x > 0` goes to bucket `ceil(log_gamma(x))`
//! with `gamma = (1 + a) / (1 - a)`, and every value of a bucket lies within a
//! relative distance `a` of the bucket's representative.

use serde::{Deserialize, Serialize};

/// Default relative accuracy: 1 %.
pub const DEFAULT_RELATIVE_ACCURACY: f64 = 0.01;
/// Buckets kept per sign; beyond, the lowest buckets are collapsed.
pub const MAX_BUCKETS: usize = 2048;
/// Values of smaller magnitude are counted as zero.
pub const MIN_INDEXABLE: f64 = 1e-9;

/// A quantile sketch with relative accuracy `a` (default 1 %).
///
/// Guarantee: for `q` whose exact (lower) quantile `x` is a positive value of
/// magnitude at least `MIN_INDEXABLE` (1e-9), `quantile(q)` is within `a * x` of
/// `x`; the same holds for negative values. Zero and values closer to zero
/// than that are counted as exactly zero. NaN and infinities are
/// ignored. `count`, `sum`, `min` and `max` are exact.
///
/// Size: each sign keeps at most `MAX_BUCKETS` (2048) consecutive buckets (a range
/// of `gamma^2048`, about 1 : 10^17 at 1 %). When values span more, the
/// buckets of the smallest values (the most negative, for negative values) are
/// folded into the lowest kept one: only the quantiles that fall in that
/// collapsed range lose the guarantee, the higher ones keep it. A sketch of
/// latencies typically holds a few hundred buckets of one-byte counts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Raw")]
pub struct DdSketch {
    alpha: f64,
    pos: Store,
    /// Negative values, keyed by `-index(|x|)` so keys ascend with the value.
    neg: Store,
    zero: u64,
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Store {
    offset: i32,
    counts: Vec<u64>,
}

#[derive(Deserialize)]
struct Raw {
    alpha: f64,
    pos: Store,
    neg: Store,
    zero: u64,
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
}

impl TryFrom<Raw> for DdSketch {
    type Error = String;

    fn try_from(r: Raw) -> Result<Self, String> {
        if crate::layout::tracing() {
            return Ok(DdSketch::default());
        }
        let stored = r
            .pos
            .total()
            .checked_add(r.neg.total())
            .and_then(|t| t.checked_add(r.zero));
        if !valid_accuracy(r.alpha)
            || r.pos.counts.len() > MAX_BUCKETS
            || r.neg.counts.len() > MAX_BUCKETS
            || stored != Some(r.count)
        {
            return Err("corrupt DdSketch".into());
        }
        Ok(DdSketch {
            alpha: r.alpha,
            pos: r.pos,
            neg: r.neg,
            zero: r.zero,
            count: r.count,
            sum: r.sum,
            min: r.min,
            max: r.max,
        })
    }
}

fn valid_accuracy(a: f64) -> bool {
    (1e-6..1.0).contains(&a)
}

impl Store {
    fn total(&self) -> u64 {
        self.counts.iter().fold(0u64, |t, &c| t.saturating_add(c))
    }

    fn high(&self) -> i32 {
        self.offset + self.counts.len() as i32 - 1
    }

    /// Make room for keys `lo..=hi`; returns the lowest key kept (lower keys
    /// fold into it).
    fn extend(&mut self, lo: i32, hi: i32) -> i32 {
        let max = MAX_BUCKETS as i32;
        if self.counts.is_empty() {
            let lo = lo.max(hi - max + 1);
            self.offset = lo;
            self.counts = vec![0; (hi - lo + 1) as usize];
            return lo;
        }
        let new_hi = hi.max(self.high());
        let new_lo = lo.min(self.offset).max(new_hi - max + 1);
        if new_lo == self.offset {
            self.counts.resize((new_hi - new_lo + 1) as usize, 0);
            return new_lo;
        }
        let mut counts = vec![0; (new_hi - new_lo + 1) as usize];
        for (j, &c) in self.counts.iter().enumerate() {
            let k = (self.offset + j as i32).max(new_lo);
            counts[(k - new_lo) as usize] += c;
        }
        self.offset = new_lo;
        self.counts = counts;
        new_lo
    }

    fn add(&mut self, key: i32, n: u64) {
        let lowest = self.extend(key, key);
        self.counts[(key.max(lowest) - self.offset) as usize] += n;
    }

    fn merge(&mut self, other: &Store) {
        if other.counts.is_empty() {
            return;
        }
        let lowest = self.extend(other.offset, other.high());
        for (j, &c) in other.counts.iter().enumerate() {
            let k = (other.offset + j as i32).max(lowest);
            self.counts[(k - self.offset) as usize] += c;
        }
    }

    fn buckets(&self) -> impl Iterator<Item = (i32, u64)> + '_ {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c != 0)
            .map(|(j, &c)| (self.offset + j as i32, c))
    }
}

impl Default for DdSketch {
    fn default() -> Self {
        Self::new(DEFAULT_RELATIVE_ACCURACY)
    }
}

impl DdSketch {
    /// An empty sketch with the given relative accuracy (`0.01` = 1 %).
    ///
    /// # Panics
    /// If `relative_accuracy` is outside `[1e-6, 1)`.
    pub fn new(relative_accuracy: f64) -> Self {
        assert!(
            valid_accuracy(relative_accuracy),
            "relative accuracy {relative_accuracy} out of [1e-6, 1)"
        );
        DdSketch {
            alpha: relative_accuracy,
            pos: Store::default(),
            neg: Store::default(),
            zero: 0,
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }

    /// The relative accuracy `a`.
    pub fn relative_accuracy(&self) -> f64 {
        self.alpha
    }

    fn ln_gamma(&self) -> f64 {
        (2.0 * self.alpha / (1.0 - self.alpha)).ln_1p()
    }

    fn index(&self, magnitude: f64) -> i32 {
        (magnitude.ln() / self.ln_gamma()).ceil() as i32
    }

    fn value(&self, index: i32) -> f64 {
        let ln_gamma = self.ln_gamma();
        (index as f64 * ln_gamma).exp() * 2.0 / (1.0 + ln_gamma.exp())
    }

    /// Add one value (NaN and infinities are ignored).
    pub fn add(&mut self, x: f64) {
        self.add_n(x, 1);
    }

    /// Add `n` occurrences of a value.
    pub fn add_n(&mut self, x: f64, n: u64) {
        if n == 0 || !x.is_finite() {
            return;
        }
        self.count += n;
        self.sum += x * n as f64;
        self.min = self.min.min(x);
        self.max = self.max.max(x);
        self.bin(x, n);
    }

    fn bin(&mut self, x: f64, n: u64) {
        if x.abs() < MIN_INDEXABLE {
            self.zero += n;
        } else if x > 0.0 {
            let i = self.index(x);
            self.pos.add(i, n);
        } else {
            let i = self.index(-x);
            self.neg.add(-i, n);
        }
    }

    /// The `q`-quantile (`0 <= q <= 1`), within the relative accuracy of the
    /// exact lower quantile (the sample of rank `floor(q * (count - 1))`).
    /// `None` when empty or `q` is out of range.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        let rank = q * (self.count - 1) as f64;
        let mut seen = 0u64;
        let mut found = None;
        for (k, c) in self.neg.buckets() {
            seen += c;
            if seen as f64 > rank {
                found = Some(-self.value(-k));
                break;
            }
        }
        if found.is_none() {
            seen += self.zero;
            if seen as f64 > rank {
                found = Some(0.0);
            }
        }
        if found.is_none() {
            found = self.pos.buckets().find_map(|(k, c)| {
                seen += c;
                (seen as f64 > rank).then(|| self.value(k))
            });
        }
        Some(found.unwrap_or(self.max).clamp(self.min, self.max))
    }

    /// Fold `other` in. With equal accuracies the result is exactly the
    /// sketch of both inputs; otherwise `other`'s buckets are re-binned by
    /// their representative values (errors add up).
    pub fn merge(&mut self, other: &Self) {
        if other.count == 0 {
            return;
        }
        if self.alpha == other.alpha {
            self.pos.merge(&other.pos);
            self.neg.merge(&other.neg);
            self.zero += other.zero;
        } else {
            for (k, c) in other.pos.buckets() {
                self.bin(other.value(k), c);
            }
            for (k, c) in other.neg.buckets() {
                self.bin(-other.value(-k), c);
            }
            self.zero += other.zero;
        }
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// Number of values added.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Whether no value was added.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Sum of the values (0 when empty).
    pub fn sum(&self) -> f64 {
        self.sum
    }

    /// Smallest value.
    pub fn min(&self) -> Option<f64> {
        (self.count > 0).then_some(self.min)
    }

    /// Largest value.
    pub fn max(&self) -> Option<f64> {
        (self.count > 0).then_some(self.max)
    }

    /// Arithmetic mean.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic uniform numbers in `[0, 1)` (Knuth's MMIX LCG).
    fn lcg(seed: u64) -> impl Iterator<Item = f64> {
        let mut s = seed;
        std::iter::repeat_with(move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 11) as f64 / (1u64 << 53) as f64
        })
    }

    fn exact(sorted: &[f64], q: f64) -> f64 {
        sorted[(q * (sorted.len() - 1) as f64).floor() as usize]
    }

    const QS: [f64; 12] = [
        0.0, 0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0,
    ];

    fn check(data: &[f64], a: f64) {
        let mut s = DdSketch::new(a);
        for &x in data {
            s.add(x);
        }
        let mut sorted = data.to_vec();
        sorted.sort_by(f64::total_cmp);
        for q in QS {
            let want = exact(&sorted, q);
            let got = s.quantile(q).unwrap();
            let err = if want == 0.0 {
                got.abs()
            } else {
                ((got - want) / want).abs()
            };
            assert!(
                err <= a * (1.0 + 1e-9),
                "q={q} want={want} got={got} err={err}"
            );
        }
        assert_eq!(s.count(), data.len() as u64);
        assert_eq!(s.min(), sorted.first().copied());
        assert_eq!(s.max(), sorted.last().copied());
    }

    #[test]
    fn quantiles_within_relative_accuracy() {
        let latencies: Vec<f64> = lcg(1).take(100_000).map(|u| (8.0 * u).exp()).collect();
        check(&latencies, 0.01);
        check(&latencies, 0.02);
        let narrow: Vec<f64> = lcg(6).take(50_000).map(|u| 5.0 + 20.0 * u).collect();
        check(&narrow, 0.001);
        let pareto: Vec<f64> = lcg(2)
            .take(50_000)
            .map(|u| 10.0 / (1.0 - u).powf(0.7))
            .collect();
        check(&pareto, 0.01);
        check(&[42.0], 0.01);
    }

    #[test]
    fn negatives_and_zeros() {
        let data: Vec<f64> = lcg(3)
            .take(20_000)
            .enumerate()
            .map(|(i, u)| if i % 10 == 0 { 0.0 } else { 1000.0 * (u - 0.3) })
            .collect();
        check(&data, 0.01);
        let mut s = DdSketch::default();
        s.add(-5.0);
        s.add(f64::NAN);
        s.add(f64::INFINITY);
        s.add(1e-12);
        assert_eq!(s.count(), 2);
        assert_eq!(s.quantile(0.0), Some(-5.0));
        assert_eq!(s.quantile(1.0), Some(0.0), "tiny values count as zero");
    }

    #[test]
    fn empty_and_stats() {
        let mut s = DdSketch::default();
        assert_eq!(s.quantile(0.5), None);
        assert_eq!(
            (s.min(), s.max(), s.mean(), s.sum()),
            (None, None, None, 0.0)
        );
        s.add_n(10.0, 3);
        s.add(40.0);
        s.add_n(99.0, 0);
        assert_eq!(s.count(), 4);
        assert_eq!(s.sum(), 70.0);
        assert_eq!(s.mean(), Some(17.5));
        assert_eq!(s.quantile(2.0), None);
        assert!((s.quantile(0.5).unwrap() - 10.0).abs() <= 0.1);
    }

    #[test]
    fn merge_equals_single_sketch() {
        let data: Vec<f64> = lcg(4)
            .take(30_000)
            .map(|u| (1.0 + 5000.0 * u * u).round())
            .collect();
        let mut all = DdSketch::default();
        data.iter().for_each(|&x| all.add(x));
        let (a, b) = data.split_at(12_345);
        let mut sa = DdSketch::default();
        a.iter().for_each(|&x| sa.add(x));
        let mut sb = DdSketch::default();
        b.iter().for_each(|&x| sb.add(x));
        sa.merge(&sb);
        assert_eq!(sa, all);
        sa.merge(&DdSketch::default());
        assert_eq!(sa, all);
        let mut empty = DdSketch::default();
        empty.merge(&all);
        assert_eq!(empty, all);
    }

    #[test]
    fn merge_across_accuracies() {
        let mut a = DdSketch::new(0.01);
        let mut b = DdSketch::new(0.02);
        (1..=1000).for_each(|i| a.add(i as f64));
        (1001..=2000).for_each(|i| b.add(i as f64));
        a.merge(&b);
        assert_eq!(a.count(), 2000);
        let p50 = a.quantile(0.5).unwrap();
        assert!((p50 - 1000.0).abs() / 1000.0 <= 0.031, "{p50}");
    }

    #[test]
    fn collapses_lowest_buckets() {
        let mut s = DdSketch::default();
        let mut x = 1e-8;
        let mut values = Vec::new();
        while x < 1e290 {
            s.add(x);
            values.push(x);
            x *= 1.5;
        }
        assert!(s.pos.counts.len() <= MAX_BUCKETS);
        for q in [0.99, 0.995, 1.0] {
            let want = exact(&values, q);
            let got = s.quantile(q).unwrap();
            assert!(
                ((got - want) / want).abs() <= 0.01,
                "q={q} want={want} got={got}"
            );
        }
        let mut neg = DdSketch::default();
        let mut negatives: Vec<f64> = values.iter().map(|v| -v).collect();
        negatives.iter().for_each(|&v| neg.add(v));
        negatives.sort_by(f64::total_cmp);
        assert!(neg.neg.counts.len() <= MAX_BUCKETS);
        for q in [0.99, 0.995, 1.0] {
            let want = exact(&negatives, q);
            let got = neg.quantile(q).unwrap();
            assert!(
                ((got - want) / want).abs() <= 0.01,
                "q={q} want={want} got={got}"
            );
        }
    }

    #[test]
    fn serde_roundtrip() {
        let mut s = DdSketch::default();
        lcg(5).take(1000).for_each(|u| s.add(200.0 * u - 20.0));
        for sk in [DdSketch::default(), s] {
            let bytes = postcard::to_allocvec(&sk).unwrap();
            let back: DdSketch = postcard::from_bytes(&bytes).unwrap();
            assert_eq!(back, sk);
        }
        let mut bad = postcard::to_allocvec(&DdSketch::default()).unwrap();
        bad[..8].copy_from_slice(&2.0f64.to_le_bytes());
        assert!(postcard::from_bytes::<DdSketch>(&bad).is_err());
    }
}

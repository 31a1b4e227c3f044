// Client-side aggregation of many-keyed metrics (one value per session).
//
// Samples fall into fixed buckets by time; each bucket keeps count, sum,
// min, max and a bounded reservoir sample. The series reports, at each bucket,
// the mean and (weighted, from the reservoirs) median of the samples in the
// trailing `lookbackMs` — e.g. "mean/median session duration over the last
// minute". Memory: `capacity` buckets × `reservoir` numbers.

import { RingBuffer } from './ringBuffer';
import type { Millis } from './types';

export interface TrailingStats {
  /** Bucket end time. */
  t: Millis;
  count: number;
  mean: number;
  median: number;
  min: number;
  max: number;
}

interface Bucket {
  t: Millis;
  count: number;
  sum: number;
  min: number;
  max: number;
  samples: number[];
  /** Cached trailing stats ending at this bucket; null when stale. */
  trailing: TrailingStats | null;
}

export interface SampleAggregatorOptions {
  bucketMs: number;
  lookbackMs: number;
  /** Maximum number of buckets kept. */
  capacity: number;
  /** Reservoir size per bucket. */
  reservoir: number;
  /** Random source for reservoir sampling, [0, 1). */
  random: () => number;
}

export const DEFAULT_SAMPLE_AGGREGATOR: SampleAggregatorOptions = {
  bucketMs: 5000,
  lookbackMs: 60_000,
  capacity: 240,
  reservoir: 256,
  random: Math.random,
};

export class SampleAggregator {
  readonly options: SampleAggregatorOptions;
  private buckets: RingBuffer<Bucket>;
  total = 0;

  constructor(options: Partial<SampleAggregatorOptions> = {}) {
    this.options = { ...DEFAULT_SAMPLE_AGGREGATOR, ...options };
    this.buckets = new RingBuffer<Bucket>(this.options.capacity);
  }

  /** Bucket end time for a sample at `t` (buckets are `(end - bucketMs, end]`). */
  bucketOf(t: Millis): Millis {
    const b = this.options.bucketMs;
    return Math.ceil(t / b) * b;
  }

  add(t: Millis, value: number): void {
    if (!Number.isFinite(value) || !Number.isFinite(t)) return;
    const bt = this.bucketOf(t);
    let bucket: Bucket | undefined;
    for (let i = this.buckets.size - 1; i >= 0; i--) {
      const b = this.buckets.at(i) as Bucket;
      if (b.t === bt) {
        bucket = b;
        break;
      }
      if (b.t < bt) break;
    }
    if (!bucket) {
      bucket = { t: bt, count: 0, sum: 0, min: value, max: value, samples: [], trailing: null };
      if (!this.buckets.insertSorted(bucket, (b) => b.t)) return;
    }
    this.total++;
    bucket.count++;
    bucket.sum += value;
    if (value < bucket.min) bucket.min = value;
    if (value > bucket.max) bucket.max = value;
    const r = this.options.reservoir;
    if (bucket.samples.length < r) {
      bucket.samples.push(value);
    } else {
      // Algorithm R: keep each of the `count` samples with probability r/count.
      const j = Math.floor(this.options.random() * bucket.count);
      if (j < r) bucket.samples[j] = value;
    }
    this.invalidate(bt);
  }

  /** Invalidates the trailing stats of every bucket whose lookback covers bucket `bt`. */
  private invalidate(bt: Millis): void {
    for (let i = this.buckets.size - 1; i >= 0; i--) {
      const b = this.buckets.at(i) as Bucket;
      if (b.t < bt) break;
      if (b.t - this.options.lookbackMs < bt) b.trailing = null;
    }
  }

  /**
   * A sample at `t` changed from `previous` to `value` (a re-fired window):
   * the bucket's count stays, its sum moves by the difference, and the
   * reservoir swaps one copy of `previous` if it holds one. Min and max can
   * only widen. Without the bucket (evicted), the value is added.
   */
  replace(t: Millis, previous: number, value: number): void {
    if (!Number.isFinite(value) || !Number.isFinite(previous) || !Number.isFinite(t)) return;
    const bt = this.bucketOf(t);
    let bucket: Bucket | undefined;
    for (let i = this.buckets.size - 1; i >= 0; i--) {
      const b = this.buckets.at(i) as Bucket;
      if (b.t === bt) bucket = b;
      if (b.t <= bt) break;
    }
    if (!bucket) {
      this.add(t, value);
      return;
    }
    bucket.sum += value - previous;
    if (value < bucket.min) bucket.min = value;
    if (value > bucket.max) bucket.max = value;
    const j = bucket.samples.indexOf(previous);
    if (j >= 0) bucket.samples[j] = value;
    this.invalidate(bt);
  }

  get bucketCount(): number {
    return this.buckets.size;
  }

  /** Trailing stats at every bucket, oldest first (cached; only stale ones recomputed). */
  series(): TrailingStats[] {
    const all = this.buckets.toArray();
    const out: TrailingStats[] = [];
    let lo = 0;
    for (let i = 0; i < all.length; i++) {
      const b = all[i] as Bucket;
      while (lo < i && (all[lo] as Bucket).t <= b.t - this.options.lookbackMs) lo++;
      if (!b.trailing) b.trailing = computeStats(all.slice(lo, i + 1), b.t);
      out.push(b.trailing);
    }
    return out;
  }

  latest(): TrailingStats | null {
    const s = this.series();
    return s.length > 0 ? (s[s.length - 1] as TrailingStats) : null;
  }
}

function computeStats(buckets: Bucket[], t: Millis): TrailingStats {
  let count = 0;
  let sum = 0;
  let min = Infinity;
  let max = -Infinity;
  const weighted: [number, number][] = [];
  for (const b of buckets) {
    count += b.count;
    sum += b.sum;
    if (b.min < min) min = b.min;
    if (b.max > max) max = b.max;
    const w = b.samples.length > 0 ? b.count / b.samples.length : 0;
    for (const v of b.samples) weighted.push([v, w]);
  }
  return { t, count, mean: count > 0 ? sum / count : NaN, median: weightedMedian(weighted), min, max };
}

/** Weighted median of `[value, weight]` pairs (lower median on an exact tie, averaged). */
export function weightedMedian(pairs: [number, number][]): number {
  if (pairs.length === 0) return NaN;
  const sorted = [...pairs].sort((a, b) => a[0] - b[0]);
  let total = 0;
  for (const [, w] of sorted) total += w;
  const half = total / 2;
  let acc = 0;
  for (let i = 0; i < sorted.length; i++) {
    const [v, w] = sorted[i] as [number, number];
    acc += w;
    if (acc > half + 1e-9) return v;
    if (Math.abs(acc - half) <= 1e-9) {
      const next = sorted[i + 1];
      return next ? (v + next[0]) / 2 : v;
    }
  }
  return (sorted[sorted.length - 1] as [number, number])[0];
}

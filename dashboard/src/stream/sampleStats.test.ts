import { describe, expect, it } from 'vitest';
import { SampleAggregator, weightedMedian } from './sampleStats';

describe('weightedMedian', () => {
  it('computes plain and weighted medians', () => {
    expect(weightedMedian([])).toBeNaN();
    expect(weightedMedian([[5, 1]])).toBe(5);
    expect(weightedMedian([[1, 1], [3, 1], [2, 1]])).toBe(2);
    expect(weightedMedian([[1, 1], [2, 1], [3, 1], [4, 1]])).toBe(2.5);
    expect(weightedMedian([[1, 1], [10, 5]])).toBe(10);
  });
});

describe('SampleAggregator', () => {
  it('reports trailing mean/median per bucket over the lookback', () => {
    const a = new SampleAggregator({ bucketMs: 5000, lookbackMs: 10_000 });
    a.add(1000, 10); // bucket 5000
    a.add(6000, 20); // bucket 10000
    a.add(11000, 30); // bucket 15000
    a.add(12000, 90); // bucket 15000
    const s = a.series();
    expect(s.map((x) => x.t)).toEqual([5000, 10000, 15000]);
    expect(s[0]).toMatchObject({ count: 1, mean: 10, median: 10 });
    expect(s[1]).toMatchObject({ count: 2, mean: 15, median: 15 });
    // bucket 15000 looks back over (5000, 15000]: samples 20, 30, 90
    expect(s[2]).toMatchObject({ count: 3, mean: 140 / 3, median: 30, min: 20, max: 90 });
  });

  it('recomputes cached stats when a late sample arrives', () => {
    const a = new SampleAggregator({ bucketMs: 5000, lookbackMs: 10_000 });
    a.add(6000, 20);
    a.add(11000, 40);
    expect(a.latest()!.mean).toBe(30);
    a.add(7000, 60); // late, into bucket 10000: affects 10000 and 15000
    expect(a.series().map((x) => x.mean)).toEqual([40, 40]);
  });

  it('bounds buckets and reservoir size', () => {
    let seed = 1;
    const random = () => ((seed = (seed * 16807) % 2147483647) / 2147483647);
    const a = new SampleAggregator({ bucketMs: 1000, lookbackMs: 5000, capacity: 10, reservoir: 16, random });
    for (let i = 0; i < 100_000; i++) a.add(i, i % 100);
    expect(a.bucketCount).toBe(10);
    const last = a.latest()!;
    // buckets (95000, 100000]: t = 95001 … 99999
    expect(last.count).toBe(4999);
    expect(last.mean).toBeCloseTo(49.5, 0);
    expect(last.median).toBeGreaterThan(25);
    expect(last.median).toBeLessThan(75);
  });

  it('ignores non-finite input', () => {
    const a = new SampleAggregator();
    a.add(1, NaN);
    a.add(NaN, 1);
    expect(a.total).toBe(0);
    expect(a.latest()).toBeNull();
  });
});

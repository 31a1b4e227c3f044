import { describe, expect, it } from 'vitest';
import type { MetricMessage } from './types';
import { topKeys, WindowSeries } from './windowSeries';

const m = (key: string, i: number, value: number): MetricMessage => ({
  type: 'metric',
  plugin: 'page-views',
  name: 'page_views',
  key,
  window_start: i * 5000,
  window_end: (i + 1) * 5000,
  fields: { value },
  multi: false,
});

describe('WindowSeries', () => {
  it('reports how each window was added', () => {
    const s = new WindowSeries({ capacity: 3 });
    expect(s.add(m('/a', 1, 1))).toBe('appended');
    expect(s.add(m('/b', 1, 1))).toBe('updated');
    expect(s.add(m('/a', 3, 1))).toBe('appended');
    expect(s.add(m('/a', 2, 1))).toBe('inserted');
    expect(s.add(m('/a', 0, 1))).toBe('dropped'); // full, older than everything
    expect(s.points.toArray().map((p) => p.end)).toEqual([10000, 15000, 20000]);
  });

  it('prunes windows older than a time', () => {
    const s = new WindowSeries();
    for (let i = 0; i < 10; i++) s.add(m('/a', i, i));
    s.pruneBefore(30000);
    expect(s.points.first()!.end).toBe(30000);
  });

  it('stops keeping per-key values past maxKeysPerWindow', () => {
    const s = new WindowSeries({ maxKeysPerWindow: 2 });
    s.add(m('/a', 0, 1));
    s.add(m('/b', 0, 1));
    s.add(m('/c', 0, 1));
    const p = s.last()!;
    expect(p.keys).toBeNull();
    expect(p.fields.value).toBe(3);
    expect(p.keyCount).toBe(3);
  });
});

describe('topKeys', () => {
  it('ranks keys over the newest windows with per-second rates', () => {
    const s = new WindowSeries();
    s.add(m('/old', 0, 1000)); // outside the 2 newest windows
    s.add(m('/home', 1, 10));
    s.add(m('/cart', 1, 30));
    s.add(m('/home', 2, 40));
    s.add(m('/about', 2, 5));
    expect(topKeys(s, 2, 2)).toEqual([
      { key: '/home', total: 50, perSec: 5 },
      { key: '/cart', total: 30, perSec: 3 },
    ]);
    expect(topKeys(s, 2, 10).map((k) => k.key)).toEqual(['/home', '/cart', '/about']);
  });

  it('is empty without data', () => {
    expect(topKeys(new WindowSeries(), 12, 10)).toEqual([]);
  });
});

import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { DashboardStore } from './store';
import { alignSeries } from './view';

const T0 = 1_764_000_000_000;

const pv = (key: string, i: number, value: number) =>
  JSON.stringify({ type: 'metric', plugin: 'page-views', name: 'page_views', key, window_start: T0 + i * 5000, window_end: T0 + (i + 1) * 5000, value });

describe('DashboardStore', () => {
  beforeEach(() => {
    vi.useFakeTimers();
    vi.setSystemTime(T0);
  });
  afterEach(() => vi.useRealTimers());

  it('batches notifications and exposes chart data', () => {
    const store = new DashboardStore({ flushMs: 250 });
    const listener = vi.fn();
    store.subscribe(listener);
    store.ingest(pv('/a', 0, 10));
    store.ingest(pv('/b', 0, 15));
    store.ingest(pv('/a', 1, 20));
    expect(listener).not.toHaveBeenCalled();
    vi.advanceTimersByTime(250);
    expect(listener).toHaveBeenCalledTimes(1);
    const { view } = store.getSnapshot();
    expect(view.charts.pageViews.points).toBe(2);
    expect(view.charts.pageViews.ys[0]).toEqual([5, 4]);
    expect(view.charts.pageViews.xs).toEqual([(T0 + 5000) / 1000, (T0 + 10000) / 1000]);
    expect(view.stats.pageViewsPerSec).toBe(4);
    expect(view.topPages.map((p) => p.key)).toEqual(['/a', '/b']);
  });

  it('survives malformed and unknown frames and counts them', () => {
    const store = new DashboardStore();
    store.ingest('garbage');
    store.ingest('{"type":"future-thing"}');
    store.ingest(new Uint8Array([1, 2]));
    store.ingest(pv('/a', 0, 1));
    store.flush();
    const { stream, view } = store.getSnapshot();
    expect(stream).toMatchObject({ frames: 4, messages: 1, invalid: 2, ignored: 1, ignoredTypes: ['future-thing'] });
    expect(view.charts.pageViews.points).toBe(1);
  });

  it('ticks so the critical banner expires without traffic', () => {
    const store = new DashboardStore({ tickMs: 1000, view: { criticalWindowMs: 3000 } });
    store.start();
    store.ingest(JSON.stringify({ type: 'alert', id: 'c', rule: 'error-rate-spike', severity: 'critical', key: '', message: 'm', time: T0 }));
    vi.advanceTimersByTime(1000);
    expect(store.getSnapshot().view.alerts.activeCritical).toHaveLength(1);
    vi.advanceTimersByTime(3000);
    expect(store.getSnapshot().view.alerts.activeCritical).toHaveLength(0);
    expect(store.getSnapshot().view.alerts.feed).toHaveLength(1);
    store.stop();
    expect(vi.getTimerCount()).toBe(0);
  });

  it('limits charts to the selected range', () => {
    const store = new DashboardStore();
    for (let i = 0; i < 400; i++) store.ingest(pv('/a', i, 5));
    store.setRange(5 * 60_000);
    expect(store.getSnapshot().view.charts.pageViews.points).toBe(61);
    store.setRange(15 * 60_000);
    expect(store.getSnapshot().view.charts.pageViews.points).toBe(181);
  });
});

describe('alignSeries', () => {
  it('aligns series on a shared x axis with nulls for gaps', () => {
    const d = alignSeries(
      [
        [
          { t: 1000, v: 1 },
          { t: 3000, v: 3 },
        ],
        [{ t: 2000, v: 20 }],
      ],
      3000,
      60_000,
    );
    expect(d.xs).toEqual([1, 2, 3]);
    expect(d.ys).toEqual([
      [1, null, 3],
      [null, 20, null],
    ]);
    expect(d.points).toBe(3);
    expect(d.span).toBe(2);
    expect(d.xRange).toEqual([-57, 3]);
  });
});

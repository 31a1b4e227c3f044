import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { HistorySync, httpHistorySource, type HistorySource } from './history';
import { DashboardStore } from './store';

const T0 = 1_764_000_000_000;

const pvObj = (key: string, i: number, value: number) => ({
  type: 'metric',
  plugin: 'page-views',
  name: 'page_views',
  key,
  window_start: T0 + i * 5000,
  window_end: T0 + (i + 1) * 5000,
  value,
});
const pv = (key: string, i: number, value: number) => JSON.stringify(pvObj(key, i, value));
const critical = (id: string, time: number) => ({ type: 'alert', id, plugin: 'error-rate-spike', rule: 'error-rate-spike', severity: 'critical', key: '', message: 'm', time, value: 0.05 });

/** A source whose answers the test releases by hand (`answer(body, n)`: the n-th request's, default the latest). */
function manualSource(watermark: number | null) {
  const asked: number[] = [];
  const pending: { res: (body: string) => void; rej: (e: Error) => void }[] = [];
  const source: HistorySource = {
    watermark: () => Promise.resolve(watermark),
    history: (since) => {
      asked.push(since);
      return new Promise<string>((res, rej) => pending.push({ res, rej }));
    },
  };
  return {
    source,
    asked,
    answer: (body: string, n = pending.length - 1) => pending[n]!.res(body),
    fail: (e: Error, n = pending.length - 1) => pending[n]!.rej(e),
  };
}

const tick = () => new Promise((r) => setTimeout(r, 0));

describe('DashboardStore with history', () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(T0 + 3_600_000);
  });
  afterEach(() => vi.useRealTimers());

  it('holds live frames during a load and applies them after the history', () => {
    const store = new DashboardStore();
    store.beginHistory();
    // Live: a late update of window 0 arrives while the history is loading.
    store.ingest(pv('/a', 0, 9));
    store.ingest(pv('/a', 2, 4));
    expect(store.getSnapshot().history.state).toBe('loading');
    expect(store.state.counters.metrics).toBe(0);
    // The history was taken before the update: window 0 still at 3.
    store.applyHistory(JSON.stringify([pvObj('/a', 0, 3), pvObj('/a', 1, 5), pvObj('/a', 2, 4)]));
    store.endHistory();
    const { view, history } = store.getSnapshot();
    expect(view.charts.pageViews.ys[0]).toEqual([9 / 5, 1, 4 / 5]);
    expect(history).toMatchObject({ state: 'loaded', outputs: 3, applied: 3 });
    expect(store.state.counters).toMatchObject({ metrics: 4, duplicateMetrics: 1, replacedMetrics: 1 });
  });

  it('alerts from history are as old as they are, so an old critical one raises no banner', () => {
    const store = new DashboardStore({ view: { criticalWindowMs: 5 * 60_000 } });
    store.beginHistory();
    store.applyHistory(JSON.stringify([critical('old', T0), critical('recent', T0 + 19 * 60_000), pvObj('/a', 240, 1)]));
    store.endHistory();
    const { view } = store.getSnapshot();
    expect(view.alerts.feed.map((a) => a.id)).toEqual(['recent', 'old']);
    expect(view.alerts.activeCritical.map((a) => a.id)).toEqual(['recent']);
  });

  it('a failed load releases the live frames', () => {
    const store = new DashboardStore();
    store.beginHistory();
    store.ingest(pv('/a', 0, 5));
    store.historyFailed('HTTP 500');
    store.endHistory();
    expect(store.getSnapshot().history).toMatchObject({ state: 'failed', error: 'HTTP 500' });
    expect(store.getSnapshot().view.charts.pageViews.points).toBe(1);
  });
});

describe('HistorySync', () => {
  it('loads the selected range (plus a minute) before the watermark when the stream opens', async () => {
    const store = new DashboardStore();
    store.setRange(5 * 60_000);
    const m = manualSource(T0 + 600_000);
    const sync = new HistorySync(store, m.source);
    const done = sync.onOpen();
    await tick();
    expect(m.asked).toEqual([T0 + 600_000 - 5 * 60_000 - 60_000]);
    m.answer(JSON.stringify([pvObj('/a', 0, 5), pvObj('/a', 1, 5)]));
    await done;
    expect(store.getSnapshot().view.charts.pageViews.points).toBe(2);
    // A longer range loads again; a shorter one (already loaded) does not.
    store.setRange(30 * 60_000);
    const longer = sync.onRange();
    await tick();
    expect(m.asked[1]).toBe(T0 + 600_000 - 30 * 60_000 - 60_000);
    m.answer('[]');
    await longer;
    store.setRange(10 * 60_000);
    await sync.onRange();
    expect(m.asked).toHaveLength(2);
  });

  it('without a watermark the range ends at the newest output held, else at the clock', async () => {
    const store = new DashboardStore({ now: () => T0 + 42 });
    const m = manualSource(null);
    const sync = new HistorySync(store, m.source, { now: () => T0 + 42 });
    expect(await sync.since()).toBe(T0 + 42 - 10 * 60_000 - 60_000);
    store.ingest(pv('/a', 0, 1));
    expect(await sync.since()).toBe(T0 + 5000 - 10 * 60_000 - 60_000);
  });

  it('a reconnect during a load makes the older answer stale', async () => {
    const store = new DashboardStore();
    const m = manualSource(T0 + 600_000);
    const sync = new HistorySync(store, m.source);
    const first = sync.onOpen();
    await tick();
    const second = sync.onOpen();
    await tick();
    m.answer(JSON.stringify([pvObj('/a', 0, 5)]), 1);
    await second;
    m.answer(JSON.stringify([pvObj('/b', 0, 7)]), 0);
    await first;
    expect(store.getSnapshot().view.topPages.map((p) => p.key)).toEqual(['/a']);
    expect(store.getSnapshot().history.state).toBe('loaded');
  });

  it('an unreachable history is reported and the stream goes on', async () => {
    const store = new DashboardStore();
    const m = manualSource(T0);
    const sync = new HistorySync(store, m.source);
    const done = sync.onOpen();
    await tick();
    store.ingest(pv('/a', 0, 5));
    m.fail(new Error('GET /api/history: HTTP 400 `since` must be ms'));
    await done;
    const snap = store.getSnapshot();
    expect(snap.history.state).toBe('failed');
    expect(snap.history.error).toContain('HTTP 400');
    expect(snap.view.charts.pageViews.points).toBe(1);
  });
});

describe('httpHistorySource', () => {
  it('asks /api/pipeline for the watermark and /api/history for metrics and alerts since a time', async () => {
    const urls: string[] = [];
    const respond = (status: number, body: string) => new Response(body, { status });
    const source = httpHistorySource(async (url) => {
      urls.push(url);
      if (url.startsWith('/api/pipeline')) return respond(200, '{"watermark":1764000000123,"events_in":5}');
      return respond(200, '[]');
    });
    expect(await source.watermark()).toBe(1_764_000_000_123);
    expect(await source.history(1_764_000_000_000.7)).toBe('[]');
    expect(urls).toEqual(['/api/pipeline', '/api/history?since=1764000000000&types=metric,alert']);
    const none = httpHistorySource(async () => respond(200, '{"watermark":0}'));
    expect(await none.watermark()).toBeNull();
    const bad = httpHistorySource(async () => respond(400, '{"error":"`since` must be ms"}'));
    await expect(bad.history(1)).rejects.toThrow('HTTP 400');
  });
});

// Merging history and the live stream: every output counts once, in any
// overlap and any order of arrival, and a re-fired window (a late update)
// replaces its earlier value.

import { describe, expect, it } from 'vitest';
import { Ledger } from './ledger';
import { createState, fieldSeries, METRIC, perSecondSeries, reduce, ruleCounts, type DashboardState } from './reducer';
import type { AlertMessage, MetricMessage, ServerMessage } from './types';

const T0 = 1_764_000_000_000;

function metric(plugin: string, name: string, key: string, start: number, end: number, fields: Record<string, number>): MetricMessage {
  return { type: 'metric', plugin, name, key, window_start: start, window_end: end, fields, multi: !('value' in fields) };
}

const pv = (key: string, i: number, value: number) => metric('page-views', 'page_views', key, T0 + i * 5000, T0 + (i + 1) * 5000, { value });
const lat = (i: number, p95: number) => metric('latency-percentiles', 'latency_ms', '', T0 + i * 5000, T0 + (i + 1) * 5000, { p50: p95 / 2, p95, p99: p95 * 2 });
/** A session window ending at `end` (its last event + the 60 s gap); `ms` its duration. */
const session = (id: string, end: number, ms: number) => metric('session-duration', 'session_duration_ms', id, end - 120_000, end, { value: ms });

function alert(id: string, time: number): AlertMessage {
  return { type: 'alert', id, plugin: 'bot-burst', rule: 'bot-burst', severity: 'warning', key: 'u', message: 'm', time, value: null };
}

function apply(s: DashboardState, msgs: ServerMessage[]): DashboardState {
  for (const m of msgs) reduce(s, m, T0);
  return s;
}

/** Everything the charts and feeds show, to compare two states. */
function shown(s: DashboardState) {
  return {
    pageViews: perSecondSeries(s, METRIC.pageViews),
    latency: fieldSeries(s, METRIC.latency, 'p95'),
    sessions: s.sessionDuration.series().map((x) => [x.t, x.count, x.mean]),
    alerts: s.alerts.feed.toArray().map((a) => a.id),
    rules: ruleCounts(s).map((r) => [r.rule, r.count]),
    total: s.alerts.total,
  };
}

/** A stream of outputs over 40 windows: many keys, sessions, alerts, and late re-fires. */
function stream(): ServerMessage[] {
  const out: ServerMessage[] = [];
  for (let i = 0; i < 40; i++) {
    for (const [k, page] of ['/', '/cart', '/blog'].entries()) out.push(pv(page, i, 10 + ((i * 7 + k * 3) % 11)));
    out.push(lat(i, 100 + i));
    out.push(session(`s${i}`, T0 + (i + 13) * 5000 + 17, 1000 * (i % 9)));
    if (i % 4 === 0) out.push(alert(`a${i}`, T0 + i * 5000 + 1));
    // A late event re-fires the window of two steps back with one more view.
    if (i % 5 === 2) out.push(pv('/cart', i - 2, 100 + i));
  }
  return out;
}

describe('history and live stream merged', () => {
  it('an overlap of history and live counts every output once', () => {
    const all = stream();
    const once = apply(createState(), all);
    // History of the first 60 %, the live stream from 40 %: 20 % in both.
    const merged = apply(createState(), all.slice(0, Math.floor(all.length * 0.6)));
    apply(merged, all.slice(Math.floor(all.length * 0.4)));
    expect(shown(merged)).toEqual(shown(once));
    expect(merged.counters.duplicateMetrics).toBeGreaterThan(0);
    expect(merged.counters.duplicateAlerts).toBeGreaterThan(0);
  });

  it('a reconnect loads the whole range again: nothing doubles, the gap is filled', () => {
    const all = stream();
    const once = apply(createState(), all);
    const s = createState();
    // Live until a disconnect at 50 %; back at 70 %: the history of the
    // whole range holds the gap (50–70 %) and everything before it.
    apply(s, all.slice(0, Math.floor(all.length * 0.5)));
    apply(s, all.slice(0, Math.floor(all.length * 0.7)));
    apply(s, all.slice(Math.floor(all.length * 0.7)));
    expect(shown(s)).toEqual(shown(once));
  });

  it('a re-fired window replaces its earlier value, also in windows without per-key detail', () => {
    const s = createState();
    for (let i = 0; i < 30; i++) apply(s, [pv('/a', i, 1), pv('/b', i, 2)]);
    const series = s.metrics.get(METRIC.pageViews)!;
    expect(series.points.first()!.keys).toBeNull();
    apply(s, [pv('/a', 0, 5)]);
    expect(fieldSeries(s, METRIC.pageViews)[0]!.v).toBe(7);
    // The same value again: a duplicate, the sum stays.
    apply(s, [pv('/a', 0, 5), pv('/b', 0, 2)]);
    expect(fieldSeries(s, METRIC.pageViews)[0]!.v).toBe(7);
    expect(s.counters.replacedMetrics).toBe(1);
    expect(s.counters.duplicateMetrics).toBe(2);
    // The latest value wins, whichever came before it.
    apply(s, [pv('/a', 0, 1)]);
    expect(fieldSeries(s, METRIC.pageViews)[0]!.v).toBe(3);
    expect(series.points.first()!.keyCount).toBe(2);
  });

  it('a multi-valued window is one output: a changed value replaces all its fields', () => {
    const s = apply(createState(), [lat(0, 100), lat(0, 100), lat(0, 300)]);
    expect(fieldSeries(s, METRIC.latency, 'p95')).toEqual([{ t: T0 + 5000, v: 300 }]);
    expect(fieldSeries(s, METRIC.latency, 'p99')).toEqual([{ t: T0 + 5000, v: 600 }]);
  });

  it('per-session samples count once and a re-fired session window replaces its sample', () => {
    const end = T0 + 100_000;
    const s = apply(createState(), [session('s1', end, 10_000), session('s2', end, 20_000), session('s1', end, 10_000)]);
    expect(s.sessionDuration.latest()).toMatchObject({ count: 2, mean: 15_000 });
    apply(s, [session('s2', end, 40_000)]);
    expect(s.sessionDuration.latest()).toMatchObject({ count: 2, mean: 25_000, median: 25_000 });
  });

  it('windows that arrive older than what is shown are placed in time order', () => {
    const s = apply(createState(), [pv('/a', 5, 5), pv('/a', 6, 6)]);
    apply(s, [pv('/a', 1, 1), pv('/a', 2, 2), pv('/a', 5, 5)]);
    expect(fieldSeries(s, METRIC.pageViews).map((p) => p.v)).toEqual([1, 2, 5, 6]);
  });
});

describe('Ledger', () => {
  it('forgets what is older than its horizon before the newest time', () => {
    const l = new Ledger<number>({ horizonMs: 10_000, maxEntries: 1000 });
    l.set(0, 'a', 1);
    l.set(5_000, 'b', 2);
    expect(l.set(5_000, 'b', 3)).toBe(2);
    expect(l.size).toBe(2);
    l.set(12_000, 'c', 4);
    expect(l.get(0, 'a')).toBeUndefined();
    expect(l.get(5_000, 'b')).toBe(3);
    expect(l.size).toBe(2);
  });

  it('keeps at most maxEntries, the newest', () => {
    const l = new Ledger<number>({ horizonMs: Infinity, maxEntries: 100 });
    for (let i = 0; i < 1000; i++) l.set(i, `k${i}`, i);
    expect(l.size).toBeLessThanOrEqual(100);
    expect(l.get(999, 'k999')).toBe(999);
    expect(l.get(0, 'k0')).toBeUndefined();
  });
});

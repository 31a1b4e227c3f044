import { describe, expect, it } from 'vitest';
import { activeCriticalAlerts, createState, fieldSeries, METRIC, perSecondSeries, reduce, ruleCounts, type DashboardState } from './reducer';
import type { AlertMessage, MetricMessage, PipelineMessage, PluginEventMessage, Severity } from './types';

const T0 = 1_764_000_000_000;

function metric(plugin: string, name: string, key: string, start: number, end: number, fields: Record<string, number>): MetricMessage {
  return { type: 'metric', plugin, name, key, window_start: start, window_end: end, fields, multi: !('value' in fields) };
}

const pv = (key: string, i: number, value: number) => metric('page-views', 'page_views', key, T0 + i * 5000, T0 + (i + 1) * 5000, { value });

function alert(id: string, rule: string, severity: Severity, time = T0, key = ''): AlertMessage {
  return { type: 'alert', id, plugin: rule, rule, severity, key, message: `${rule} fired`, time, value: null };
}

function apply(s: DashboardState, msgs: (MetricMessage | AlertMessage | PipelineMessage | PluginEventMessage)[], at = T0): DashboardState {
  for (const m of msgs) reduce(s, m, at);
  return s;
}

describe('reduce: metrics into series', () => {
  it('sums page views over keys per window and converts to per second', () => {
    const s = apply(createState(), [pv('/home', 0, 10), pv('/cart', 0, 5), pv('/home', 1, 20), pv('/a', 1, 5)]);
    expect(fieldSeries(s, METRIC.pageViews)).toEqual([
      { t: T0 + 5000, v: 15 },
      { t: T0 + 10000, v: 25 },
    ]);
    expect(perSecondSeries(s, METRIC.pageViews)).toEqual([
      { t: T0 + 5000, v: 3 },
      { t: T0 + 10000, v: 5 },
    ]);
    expect(s.latestMetricTime).toBe(T0 + 10000);
  });

  it('replaces a key re-emitted for the same window instead of double counting', () => {
    const s = apply(createState(), [pv('/home', 0, 10), pv('/cart', 0, 5), pv('/home', 0, 12)]);
    expect(fieldSeries(s, METRIC.pageViews)).toEqual([{ t: T0 + 5000, v: 17 }]);
    expect(s.metrics.get(METRIC.pageViews)!.last()!.keyCount).toBe(2);
  });

  it('places a late window in time order', () => {
    const s = apply(createState(), [pv('/a', 0, 1), pv('/a', 2, 3), pv('/a', 1, 2)]);
    expect(fieldSeries(s, METRIC.pageViews).map((p) => p.v)).toEqual([1, 2, 3]);
  });

  it('keeps the fields of multi-valued metrics', () => {
    const s = apply(createState(), [metric('latency-percentiles', 'latency_ms', '', T0, T0 + 5000, { p50: 12.1, p95: 80.3, p99: 250 })]);
    expect(fieldSeries(s, METRIC.latency, 'p95')).toEqual([{ t: T0 + 5000, v: 80.3 }]);
    expect(fieldSeries(s, METRIC.latency, 'p99')).toEqual([{ t: T0 + 5000, v: 250 }]);
    expect(fieldSeries(s, METRIC.latency, 'p42')).toEqual([{ t: T0 + 5000, v: null }]);
  });

  it('bounds every series', () => {
    const s = createState({ seriesCapacity: 50 });
    for (let i = 0; i < 1000; i++) reduce(s, pv('/home', i, i), T0);
    const pts = fieldSeries(s, METRIC.pageViews);
    expect(pts).toHaveLength(50);
    expect(pts[0]!.v).toBe(950);
    expect(pts[49]!.v).toBe(999);
  });

  it('drops per-key detail of old windows (bounded memory) but keeps totals', () => {
    const s = createState();
    for (let i = 0; i < 30; i++) {
      reduce(s, pv('/a', i, 1), T0);
      reduce(s, pv('/b', i, 2), T0);
    }
    const series = s.metrics.get(METRIC.pageViews)!;
    const keyed = series.points.toArray().filter((p) => p.keys !== null).length;
    expect(keyed).toBe(series.options.keyedWindows);
    expect(series.points.first()!.fields.value).toBe(3);
  });

  it('caps the number of distinct series', () => {
    const s = createState({ maxSeries: 3 });
    for (let i = 0; i < 10; i++) reduce(s, metric(`p${i}`, 'm', '', T0, T0 + 1, { value: 1 }), T0);
    expect(s.metrics.size).toBe(3);
    expect(s.counters.droppedMetrics).toBe(7);
  });

  it('aggregates session metrics from per-session samples', () => {
    const s = createState();
    const sess = (id: string, end: number, ms: number) => metric('session-duration', 'session_duration_ms', id, end - ms, end, { value: ms });
    apply(s, [sess('s1', T0 + 1000, 10_000), sess('s2', T0 + 2000, 20_000), sess('s3', T0 + 3000, 60_000)]);
    expect(s.metrics.has(METRIC.sessionDuration)).toBe(false);
    const latest = s.sessionDuration.latest()!;
    expect(latest.count).toBe(3);
    expect(latest.mean).toBe(30_000);
    expect(latest.median).toBe(20_000);
  });
});

describe('reduce: alerts', () => {
  it('feeds alerts newest first, bounded', () => {
    const s = createState({ alertCapacity: 3 });
    for (let i = 0; i < 5; i++) reduce(s, alert(`a${i}`, 'bot-burst', 'warning', T0 + i), T0 + i);
    expect(s.alerts.feed.newestFirst().map((a) => a.id)).toEqual(['a4', 'a3', 'a2']);
    expect(s.alerts.total).toBe(5);
    // An alert evicted from the feed is still known: sent again, it is not new.
    reduce(s, alert('a0', 'bot-burst', 'warning', T0), T0 + 9);
    expect(s.alerts.total).toBe(5);
    expect(s.counters.duplicateAlerts).toBe(1);
  });

  it('places an alert by its time, not by when it arrived', () => {
    const s = createState();
    apply(s, [alert('late', 'r', 'warning', T0 + 20_000), alert('early', 'r', 'warning', T0 + 5_000), alert('mid', 'r', 'warning', T0 + 10_000)]);
    expect(s.alerts.feed.newestFirst().map((a) => a.id)).toEqual(['late', 'mid', 'early']);
  });

  it('counts per rule and per severity', () => {
    const s = apply(createState(), [
      alert('1', 'bot-burst', 'warning'),
      alert('2', 'bot-burst', 'warning'),
      alert('3', 'error-rate-spike', 'critical'),
      alert('4', 'bot-burst', 'info'),
    ]);
    const counts = ruleCounts(s);
    expect(counts.map((c) => [c.rule, c.count])).toEqual([
      ['bot-burst', 3],
      ['error-rate-spike', 1],
    ]);
    expect(counts[0]!.bySeverity).toEqual({ info: 1, warning: 2, critical: 0 });
    expect(counts[0]!.lastSeverity).toBe('info');
  });

  it('drops duplicate alert ids', () => {
    const s = apply(createState(), [alert('x', 'r', 'warning'), alert('x', 'r', 'warning')]);
    expect(s.alerts.feed.size).toBe(1);
    expect(s.counters.duplicateAlerts).toBe(1);
    expect(ruleCounts(s)[0]!.count).toBe(1);
  });

  it('shows the critical banner for N minutes after a critical alert, then expires', () => {
    const s = createState();
    const win = 5 * 60_000;
    reduce(s, alert('w', 'bot-burst', 'warning'), T0);
    expect(activeCriticalAlerts(s, T0, win)).toEqual([]);
    reduce(s, alert('c1', 'error-rate-spike', 'critical'), T0);
    reduce(s, alert('c2', 'error-rate-spike', 'critical'), T0 + 60_000);
    expect(activeCriticalAlerts(s, T0 + 60_000, win).map((a) => a.id)).toEqual(['c2', 'c1']);
    expect(activeCriticalAlerts(s, T0 + win, win).map((a) => a.id)).toEqual(['c2', 'c1']);
    expect(activeCriticalAlerts(s, T0 + win + 1, win).map((a) => a.id)).toEqual(['c2']);
    expect(activeCriticalAlerts(s, T0 + 60_000 + win + 1, win)).toEqual([]);
  });

  it('expires the banner by receive time, not the alert event time', () => {
    const s = createState();
    reduce(s, alert('old-event', 'error-rate-spike', 'critical', T0 - 3_600_000), T0);
    expect(activeCriticalAlerts(s, T0 + 1000, 60_000)).toHaveLength(1);
  });
});

describe('reduce: plugin events and pipeline status', () => {
  it('keeps a bounded lifecycle timeline', () => {
    const s = createState({ pluginEventCapacity: 2 });
    for (const ev of ['loaded', 'swapped', 'rolled_back']) {
      reduce(s, { type: 'plugin', event: ev, plugin: 'page-views', version: '1', hash: 'h', message: '', time: T0 }, T0);
    }
    expect(s.pluginEvents.newestFirst().map((e) => e.event)).toEqual(['rolled_back', 'swapped']);
  });

  it('records pipeline status as the latest snapshot and a series', () => {
    const s = createState();
    const status = (t: number, eps: number, lag: Record<string, number>): PipelineMessage => ({
      type: 'pipeline',
      time: t,
      source: 'kafka',
      events_in: 1,
      events_per_sec: eps,
      outputs_per_sec: 4,
      watermark: t - 100,
      late_events: 0,
      dead_lettered: 0,
      e2e_latency_ms: { p50: 1, p95: 2, p99: 3 },
      consumer_lag: lag,
      last_checkpoint: null,
      workers: [],
    });
    apply(s, [status(T0, 500, { '0': 2, '1': 3 }), status(T0 + 1000, 600, {})]);
    expect(s.pipeline.latest!.events_per_sec).toBe(600);
    expect(s.pipeline.series.toArray().map((p) => [p.eventsPerSec, p.lagTotal, p.e2eP95])).toEqual([
      [500, 5, 2],
      [600, null, 2],
    ]);
  });
});

// The view model: an immutable snapshot derived from the state, rebuilt a
// few times per second at most. React renders only from this.

import {
  activeCriticalAlerts,
  fieldSeries,
  METRIC,
  perSecondSeries,
  ruleCounts,
  type AlertEntry,
  type DashboardState,
  type PipelinePoint,
  type PluginEventEntry,
  type RuleCount,
  type XY,
} from './reducer';
import type { Millis, PipelineMessage } from './types';
import { topKeys, type KeyTotal, type WindowPoint } from './windowSeries';

/** uPlot's aligned data: x in seconds, then one array per series. */
export interface ChartData {
  xs: number[];
  ys: (number | null)[][];
  /** Number of x positions that have at least one value. */
  points: number;
  /** Seconds from the first to the last x position with a value (0 below two). */
  span: number;
  /** Visible x range in seconds, or null when there is no data yet. */
  xRange: [number, number] | null;
}

export interface OtherMetric {
  id: string;
  fields: Record<string, number>;
  keyCount: number;
  windowEnd: Millis;
}

export interface DashboardView {
  now: Millis;
  rangeMs: number;
  charts: {
    pageViews: ChartData;
    activeUsers: ChartData;
    conversion: ChartData;
    sessionDuration: ChartData;
    pagesPerSession: ChartData;
    latency: ChartData;
    errorRate: ChartData;
    throughput: ChartData;
    e2eLatency: ChartData;
    consumerLag: ChartData;
  };
  stats: {
    pageViewsPerSec: number | null;
    activeUsers: number | null;
    conversionRate: number | null;
    purchases: number | null;
    sessions: number | null;
    sessionMeanMs: number | null;
    sessionMedianMs: number | null;
    sessionsLastMinute: number | null;
    pagesPerSessionMean: number | null;
    latencyP50: number | null;
    latencyP95: number | null;
    latencyP99: number | null;
    errorRate: number | null;
    errors: number | null;
    events: number | null;
  };
  topPages: KeyTotal[];
  alerts: {
    feed: AlertEntry[];
    rules: RuleCount[];
    activeCritical: AlertEntry[];
    total: number;
  };
  pluginEvents: PluginEventEntry[];
  /** Sequence number of the newest plugin event (changes when one arrives). */
  pluginEventSeq: number;
  pipeline: {
    latest: PipelineMessage | null;
    receivedAt: Millis | null;
  };
  otherMetrics: OtherMetric[];
}

export interface ViewOptions {
  now: Millis;
  rangeMs: number;
  /** A critical alert keeps the banner up this long after it arrived. */
  criticalWindowMs: number;
  /** Alerts shown in the feed. */
  feedLimit: number;
  /** Windows summed for top pages (12 × 5 s = last minute). */
  topPagesWindows: number;
  topPagesLimit: number;
}

export const DEFAULT_VIEW_OPTIONS: Omit<ViewOptions, 'now'> = {
  rangeMs: 10 * 60_000,
  criticalWindowMs: 5 * 60_000,
  feedLimit: 200,
  topPagesWindows: 12,
  topPagesLimit: 10,
};

const KNOWN_SERIES: ReadonlySet<string> = new Set(Object.values(METRIC));

/** Aligns several XY series that share timestamps (same source) into chart data. */
export function alignSeries(series: XY[][], rangeEnd: Millis | null, rangeMs: number): ChartData {
  const xsMs = new Set<number>();
  for (const s of series) for (const p of s) xsMs.add(p.t);
  const sorted = [...xsMs].sort((a, b) => a - b);
  const from = rangeEnd === null ? -Infinity : rangeEnd - rangeMs;
  const xs = sorted.filter((t) => t >= from);
  const index = new Map(xs.map((t, i) => [t, i]));
  const ys = series.map((s) => {
    const arr: (number | null)[] = new Array<number | null>(xs.length).fill(null);
    for (const p of s) {
      const i = index.get(p.t);
      if (i !== undefined) arr[i] = p.v;
    }
    return arr;
  });
  let points = 0;
  let first: number | null = null;
  let last: number | null = null;
  for (let i = 0; i < xs.length; i++) {
    if (!ys.some((y) => y[i] !== null)) continue;
    points++;
    first ??= xs[i] as number;
    last = xs[i] as number;
  }
  return {
    xs: xs.map((t) => t / 1000),
    ys,
    points,
    span: first !== null && last !== null ? (last - first) / 1000 : 0,
    xRange: rangeEnd === null ? null : [(rangeEnd - rangeMs) / 1000, rangeEnd / 1000],
  };
}

function lastValue(xy: XY[]): number | null {
  for (let i = xy.length - 1; i >= 0; i--) {
    const v = (xy[i] as XY).v;
    if (v !== null) return v;
  }
  return null;
}

function pipelineXY(points: PipelinePoint[], f: (p: PipelinePoint) => number | null): XY[] {
  return points.map((p) => ({ t: p.t, v: f(p) }));
}

export function selectView(s: DashboardState, o: ViewOptions): DashboardView {
  const end = s.latestMetricTime;
  const from = end === null ? -Infinity : end - o.rangeMs - 60_000;

  const pageViews = perSecondSeries(s, METRIC.pageViews, 'value', from);
  const activeUsers = fieldSeries(s, METRIC.activeUsers, 'value', from);
  const conversion = fieldSeries(s, METRIC.conversionRate, 'value', from);
  const latP50 = fieldSeries(s, METRIC.latency, 'p50', from);
  const latP95 = fieldSeries(s, METRIC.latency, 'p95', from);
  const latP99 = fieldSeries(s, METRIC.latency, 'p99', from);
  const errorRate = fieldSeries(s, METRIC.errorRate, 'value', from);

  const sd = s.sessionDuration.series();
  const pps = s.pagesPerSession.series();
  const sdLatest = sd.length > 0 ? sd[sd.length - 1] : undefined;
  const ppsLatest = pps.length > 0 ? pps[pps.length - 1] : undefined;

  const pipePoints = s.pipeline.series.toArray();
  const pipeEnd = pipePoints.length > 0 ? (pipePoints[pipePoints.length - 1] as PipelinePoint).t : null;
  const pipeFrom = pipeEnd === null ? -Infinity : pipeEnd - o.rangeMs;
  const pipeVisible = pipePoints.filter((p) => p.t >= pipeFrom);

  const lastField = (id: string, field = 'value'): number | null => {
    const p = s.metrics.get(id)?.last();
    const v = p?.fields[field];
    return v === undefined ? null : v;
  };

  const pageViewsSeries = s.metrics.get(METRIC.pageViews);
  const otherMetrics: OtherMetric[] = [];
  for (const [id, series] of s.metrics) {
    if (KNOWN_SERIES.has(id)) continue;
    const p = series.last() as WindowPoint | undefined;
    if (p) otherMetrics.push({ id, fields: { ...p.fields }, keyCount: p.keyCount, windowEnd: p.end });
  }
  otherMetrics.sort((a, b) => a.id.localeCompare(b.id));

  const seqOfLastEvent = s.pluginEvents.last()?.seq ?? 0;

  return {
    now: o.now,
    rangeMs: o.rangeMs,
    charts: {
      pageViews: alignSeries([pageViews], end, o.rangeMs),
      activeUsers: alignSeries([activeUsers], end, o.rangeMs),
      conversion: alignSeries([conversion.map((p) => ({ t: p.t, v: p.v === null ? null : p.v * 100 }))], end, o.rangeMs),
      sessionDuration: alignSeries(
        [sd.map((x) => ({ t: x.t, v: finiteOrNull(x.mean / 1000) })), sd.map((x) => ({ t: x.t, v: finiteOrNull(x.median / 1000) }))],
        end,
        o.rangeMs,
      ),
      pagesPerSession: alignSeries(
        [pps.map((x) => ({ t: x.t, v: finiteOrNull(x.mean) })), pps.map((x) => ({ t: x.t, v: finiteOrNull(x.median) }))],
        end,
        o.rangeMs,
      ),
      latency: alignSeries([latP50, latP95, latP99], end, o.rangeMs),
      errorRate: alignSeries([errorRate.map((p) => ({ t: p.t, v: p.v === null ? null : p.v * 100 }))], end, o.rangeMs),
      throughput: alignSeries(
        [pipelineXY(pipeVisible, (p) => p.eventsPerSec), pipelineXY(pipeVisible, (p) => p.outputsPerSec)],
        pipeEnd,
        o.rangeMs,
      ),
      e2eLatency: alignSeries(
        [pipelineXY(pipeVisible, (p) => p.e2eP50), pipelineXY(pipeVisible, (p) => p.e2eP95), pipelineXY(pipeVisible, (p) => p.e2eP99)],
        pipeEnd,
        o.rangeMs,
      ),
      consumerLag: alignSeries([pipelineXY(pipeVisible, (p) => p.lagTotal)], pipeEnd, o.rangeMs),
    },
    stats: {
      pageViewsPerSec: lastValue(pageViews),
      activeUsers: lastField(METRIC.activeUsers),
      conversionRate: lastField(METRIC.conversionRate),
      purchases: lastField(METRIC.purchases),
      sessions: lastField(METRIC.sessions),
      sessionMeanMs: finiteOrNull(sdLatest?.mean),
      sessionMedianMs: finiteOrNull(sdLatest?.median),
      sessionsLastMinute: sdLatest ? sdLatest.count : null,
      pagesPerSessionMean: finiteOrNull(ppsLatest?.mean),
      latencyP50: lastField(METRIC.latency, 'p50'),
      latencyP95: lastField(METRIC.latency, 'p95'),
      latencyP99: lastField(METRIC.latency, 'p99'),
      errorRate: lastField(METRIC.errorRate),
      errors: lastField(METRIC.errors),
      events: lastField(METRIC.errorEvents),
    },
    topPages: pageViewsSeries ? topKeys(pageViewsSeries, o.topPagesWindows, o.topPagesLimit) : [],
    alerts: {
      feed: s.alerts.feed.newestFirst(o.feedLimit),
      rules: ruleCounts(s),
      activeCritical: activeCriticalAlerts(s, o.now, o.criticalWindowMs),
      total: s.alerts.total,
    },
    pluginEvents: s.pluginEvents.newestFirst(),
    pluginEventSeq: seqOfLastEvent,
    pipeline: { latest: s.pipeline.latest, receivedAt: s.pipeline.latestReceivedAt },
    otherMetrics,
  };
}

function finiteOrNull(v: number | undefined | null): number | null {
  return typeof v === 'number' && Number.isFinite(v) ? v : null;
}

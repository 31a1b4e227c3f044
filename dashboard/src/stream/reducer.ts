// The dashboard's stream state and the reducer that folds messages into it.
//
// `reduce` is deterministic: it depends only on the state, the message and
// the injected receive time. For speed it updates the bounded buffers of the
// state in place and returns the same state object; everything it holds is
// bounded (ring buffers and capped maps), so a page open for days does not grow.
//
// Outputs may arrive more than once (in `/api/history` and on `/ws`, or in
// the history loads of two reconnects): a metric is one per
// plugin/name/key/window and an alert one per id. The ledgers remember what
// was applied, so a repeat is skipped and a re-fired window (a late update
// with another value) replaces its earlier value, in the order applied.

import { Ledger } from './ledger';
import { RingBuffer } from './ringBuffer';
import { SampleAggregator } from './sampleStats';
import type { AlertMessage, MetricMessage, Millis, PipelineMessage, PluginEventMessage, ServerMessage, Severity } from './types';
import { WindowSeries } from './windowSeries';

export const METRIC = {
  pageViews: 'page-views/page_views',
  activeUsers: 'active-users/active_users',
  conversionRate: 'conversion-rate/conversion_rate',
  purchases: 'conversion-rate/purchases',
  sessions: 'conversion-rate/sessions',
  sessionDuration: 'session-duration/session_duration_ms',
  pagesPerSession: 'session-duration/pages_per_session',
  latency: 'latency-percentiles/latency_ms',
  errorRate: 'error-rate/error_rate',
  errorEvents: 'error-rate/events',
  errors: 'error-rate/errors',
} as const;

/** Metrics keyed by session id: aggregated from samples instead of summed per window. */
const SAMPLED_METRICS: ReadonlySet<string> = new Set([METRIC.sessionDuration, METRIC.pagesPerSession]);

export interface AlertEntry extends AlertMessage {
  /** Wall-clock receive time; the critical banner expires on this clock. */
  receivedAt: Millis;
  /** Monotonic sequence number (stable React key). */
  seq: number;
}

export interface RuleCount {
  rule: string;
  plugin: string;
  count: number;
  bySeverity: Record<Severity, number>;
  lastSeverity: Severity;
  lastTime: Millis;
  lastReceivedAt: Millis;
}

export interface PluginEventEntry extends PluginEventMessage {
  receivedAt: Millis;
  seq: number;
}

export interface PipelinePoint {
  t: Millis;
  eventsPerSec: number | null;
  outputsPerSec: number | null;
  e2eP50: number | null;
  e2eP95: number | null;
  e2eP99: number | null;
  lateEvents: number | null;
  deadLettered: number | null;
  lagTotal: number | null;
}

export interface ReducerConfig {
  /** Windows kept per metric series. */
  seriesCapacity: number;
  /** Distinct metric series kept (others counted in `counters.droppedMetrics`). */
  maxSeries: number;
  /** Alerts kept in the feed. */
  alertCapacity: number;
  /** Distinct rules counted. */
  maxRules: number;
  /** Plugin lifecycle events kept. */
  pluginEventCapacity: number;
  /** Pipeline status points kept (~1 per second). */
  pipelineCapacity: number;
  /** Critical alerts kept for the banner. */
  criticalCapacity: number;
  /** Random source for the session reservoirs. */
  random: () => number;
  /** How long applied outputs are remembered for de-duplication (event time). */
  dedupeHorizonMs: number;
  /** Outputs remembered per ledger (windowed metrics, per-session metrics, alerts). */
  dedupeMaxEntries: number;
}

export const DEFAULT_REDUCER_CONFIG: ReducerConfig = {
  seriesCapacity: 1024,
  maxSeries: 64,
  alertCapacity: 500,
  maxRules: 200,
  pluginEventCapacity: 200,
  pipelineCapacity: 1200,
  criticalCapacity: 50,
  random: Math.random,
  // The longest range (30 min), the minute the view adds, and some slack.
  dedupeHorizonMs: 35 * 60_000,
  dedupeMaxEntries: 100_000,
};

export interface DashboardState {
  config: ReducerConfig;
  /** `plugin/name` → windows summed over keys. */
  metrics: Map<string, WindowSeries>;
  sessionDuration: SampleAggregator;
  pagesPerSession: SampleAggregator;
  /** What was applied: metric identity → fields, alert id → true. */
  seen: {
    windows: Ledger<Record<string, number>>;
    samples: Ledger<number>;
    alerts: Ledger<true>;
  };
  alerts: {
    /** Oldest → newest by alert time. */
    feed: RingBuffer<AlertEntry>;
    byRule: Map<string, RuleCount>;
    critical: RingBuffer<AlertEntry>;
    total: number;
  };
  pluginEvents: RingBuffer<PluginEventEntry>;
  pipeline: {
    latest: PipelineMessage | null;
    latestReceivedAt: Millis | null;
    series: RingBuffer<PipelinePoint>;
  };
  /** Largest window end seen in metrics (event time: the business charts' "now"). */
  latestMetricTime: Millis | null;
  seq: number;
  counters: {
    metrics: number;
    alerts: number;
    pluginEvents: number;
    pipeline: number;
    duplicateAlerts: number;
    /** Metrics received again with the same value (skipped). */
    duplicateMetrics: number;
    /** Metrics that replaced an earlier value of their window (late updates). */
    replacedMetrics: number;
    droppedMetrics: number;
  };
}

/** A metric's identity: plugin, name, key and window (the window end files it). */
export function metricIdentity(m: MetricMessage): string {
  return `${m.plugin}\n${m.name}\n${m.key}\n${m.window_start}`;
}

function sameFields(a: Record<string, number>, b: Record<string, number>): boolean {
  const ka = Object.keys(a);
  if (ka.length !== Object.keys(b).length) return false;
  return ka.every((k) => a[k] === b[k]);
}

export function createState(config: Partial<ReducerConfig> = {}): DashboardState {
  const c = { ...DEFAULT_REDUCER_CONFIG, ...config };
  const ledger = { horizonMs: c.dedupeHorizonMs, maxEntries: c.dedupeMaxEntries };
  return {
    config: c,
    metrics: new Map(),
    sessionDuration: new SampleAggregator({ random: c.random }),
    pagesPerSession: new SampleAggregator({ random: c.random }),
    seen: { windows: new Ledger(ledger), samples: new Ledger(ledger), alerts: new Ledger(ledger) },
    alerts: {
      feed: new RingBuffer(c.alertCapacity),
      byRule: new Map(),
      critical: new RingBuffer(c.criticalCapacity),
      total: 0,
    },
    pluginEvents: new RingBuffer(c.pluginEventCapacity),
    pipeline: { latest: null, latestReceivedAt: null, series: new RingBuffer(c.pipelineCapacity) },
    latestMetricTime: null,
    seq: 0,
    counters: { metrics: 0, alerts: 0, pluginEvents: 0, pipeline: 0, duplicateAlerts: 0, duplicateMetrics: 0, replacedMetrics: 0, droppedMetrics: 0 },
  };
}

function advanceTime(s: DashboardState, t: Millis): void {
  if (s.latestMetricTime === null || t > s.latestMetricTime) s.latestMetricTime = t;
}

export function reduce(s: DashboardState, msg: ServerMessage, receivedAt: Millis): DashboardState {
  switch (msg.type) {
    case 'metric':
      return reduceMetric(s, msg);
    case 'alert':
      return reduceAlert(s, msg, receivedAt);
    case 'plugin': {
      s.counters.pluginEvents++;
      s.pluginEvents.push({ ...msg, receivedAt, seq: ++s.seq });
      return s;
    }
    case 'pipeline': {
      s.counters.pipeline++;
      s.pipeline.latest = msg;
      s.pipeline.latestReceivedAt = receivedAt;
      const lags = Object.values(msg.consumer_lag);
      s.pipeline.series.insertSorted(
        {
          t: msg.time,
          eventsPerSec: msg.events_per_sec,
          outputsPerSec: msg.outputs_per_sec,
          e2eP50: msg.e2e_latency_ms?.p50 ?? null,
          e2eP95: msg.e2e_latency_ms?.p95 ?? null,
          e2eP99: msg.e2e_latency_ms?.p99 ?? null,
          lateEvents: msg.late_events,
          deadLettered: msg.dead_lettered,
          lagTotal: lags.length > 0 ? lags.reduce((a, b) => a + b, 0) : null,
        },
        (p) => p.t,
      );
      return s;
    }
  }
}

function reduceMetric(s: DashboardState, msg: MetricMessage): DashboardState {
  const id = `${msg.plugin}/${msg.name}`;
  const identity = metricIdentity(msg);
  if (SAMPLED_METRICS.has(id)) {
    const value = msg.fields.value;
    if (value === undefined) return s;
    const previous = s.seen.samples.get(msg.window_end, identity);
    if (previous === value) {
      s.counters.duplicateMetrics++;
      return s;
    }
    s.counters.metrics++;
    s.seen.samples.set(msg.window_end, identity, value);
    const agg = id === METRIC.sessionDuration ? s.sessionDuration : s.pagesPerSession;
    if (previous === undefined) {
      agg.add(msg.window_end, value);
    } else {
      s.counters.replacedMetrics++;
      agg.replace(msg.window_end, previous, value);
    }
  } else {
    const previous = s.seen.windows.get(msg.window_end, identity);
    if (previous !== undefined && sameFields(previous, msg.fields)) {
      s.counters.duplicateMetrics++;
      return s;
    }
    let series = s.metrics.get(id);
    if (!series) {
      if (s.metrics.size >= s.config.maxSeries) {
        s.counters.droppedMetrics++;
        return s;
      }
      series = new WindowSeries({ capacity: s.config.seriesCapacity });
      s.metrics.set(id, series);
    }
    s.counters.metrics++;
    s.seen.windows.set(msg.window_end, identity, msg.fields);
    if (previous !== undefined) s.counters.replacedMetrics++;
    series.add(msg, previous);
  }
  advanceTime(s, msg.window_end);
  return s;
}

function reduceAlert(s: DashboardState, msg: AlertMessage, receivedAt: Millis): DashboardState {
  const { alerts } = s;
  if (s.seen.alerts.get(msg.time, msg.id)) {
    s.counters.duplicateAlerts++;
    return s;
  }
  s.seen.alerts.set(msg.time, msg.id, true);
  s.counters.alerts++;
  alerts.total++;
  const entry: AlertEntry = { ...msg, receivedAt, seq: ++s.seq };
  // By alert time: alerts a history load fills in land where they belong.
  alerts.feed.insertSorted(entry, (a) => a.time);
  if (msg.severity === 'critical') alerts.critical.insertSorted(entry, (a) => a.time);

  let rc = alerts.byRule.get(msg.rule);
  if (!rc) {
    if (alerts.byRule.size >= s.config.maxRules) return s;
    rc = {
      rule: msg.rule,
      plugin: msg.plugin,
      count: 0,
      bySeverity: { info: 0, warning: 0, critical: 0 },
      lastSeverity: msg.severity,
      lastTime: msg.time,
      lastReceivedAt: receivedAt,
    };
    alerts.byRule.set(msg.rule, rc);
  }
  rc.count++;
  rc.bySeverity[msg.severity]++;
  rc.lastSeverity = msg.severity;
  rc.lastTime = Math.max(rc.lastTime, msg.time);
  rc.lastReceivedAt = receivedAt;
  return s;
}

// ---------------------------------------------------------------------------
// Selectors (pure reads)

/** Critical alerts received within the last `windowMs` before `now`, newest first. */
export function activeCriticalAlerts(s: DashboardState, now: Millis, windowMs: number): AlertEntry[] {
  const out: AlertEntry[] = [];
  for (const a of s.alerts.critical.newestFirst()) {
    if (now - a.receivedAt <= windowMs) out.push(a);
  }
  return out;
}

/** Rule counts, most frequent first. */
export function ruleCounts(s: DashboardState): RuleCount[] {
  return [...s.alerts.byRule.values()].sort((a, b) => b.count - a.count || a.rule.localeCompare(b.rule));
}

export interface XY {
  t: Millis;
  v: number | null;
}

/** A field of a metric series, one point per window, at the window's end. */
export function fieldSeries(s: DashboardState, id: string, field = 'value', from = -Infinity): XY[] {
  const series = s.metrics.get(id);
  if (!series) return [];
  const out: XY[] = [];
  for (const p of series.points) {
    if (p.end < from) continue;
    const v = p.fields[field];
    out.push({ t: p.end, v: v === undefined ? null : v });
  }
  return out;
}

/**
 * Converts a per-window count series into a per-second rate: each window's
 * total divided by its length in seconds (e.g. page views per 5 s window / 5).
 */
export function perSecondSeries(s: DashboardState, id: string, field = 'value', from = -Infinity): XY[] {
  const series = s.metrics.get(id);
  if (!series) return [];
  const out: XY[] = [];
  for (const p of series.points) {
    if (p.end < from) continue;
    const v = p.fields[field];
    const secs = (p.end - p.start) / 1000;
    out.push({ t: p.end, v: v === undefined || secs <= 0 ? null : v / secs });
  }
  return out;
}

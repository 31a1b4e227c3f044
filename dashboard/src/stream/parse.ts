// Parsing and validation of the host's WebSocket frames.
//
// Forward compatible: unknown `type`s are reported as `ignored`, unknown
// fields are dropped; malformed frames are reported as `invalid` and never
// throw.

import type {
  AlertMessage,
  MetricMessage,
  ParseResult,
  Percentiles,
  PipelineMessage,
  PluginEventMessage,
  Severity,
  WorkerStatus,
} from './types';

type Obj = Record<string, unknown>;

function isObject(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function finite(v: unknown): v is number {
  return typeof v === 'number' && Number.isFinite(v);
}

function optNumber(v: unknown): number | null {
  return finite(v) ? v : null;
}

function str(v: unknown, fallback = ''): string {
  return typeof v === 'string' ? v : fallback;
}

/** Longest string kept from a frame, so a huge message cannot bloat the feeds. */
const MAX_TEXT = 1000;

function text(v: unknown, fallback = ''): string {
  const s = str(v, fallback);
  return s.length > MAX_TEXT ? `${s.slice(0, MAX_TEXT)}…` : s;
}

const SEVERITIES: ReadonlySet<string> = new Set(['info', 'warning', 'critical']);

function parseMetric(o: Obj): ParseResult {
  if (typeof o.plugin !== 'string' || o.plugin === '') return invalid('metric without plugin');
  if (typeof o.name !== 'string' || o.name === '') return invalid('metric without name');
  if (!finite(o.window_start) || !finite(o.window_end)) return invalid('metric without numeric window_start/window_end');
  if (o.window_end < o.window_start) return invalid('metric window_end before window_start');
  const fields: Record<string, number> = {};
  let multi = false;
  if (finite(o.value)) {
    fields.value = o.value;
  } else if (isObject(o.values)) {
    multi = true;
    for (const [k, v] of Object.entries(o.values)) {
      if (finite(v)) fields[k] = v;
    }
    if (Object.keys(fields).length === 0) return invalid('metric values has no numeric entry');
  } else {
    return invalid('metric without numeric value or values');
  }
  const m: MetricMessage = {
    type: 'metric',
    plugin: o.plugin,
    name: o.name,
    key: o.key == null ? '' : typeof o.key === 'string' ? text(o.key) : String(o.key),
    window_start: o.window_start,
    window_end: o.window_end,
    fields,
    multi,
  };
  return { kind: 'message', message: m };
}

function parseAlert(o: Obj, receivedAt: number): ParseResult {
  if (typeof o.rule !== 'string' || o.rule === '') return invalid('alert without rule');
  const time = finite(o.time) ? o.time : receivedAt;
  const severity: Severity = typeof o.severity === 'string' && SEVERITIES.has(o.severity) ? (o.severity as Severity) : 'info';
  const key = o.key == null ? '' : typeof o.key === 'string' ? text(o.key) : String(o.key);
  const a: AlertMessage = {
    type: 'alert',
    id: typeof o.id === 'string' && o.id !== '' ? text(o.id) : `${o.rule}|${key}|${time}`,
    plugin: text(o.plugin, o.rule),
    rule: text(o.rule),
    severity,
    key,
    message: text(o.message),
    time,
    value: optNumber(o.value),
  };
  return { kind: 'message', message: a };
}

function parsePluginEvent(o: Obj, receivedAt: number): ParseResult {
  if (typeof o.event !== 'string' || o.event === '') return invalid('plugin event without event');
  if (typeof o.plugin !== 'string' || o.plugin === '') return invalid('plugin event without plugin');
  const p: PluginEventMessage = {
    type: 'plugin',
    event: text(o.event),
    plugin: text(o.plugin),
    version: typeof o.version === 'string' ? text(o.version) : null,
    hash: typeof o.hash === 'string' ? text(o.hash) : null,
    message: text(o.message),
    time: finite(o.time) ? o.time : receivedAt,
  };
  return { kind: 'message', message: p };
}

function parsePercentiles(v: unknown): Percentiles | null {
  if (!isObject(v)) return null;
  const p = { p50: optNumber(v.p50), p95: optNumber(v.p95), p99: optNumber(v.p99) };
  return p.p50 === null && p.p95 === null && p.p99 === null ? null : p;
}

function parseWorkers(v: unknown): WorkerStatus[] {
  if (!Array.isArray(v)) return [];
  const out: WorkerStatus[] = [];
  for (const w of v.slice(0, 1024)) {
    if (!isObject(w) || !finite(w.worker)) continue;
    const num = (x: unknown) => (finite(x) ? x : 0);
    out.push({
      worker: w.worker,
      events_per_sec: num(w.events_per_sec),
      busy: Math.min(1, Math.max(0, num(w.busy))),
      keys: num(w.keys),
      exchange_queue: num(w.exchange_queue),
    });
  }
  return out;
}

function parsePipeline(o: Obj): ParseResult {
  if (!finite(o.time)) return invalid('pipeline status without numeric time');
  const lag: Record<string, number> = {};
  if (isObject(o.consumer_lag)) {
    let n = 0;
    for (const [k, v] of Object.entries(o.consumer_lag)) {
      if (finite(v) && n < 1024) {
        lag[k] = v;
        n++;
      }
    }
  }
  const p: PipelineMessage = {
    type: 'pipeline',
    time: o.time,
    source: text(o.source),
    events_in: optNumber(o.events_in),
    events_per_sec: optNumber(o.events_per_sec),
    outputs_per_sec: optNumber(o.outputs_per_sec),
    watermark: optNumber(o.watermark),
    late_events: optNumber(o.late_events),
    dead_lettered: optNumber(o.dead_lettered),
    e2e_latency_ms: parsePercentiles(o.e2e_latency_ms),
    consumer_lag: lag,
    last_checkpoint: optNumber(o.last_checkpoint),
    workers: parseWorkers(o.workers),
  };
  return { kind: 'message', message: p };
}

function invalid(error: string): ParseResult {
  return { kind: 'invalid', error };
}

/** Validates one decoded JSON value (one message object). */
export function parseValue(v: unknown, receivedAt: number = Date.now()): ParseResult {
  if (!isObject(v)) return invalid('frame is not a JSON object');
  if (typeof v.type !== 'string') return invalid('message without a string "type"');
  switch (v.type) {
    case 'metric':
      return parseMetric(v);
    case 'alert':
      return parseAlert(v, receivedAt);
    case 'plugin':
      return parsePluginEvent(v, receivedAt);
    case 'pipeline':
      return parsePipeline(v);
    default:
      return { kind: 'ignored', type: v.type.slice(0, 64) };
  }
}

/**
 * Parses one WebSocket text frame. A frame holds one JSON object; a JSON
 * array of objects is accepted too (each element parsed on its own).
 */
export function parseFrame(data: unknown, receivedAt: number = Date.now()): ParseResult[] {
  if (typeof data !== 'string') return [invalid('binary or non-text frame')];
  let decoded: unknown;
  try {
    decoded = JSON.parse(data);
  } catch (e) {
    return [invalid(`malformed JSON: ${e instanceof Error ? e.message : String(e)}`)];
  }
  if (Array.isArray(decoded)) return decoded.map((v) => parseValue(v, receivedAt));
  return [parseValue(decoded, receivedAt)];
}

// One metric (`plugin/name`) as a bounded time series of windows.
//
// Every window is one point; its fields are summed over the metric's keys
// (one key "" for global metrics). A key re-emitted for the same window
// replaces its earlier value: the caller passes that value (the reducer's
// ledger remembers it), or else the window's per-key values still have it.
// Per-key values are kept only for the newest `keyedWindows` windows (for
// "top pages"), so memory stays bounded however many windows or keys arrive.

import { RingBuffer } from './ringBuffer';
import type { MetricMessage, Millis } from './types';

export interface WindowPoint {
  start: Millis;
  end: Millis;
  /** Fields summed over keys. */
  fields: Record<string, number>;
  /** Number of distinct keys seen in this window. */
  keyCount: number;
  /** Per-key fields; null once the window is older than `keyedWindows` or past `maxKeysPerWindow`. */
  keys: Map<string, Record<string, number>> | null;
}

export interface WindowSeriesOptions {
  /** Maximum number of windows kept. */
  capacity: number;
  /** Number of newest windows whose per-key values are kept. */
  keyedWindows: number;
  /** Per-key values of one window are dropped beyond this many keys. */
  maxKeysPerWindow: number;
}

export const DEFAULT_WINDOW_SERIES: WindowSeriesOptions = {
  capacity: 1024,
  keyedWindows: 12,
  maxKeysPerWindow: 5000,
};

export type AddResult = 'appended' | 'updated' | 'inserted' | 'dropped';

export class WindowSeries {
  readonly points: RingBuffer<WindowPoint>;
  readonly options: WindowSeriesOptions;
  /** Sorted union of the field names seen. */
  fieldNames: string[] = [];

  constructor(options: Partial<WindowSeriesOptions> = {}) {
    this.options = { ...DEFAULT_WINDOW_SERIES, ...options };
    this.points = new RingBuffer<WindowPoint>(this.options.capacity);
  }

  /** Adds `m`; `previous`: the value of `m`'s key and window applied before, if any. */
  add(m: MetricMessage, previous?: Record<string, number>): AddResult {
    for (const f of Object.keys(m.fields)) {
      if (!this.fieldNames.includes(f) && this.fieldNames.length < 32) {
        this.fieldNames = [...this.fieldNames, f].sort();
      }
    }
    // Search from the newest: windows mostly arrive in order.
    for (let i = this.points.size - 1; i >= 0; i--) {
      const p = this.points.at(i) as WindowPoint;
      if (p.end === m.window_end && p.start === m.window_start) {
        this.merge(p, m, previous ?? p.keys?.get(m.key));
        return 'updated';
      }
      if (p.end < m.window_end || (p.end === m.window_end && p.start < m.window_start)) break;
    }
    const point: WindowPoint = {
      start: m.window_start,
      end: m.window_end,
      fields: {},
      keyCount: 0,
      keys: new Map(),
    };
    this.merge(point, m, undefined);
    const wasLast = this.points.last();
    const appended = wasLast === undefined || m.window_end >= wasLast.end;
    if (!this.points.insertSorted(point, (p) => p.end)) return 'dropped';
    this.trimKeys();
    return appended ? 'appended' : 'inserted';
  }

  private merge(p: WindowPoint, m: MetricMessage, previous: Record<string, number> | undefined): void {
    if (previous) {
      for (const [f, v] of Object.entries(previous)) p.fields[f] = (p.fields[f] ?? 0) - v;
    } else {
      p.keyCount++;
    }
    for (const [f, v] of Object.entries(m.fields)) p.fields[f] = (p.fields[f] ?? 0) + v;
    if (p.keys) {
      if (p.keys.size >= this.options.maxKeysPerWindow && !p.keys.has(m.key)) {
        p.keys = null;
      } else {
        p.keys.set(m.key, m.fields);
      }
    }
  }

  private trimKeys(): void {
    const idx = this.points.size - 1 - this.options.keyedWindows;
    for (let i = idx; i >= 0; i--) {
      const p = this.points.at(i) as WindowPoint;
      if (p.keys === null) break;
      p.keys = null;
    }
  }

  last(): WindowPoint | undefined {
    return this.points.last();
  }

  /** Drops windows that ended before `t`. */
  pruneBefore(t: Millis): void {
    while (this.points.size > 0 && (this.points.first() as WindowPoint).end < t) this.points.shift();
  }
}

export interface KeyTotal {
  key: string;
  total: number;
  /** total / covered seconds. */
  perSec: number;
}

/**
 * Sums `field` per key over the newest `windows` windows that still hold
 * per-key values, sorted descending (ties by key), at most `limit`.
 */
export function topKeys(series: WindowSeries, windows: number, limit: number, field = 'value'): KeyTotal[] {
  const totals = new Map<string, number>();
  let coveredMs = 0;
  let used = 0;
  for (let i = series.points.size - 1; i >= 0 && used < windows; i--) {
    const p = series.points.at(i) as WindowPoint;
    if (!p.keys) break;
    used++;
    coveredMs += p.end - p.start;
    for (const [k, fields] of p.keys) {
      const v = fields[field];
      if (v !== undefined) totals.set(k, (totals.get(k) ?? 0) + v);
    }
  }
  const secs = coveredMs / 1000;
  return [...totals.entries()]
    .map(([key, total]) => ({ key, total, perSec: secs > 0 ? total / secs : 0 }))
    .sort((a, b) => b.total - a.total || (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))
    .slice(0, limit);
}

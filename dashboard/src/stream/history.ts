// Loads the selected time range from the host's `/api/history` when the
// stream (re)opens, and again when a longer range is picked, so the charts
// show the recent past at once instead of "Waiting for data…".
//
// The range is event time: it ends at the pipeline's watermark (from
// `/api/pipeline`), or at the newest output the page holds, or at the wall
// clock when neither is known yet. One load at a time; a newer one makes an
// older answer stale (it is dropped).

import type { DashboardStore } from './store';
import type { Millis } from './types';

export interface HistorySource {
  /** The pipeline's watermark (ms), null when none yet. */
  watermark(): Promise<Millis | null>;
  /** The body of `/api/history?since=<since>&types=metric,alert`. */
  history(since: Millis): Promise<string>;
}

export interface HistorySyncOptions {
  now?: () => number;
  /** Loaded before the range's start too: the view draws a minute more. */
  marginMs?: number;
}

export class HistorySync {
  private readonly store: DashboardStore;
  private readonly source: HistorySource;
  private readonly now: () => number;
  private readonly marginMs: number;
  private generation = 0;
  /** The longest range loaded since the stream last opened. */
  private loadedRangeMs = 0;

  constructor(store: DashboardStore, source: HistorySource, opts: HistorySyncOptions = {}) {
    this.store = store;
    this.source = source;
    this.now = opts.now ?? Date.now;
    this.marginMs = opts.marginMs ?? 60_000;
  }

  /** The stream opened (first connect or a reconnect): load the range. */
  onOpen(): Promise<void> {
    this.loadedRangeMs = 0;
    return this.load();
  }

  /** The range changed: a longer one than loaded is loaded. */
  onRange(): Promise<void> {
    if (this.store.rangeMs <= this.loadedRangeMs) return Promise.resolve();
    return this.load();
  }

  /** Since when to load: the range (plus the margin) before the range's end. */
  async since(): Promise<Millis> {
    let end: Millis | null = null;
    try {
      end = await this.source.watermark();
    } catch {
      // no watermark: fall back below
    }
    end ??= this.store.state.latestMetricTime ?? this.now();
    return end - this.store.rangeMs - this.marginMs;
  }

  private async load(): Promise<void> {
    const generation = ++this.generation;
    const rangeMs = this.store.rangeMs;
    this.store.beginHistory();
    try {
      const since = await this.since();
      const body = await this.source.history(since);
      if (generation !== this.generation) return;
      this.store.applyHistory(body);
      this.loadedRangeMs = Math.max(this.loadedRangeMs, rangeMs);
    } catch (e) {
      if (generation !== this.generation) return;
      this.store.historyFailed(e instanceof Error ? e.message : String(e));
    } finally {
      if (generation === this.generation) this.store.endHistory();
    }
  }
}

/** The history source of the host serving this page. */
export function httpHistorySource(fetchFn: (url: string) => Promise<Response> = (u) => fetch(u, { cache: 'no-store' }), base = ''): HistorySource {
  return {
    async watermark() {
      const res = await fetchFn(`${base}/api/pipeline`);
      if (!res.ok) return null;
      const body: unknown = await res.json();
      const wm = body && typeof body === 'object' ? (body as { watermark?: unknown }).watermark : null;
      return typeof wm === 'number' && Number.isFinite(wm) && wm > 0 ? wm : null;
    },
    async history(since) {
      const res = await fetchFn(`${base}/api/history?since=${Math.floor(since)}&types=metric,alert`);
      const text = await res.text();
      if (!res.ok) throw new Error(`GET /api/history: HTTP ${res.status} ${text.slice(0, 200)}`);
      return text;
    },
  };
}

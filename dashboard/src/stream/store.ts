// Glue between the socket and React: frames are parsed and reduced as they
// arrive; subscribers are notified at most every `flushMs` (and at least every
// `tickMs`, so ages and the critical banner expire without traffic), with a
// fresh immutable snapshot.
//
// History (`/api/history`) is merged in without gaps or double counting:
// while a load is under way the live frames are held; the history is
// applied, then the held frames in their order, so the newest value of a
// window is the one that stays (the reducer skips what it has seen).

import { parseFrame } from './parse';
import { createState, reduce, type DashboardState, type ReducerConfig } from './reducer';
import { globalTimers, type ConnectionStatus, type Timers } from './reconnect';
import { DEFAULT_VIEW_OPTIONS, selectView, type DashboardView, type ViewOptions } from './view';

export interface StreamStats {
  frames: number;
  messages: number;
  invalid: number;
  ignored: number;
  lastInvalid: string | null;
  /** Unknown message types seen (bounded). */
  ignoredTypes: string[];
}

export type HistoryState = 'idle' | 'loading' | 'loaded' | 'failed';

export interface HistoryStatus {
  state: HistoryState;
  /** Outputs in the last history answer. */
  outputs: number;
  /** Of those, the ones the page had not seen. */
  applied: number;
  /** When the last load finished, by `now()`. */
  at: number | null;
  error: string | null;
}

export interface StoreSnapshot {
  view: DashboardView;
  connection: ConnectionStatus;
  stream: StreamStats;
  history: HistoryStatus;
}

/** Live frames held during a history load, at most (then applied at once). */
export const MAX_HELD_FRAMES = 50_000;

export interface StoreOptions {
  now?: () => number;
  timers?: Timers;
  flushMs?: number;
  tickMs?: number;
  view?: Partial<Omit<ViewOptions, 'now'>>;
  reducer?: Partial<ReducerConfig>;
}

const INITIAL_CONNECTION: ConnectionStatus = {
  state: 'idle',
  failures: 0,
  retryAt: null,
  retryDelayMs: null,
  openedAt: null,
  lastError: null,
  connects: 0,
};

export class DashboardStore {
  readonly state: DashboardState;
  private readonly now: () => number;
  private readonly timers: Timers;
  private readonly flushMs: number;
  private readonly tickMs: number;
  private viewOptions: Omit<ViewOptions, 'now'>;
  private listeners = new Set<() => void>();
  private flushTimer: unknown = null;
  private tickTimer: unknown = null;
  private connection: ConnectionStatus = INITIAL_CONNECTION;
  private stream: StreamStats = { frames: 0, messages: 0, invalid: 0, ignored: 0, lastInvalid: null, ignoredTypes: [] };
  private history: HistoryStatus = { state: 'idle', outputs: 0, applied: 0, at: null, error: null };
  /** Live frames (and when they came) held while a history load runs. */
  private held: [unknown, number][] | null = null;
  private snapshot: StoreSnapshot;

  constructor(opts: StoreOptions = {}) {
    this.now = opts.now ?? Date.now;
    this.timers = opts.timers ?? globalTimers;
    this.flushMs = opts.flushMs ?? 500;
    this.tickMs = opts.tickMs ?? 1000;
    this.viewOptions = { ...DEFAULT_VIEW_OPTIONS, ...opts.view };
    this.state = createState(opts.reducer);
    this.snapshot = this.build();
  }

  /** Feeds one raw WebSocket frame. Never throws. */
  ingest(data: unknown): void {
    const at = this.now();
    if (this.held !== null) {
      this.held.push([data, at]);
      if (this.held.length >= MAX_HELD_FRAMES) this.release();
      return;
    }
    this.process(data, at);
    this.scheduleFlush();
  }

  /** A history load starts: live frames are held until `endHistory`. */
  beginHistory(): void {
    this.held ??= [];
    this.history = { ...this.history, state: 'loading', error: null };
    this.flush();
  }

  /**
   * Applies the body of `/api/history` (a JSON array of outputs, oldest
   * first). An alert from the past counts as received as long ago as it is
   * older than the newest output, so an old critical alert does not raise
   * the banner now. Returns how many outputs it held.
   */
  applyHistory(body: string): number {
    const at = this.now();
    const results = parseFrame(body, at);
    const state = this.state;
    let newest = state.latestMetricTime ?? -Infinity;
    for (const r of results) {
      if (r.kind !== 'message') continue;
      const m = r.message;
      if (m.type === 'metric' && m.window_end > newest) newest = m.window_end;
      if (m.type === 'alert' && m.time > newest) newest = m.time;
    }
    const before = state.counters.metrics + state.counters.alerts;
    let outputs = 0;
    for (const r of results) {
      if (r.kind !== 'message') {
        if (r.kind === 'invalid') {
          this.stream.invalid++;
          this.stream.lastInvalid = `history: ${r.error}`;
        }
        continue;
      }
      outputs++;
      const m = r.message;
      const receivedAt = m.type === 'alert' ? at - Math.max(0, newest - m.time) : at;
      this.reduceOne(m, receivedAt);
    }
    const applied = state.counters.metrics + state.counters.alerts - before;
    this.history = { state: 'loaded', outputs, applied, at, error: null };
    return outputs;
  }

  /** The load failed: the live stream goes on without it. */
  historyFailed(error: string): void {
    this.history = { ...this.history, state: 'failed', at: this.now(), error };
  }

  /** The load is over: the held live frames are applied, in order. */
  endHistory(): void {
    this.release();
    this.flush();
  }

  private release(): void {
    const held = this.held ?? [];
    this.held = null;
    for (const [data, at] of held) this.process(data, at);
  }

  private reduceOne(message: Parameters<typeof reduce>[1], at: number): void {
    try {
      reduce(this.state, message, at);
    } catch (e) {
      // A reducer bug must not kill the stream; count it as invalid.
      this.stream.invalid++;
      this.stream.lastInvalid = `reducer error: ${e instanceof Error ? e.message : String(e)}`;
    }
  }

  private process(data: unknown, at: number): void {
    this.stream.frames++;
    for (const r of parseFrame(data, at)) {
      if (r.kind === 'message') {
        this.stream.messages++;
        this.reduceOne(r.message, at);
      } else if (r.kind === 'ignored') {
        this.stream.ignored++;
        if (!this.stream.ignoredTypes.includes(r.type) && this.stream.ignoredTypes.length < 20) {
          this.stream.ignoredTypes = [...this.stream.ignoredTypes, r.type];
        }
      } else {
        this.stream.invalid++;
        this.stream.lastInvalid = r.error;
      }
    }
  }

  setConnection(status: ConnectionStatus): void {
    this.connection = status;
    this.flush();
  }

  setRange(rangeMs: number): void {
    this.viewOptions = { ...this.viewOptions, rangeMs };
    this.flush();
  }

  get rangeMs(): number {
    return this.viewOptions.rangeMs;
  }

  /** Starts the periodic tick. */
  start(): void {
    if (this.tickTimer !== null) return;
    const tick = () => {
      this.tickTimer = this.timers.setTimeout(tick, this.tickMs);
      this.flush();
    };
    this.tickTimer = this.timers.setTimeout(tick, this.tickMs);
  }

  stop(): void {
    if (this.tickTimer !== null) this.timers.clearTimeout(this.tickTimer);
    if (this.flushTimer !== null) this.timers.clearTimeout(this.flushTimer);
    this.tickTimer = null;
    this.flushTimer = null;
  }

  subscribe = (listener: () => void): (() => void) => {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  };

  getSnapshot = (): StoreSnapshot => this.snapshot;

  /** Rebuilds the snapshot now and notifies. */
  flush(): void {
    if (this.flushTimer !== null) {
      this.timers.clearTimeout(this.flushTimer);
      this.flushTimer = null;
    }
    this.snapshot = this.build();
    for (const l of [...this.listeners]) l();
  }

  private scheduleFlush(): void {
    if (this.flushTimer !== null) return;
    this.flushTimer = this.timers.setTimeout(() => {
      this.flushTimer = null;
      this.flush();
    }, this.flushMs);
  }

  private build(): StoreSnapshot {
    return {
      view: selectView(this.state, { ...this.viewOptions, now: this.now() }),
      connection: this.connection,
      stream: { ...this.stream },
      history: this.history,
    };
  }
}

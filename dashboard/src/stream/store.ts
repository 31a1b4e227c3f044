// Glue between the socket and React: frames are parsed and reduced as they
// arrive; subscribers are notified at most every `flushMs` (and at least every
// `tickMs`, so ages and the critical banner expire without traffic), with a
// fresh immutable snapshot.

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

export interface StoreSnapshot {
  view: DashboardView;
  connection: ConnectionStatus;
  stream: StreamStats;
}

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
    this.stream.frames++;
    for (const r of parseFrame(data, at)) {
      if (r.kind === 'message') {
        this.stream.messages++;
        try {
          reduce(this.state, r.message, at);
        } catch (e) {
          // A reducer bug must not kill the stream; count it as invalid.
          this.stream.invalid++;
          this.stream.lastInvalid = `reducer error: ${e instanceof Error ? e.message : String(e)}`;
        }
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
    this.scheduleFlush();
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
    };
  }
}

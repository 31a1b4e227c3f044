// A WebSocket that reconnects by itself, with exponential backoff and jitter.
// The socket factory, timers and random source are injected, so the policy is
// testable with fake timers and a fake socket.

import { backoffDelay, DEFAULT_BACKOFF, type BackoffPolicy } from './backoff';

/** The subset of the browser's WebSocket this module uses. */
export interface SocketLike {
  onopen: ((ev: unknown) => void) | null;
  onclose: ((ev: { code?: number; reason?: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  close(code?: number, reason?: string): void;
}

export type SocketFactory = (url: string) => SocketLike;

export interface Timers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** Timers that resolve `globalThis` at call time (so test fake timers apply). */
export const globalTimers: Timers = {
  setTimeout: (fn, ms) => globalThis.setTimeout(fn, ms),
  clearTimeout: (h) => globalThis.clearTimeout(h as ReturnType<typeof setTimeout>),
};

export type ConnectionState = 'idle' | 'connecting' | 'open' | 'waiting' | 'stopped';

export interface ConnectionStatus {
  state: ConnectionState;
  /** Consecutive failed attempts since the last successful open. */
  failures: number;
  /** When the next attempt is due (state `waiting`), by `now()`. */
  retryAt: number | null;
  /** Delay chosen for the pending retry. */
  retryDelayMs: number | null;
  /** When the current connection opened. */
  openedAt: number | null;
  lastError: string | null;
  /** Successful opens so far. */
  connects: number;
}

export interface ReconnectOptions {
  url: string;
  createSocket: SocketFactory;
  onMessage: (data: unknown) => void;
  onStatus?: (status: ConnectionStatus) => void;
  timers?: Timers;
  now?: () => number;
  random?: () => number;
  backoff?: Partial<BackoffPolicy>;
  /**
   * Close and reconnect when an open socket has received nothing for this
   * long (the host sends pipeline status about once a second). 0 disables.
   */
  staleMs?: number;
}

export class ReconnectingSocket {
  private readonly opts: ReconnectOptions;
  private readonly timers: Timers;
  private readonly now: () => number;
  private readonly random: () => number;
  private readonly policy: BackoffPolicy;
  private socket: SocketLike | null = null;
  private retryTimer: unknown = null;
  private staleTimer: unknown = null;
  private _status: ConnectionStatus = {
    state: 'idle',
    failures: 0,
    retryAt: null,
    retryDelayMs: null,
    openedAt: null,
    lastError: null,
    connects: 0,
  };

  constructor(opts: ReconnectOptions) {
    this.opts = opts;
    this.timers = opts.timers ?? globalTimers;
    this.now = opts.now ?? Date.now;
    this.random = opts.random ?? Math.random;
    this.policy = { ...DEFAULT_BACKOFF, ...opts.backoff };
  }

  get status(): ConnectionStatus {
    return this._status;
  }

  start(): void {
    if (this._status.state !== 'idle' && this._status.state !== 'stopped') return;
    this.connect();
  }

  stop(): void {
    this.clearRetry();
    this.clearStale();
    const s = this.socket;
    this.socket = null;
    if (s) {
      detach(s);
      try {
        s.close(1000, 'client stopped');
      } catch {
        // ignore
      }
    }
    this.setStatus({ state: 'stopped', retryAt: null, retryDelayMs: null, openedAt: null });
  }

  /** Skips the pending backoff and connects now. */
  retryNow(): void {
    if (this._status.state !== 'waiting') return;
    this.clearRetry();
    this.connect();
  }

  private connect(): void {
    this.setStatus({ state: 'connecting', retryAt: null, retryDelayMs: null });
    let sock: SocketLike;
    try {
      sock = this.opts.createSocket(this.opts.url);
    } catch (e) {
      this.fail(e instanceof Error ? e.message : String(e));
      return;
    }
    this.socket = sock;
    sock.onopen = () => {
      if (this.socket !== sock) return;
      this.setStatus({ state: 'open', failures: 0, openedAt: this.now(), lastError: null, connects: this._status.connects + 1 });
      this.armStale();
    };
    sock.onmessage = (ev) => {
      if (this.socket !== sock) return;
      this.armStale();
      this.opts.onMessage(ev.data);
    };
    sock.onerror = () => {
      if (this.socket !== sock) return;
      this.dropSocket(sock, 'connection error');
    };
    sock.onclose = (ev) => {
      if (this.socket !== sock) return;
      const why = ev && (ev.code || ev.reason) ? `closed (${ev.code ?? ''}${ev.reason ? ` ${ev.reason}` : ''})` : 'closed';
      this.dropSocket(sock, why);
    };
  }

  private dropSocket(sock: SocketLike, reason: string): void {
    this.socket = null;
    detach(sock);
    try {
      sock.close();
    } catch {
      // ignore
    }
    this.fail(reason);
  }

  private fail(reason: string): void {
    this.clearStale();
    const attempt = this._status.failures;
    const delay = backoffDelay(attempt, this.policy, this.random);
    this.setStatus({
      state: 'waiting',
      failures: attempt + 1,
      retryAt: this.now() + delay,
      retryDelayMs: delay,
      openedAt: null,
      lastError: reason,
    });
    this.clearRetry();
    this.retryTimer = this.timers.setTimeout(() => {
      this.retryTimer = null;
      this.connect();
    }, delay);
  }

  private armStale(): void {
    const ms = this.opts.staleMs ?? 0;
    if (ms <= 0) return;
    this.clearStale();
    this.staleTimer = this.timers.setTimeout(() => {
      this.staleTimer = null;
      const s = this.socket;
      if (s) this.dropSocket(s, `no data for ${Math.round(ms / 1000)} s`);
    }, ms);
  }

  private clearRetry(): void {
    if (this.retryTimer !== null) {
      this.timers.clearTimeout(this.retryTimer);
      this.retryTimer = null;
    }
  }

  private clearStale(): void {
    if (this.staleTimer !== null) {
      this.timers.clearTimeout(this.staleTimer);
      this.staleTimer = null;
    }
  }

  private setStatus(patch: Partial<ConnectionStatus>): void {
    this._status = { ...this._status, ...patch };
    this.opts.onStatus?.(this._status);
  }
}

function detach(s: SocketLike): void {
  s.onopen = null;
  s.onclose = null;
  s.onerror = null;
  s.onmessage = null;
}

/** The WebSocket URL of the host serving this page: `ws(s)://<host>/ws`. */
export function defaultWsUrl(loc: { protocol: string; host: string }, readToken = ''): string {
  // A browser's WebSocket cannot send headers: the read token goes in the query.
  const q = readToken ? `?access_token=${encodeURIComponent(readToken)}` : '';
  return `${loc.protocol === 'https:' ? 'wss:' : 'ws:'}//${loc.host}/ws${q}`;
}

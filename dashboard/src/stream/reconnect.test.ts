import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { defaultWsUrl, ReconnectingSocket, type ConnectionStatus, type SocketLike } from './reconnect';

class FakeSocket implements SocketLike {
  onopen: ((ev: unknown) => void) | null = null;
  onclose: ((ev: { code?: number; reason?: string }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  closed = false;
  constructor(readonly url: string) {}
  close() {
    this.closed = true;
  }
  // test helpers: what the server/network does
  open() {
    this.onopen?.({});
  }
  message(data: unknown) {
    this.onmessage?.({ data });
  }
  drop(code = 1006) {
    this.onclose?.({ code, reason: '' });
  }
  error() {
    this.onerror?.({});
  }
}

function setup(opts: { staleMs?: number; random?: () => number } = {}) {
  const sockets: FakeSocket[] = [];
  const messages: unknown[] = [];
  const statuses: ConnectionStatus[] = [];
  const rs = new ReconnectingSocket({
    url: 'ws://host/ws',
    createSocket: (url) => {
      const s = new FakeSocket(url);
      sockets.push(s);
      return s;
    },
    onMessage: (d) => messages.push(d),
    onStatus: (s) => statuses.push(s),
    random: opts.random ?? (() => 1), // no jitter: delay = base
    backoff: { initialMs: 100, factor: 2, maxMs: 1000, jitter: 0.5 },
    staleMs: opts.staleMs ?? 0,
    now: () => Date.now(),
  });
  return { rs, sockets, messages, statuses, last: () => sockets[sockets.length - 1]! };
}

/** Fails the current attempt and returns the delay chosen before the next one. */
function failAndGetDelay(t: ReturnType<typeof setup>): number {
  t.last().drop();
  expect(t.rs.status.state).toBe('waiting');
  return t.rs.status.retryDelayMs!;
}

describe('ReconnectingSocket', () => {
  beforeEach(() => {
    vi.useFakeTimers();
    vi.setSystemTime(1_764_000_000_000);
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('connects, reports open and forwards messages', () => {
    const t = setup();
    t.rs.start();
    expect(t.sockets).toHaveLength(1);
    expect(t.last().url).toBe('ws://host/ws');
    expect(t.rs.status.state).toBe('connecting');
    t.last().open();
    expect(t.rs.status.state).toBe('open');
    expect(t.rs.status.connects).toBe(1);
    t.last().message('{"type":"pipeline"}');
    expect(t.messages).toEqual(['{"type":"pipeline"}']);
  });

  it('backs off exponentially while failing, capped at maxMs', () => {
    const t = setup();
    t.rs.start();
    const delays: number[] = [];
    for (let i = 0; i < 7; i++) {
      const d = failAndGetDelay(t);
      delays.push(d);
      // nothing happens before the delay ...
      vi.advanceTimersByTime(d - 1);
      expect(t.sockets).toHaveLength(i + 1);
      // ... then exactly one new attempt
      vi.advanceTimersByTime(1);
      expect(t.sockets).toHaveLength(i + 2);
      expect(t.rs.status.state).toBe('connecting');
    }
    expect(delays).toEqual([100, 200, 400, 800, 1000, 1000, 1000]);
    expect(t.rs.status.failures).toBe(7);
  });

  it('applies jitter within the configured fraction', () => {
    const t = setup({ random: () => 0 });
    t.rs.start();
    expect(failAndGetDelay(t)).toBe(50);
    vi.advanceTimersByTime(50);
    expect(failAndGetDelay(t)).toBe(100);
  });

  it('resets the backoff after a successful connect', () => {
    const t = setup();
    t.rs.start();
    for (const expected of [100, 200, 400]) {
      expect(failAndGetDelay(t)).toBe(expected);
      vi.runOnlyPendingTimers();
    }
    t.last().open();
    expect(t.rs.status.failures).toBe(0);
    expect(t.rs.status.lastError).toBeNull();
    // the connection drops later: backoff starts again from the initial delay
    expect(failAndGetDelay(t)).toBe(100);
  });

  it('treats an error event like a close, without scheduling twice', () => {
    const t = setup();
    t.rs.start();
    const s = t.last();
    s.error();
    s.drop(); // handlers were detached: ignored
    expect(t.rs.status.failures).toBe(1);
    expect(s.closed).toBe(true);
    expect(vi.getTimerCount()).toBe(1);
    vi.advanceTimersByTime(100);
    expect(t.sockets).toHaveLength(2);
  });

  it('survives a throwing socket factory', () => {
    let calls = 0;
    const rs = new ReconnectingSocket({
      url: 'ws://bad',
      createSocket: () => {
        calls++;
        throw new Error('SyntaxError: bad url');
      },
      onMessage: () => {},
      random: () => 1,
      backoff: { initialMs: 100, factor: 2, maxMs: 1000 },
    });
    rs.start();
    expect(rs.status.state).toBe('waiting');
    expect(rs.status.lastError).toContain('bad url');
    vi.advanceTimersByTime(100);
    expect(calls).toBe(2);
    rs.stop();
  });

  it('reconnects when an open socket goes silent (stale watchdog)', () => {
    const t = setup({ staleMs: 5000 });
    t.rs.start();
    t.last().open();
    vi.advanceTimersByTime(4000);
    t.last().message('x'); // re-arms the watchdog
    vi.advanceTimersByTime(4000);
    expect(t.rs.status.state).toBe('open');
    vi.advanceTimersByTime(1000);
    expect(t.rs.status.state).toBe('waiting');
    expect(t.rs.status.lastError).toContain('no data');
    expect(t.sockets[0]!.closed).toBe(true);
    vi.advanceTimersByTime(100);
    expect(t.sockets).toHaveLength(2);
  });

  it('retryNow skips the pending delay', () => {
    const t = setup();
    t.rs.start();
    for (let i = 0; i < 4; i++) {
      failAndGetDelay(t);
      vi.runOnlyPendingTimers();
    }
    failAndGetDelay(t);
    t.rs.retryNow();
    expect(t.sockets).toHaveLength(6);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('stop() closes the socket and cancels retries', () => {
    const t = setup();
    t.rs.start();
    t.last().open();
    t.rs.stop();
    expect(t.sockets[0]!.closed).toBe(true);
    expect(t.rs.status.state).toBe('stopped');
    t.sockets[0]!.drop(); // late close event: ignored
    vi.advanceTimersByTime(60_000);
    expect(t.sockets).toHaveLength(1);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('ignores events of a socket that was replaced', () => {
    const t = setup();
    t.rs.start();
    const first = t.last();
    first.drop();
    vi.advanceTimersByTime(100);
    first.message('stale');
    first.open();
    expect(t.messages).toEqual([]);
    expect(t.rs.status.state).toBe('connecting');
  });

  it('derives the URL from the page location', () => {
    expect(defaultWsUrl({ protocol: 'http:', host: '127.0.0.1:3000' })).toBe('ws://127.0.0.1:3000/ws');
    expect(defaultWsUrl({ protocol: 'https:', host: 'rtap.example' })).toBe('wss://rtap.example/ws');
    expect(defaultWsUrl({ protocol: 'http:', host: 'h:3000' }, 'a b&c')).toBe('ws://h:3000/ws?access_token=a%20b%26c');
  });
});

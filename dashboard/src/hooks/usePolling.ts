import { useCallback, useEffect, useRef, useState } from 'react';
import type { ApiClient, ApiResult, Health } from '../api/client';
import type { ClusterView } from '../stream/cluster';
import { computeRows, type PluginRow, type PluginSnapshot } from '../stream/plugins';

export interface PluginsState {
  rows: PluginRow[];
  error: string | null;
  lastPollAt: number | null;
  loading: boolean;
}

/**
 * Polls `/api/plugins` every `intervalMs`, and soon after `signal` changes
 * (the sequence number of the newest plugin lifecycle event).
 *
 * `refresh()` resolves once a poll that *started after the call* has been
 * applied: after a plugin change, a poll already in flight may carry the old
 * list, so a fresh one is queued behind it rather than dropped.
 */
export function usePlugins(api: ApiClient, signal: number, intervalMs = 3000): PluginsState & { refresh: () => Promise<void> } {
  const [state, setState] = useState<PluginsState>({ rows: [], error: null, lastPollAt: null, loading: true });
  const prev = useRef<PluginSnapshot | null>(null);
  const inFlight = useRef<Promise<void> | null>(null);
  const queued = useRef<Promise<void> | null>(null);

  const poll = useCallback((): Promise<void> => {
    if (inFlight.current) return inFlight.current;
    const run = (async () => {
      try {
        const res = await api.plugins();
        const at = Date.now();
        if (res.ok) {
          const snap: PluginSnapshot = { at, plugins: res.data };
          const rows = computeRows(prev.current, snap);
          prev.current = snap;
          setState({ rows, error: null, lastPollAt: at, loading: false });
        } else {
          setState((s) => ({ ...s, error: res.error, lastPollAt: at, loading: false }));
        }
      } finally {
        inFlight.current = null;
      }
    })();
    inFlight.current = run;
    return run;
  }, [api]);

  const refresh = useCallback((): Promise<void> => {
    const running = inFlight.current;
    if (!running) return poll();
    if (!queued.current) {
      queued.current = running.then(() => {
        queued.current = null;
        return poll();
      });
    }
    return queued.current;
  }, [poll]);

  useEffect(() => {
    const first = setTimeout(() => void poll(), 0);
    const id = setInterval(() => void poll(), intervalMs);
    return () => {
      clearTimeout(first);
      clearInterval(id);
    };
  }, [poll, intervalMs]);

  // A lifecycle event: refresh shortly (debounced: swaps come in bursts).
  useEffect(() => {
    if (signal === 0) return;
    const id = setTimeout(() => void refresh(), 300);
    return () => clearTimeout(id);
  }, [signal, refresh]);

  return { ...state, refresh };
}

interface Polled<T> {
  data: T | null;
  error: string | null;
}

/**
 * Calls `call` at once and every `intervalMs`; the last result, until
 * unmounted. A failed poll keeps the last data when `keepOnError`, else
 * clears it.
 */
function usePolled<T>(call: () => Promise<ApiResult<T>>, intervalMs: number, keepOnError: boolean): Polled<T> {
  const [state, setState] = useState<Polled<T>>({ data: null, error: null });
  useEffect(() => {
    let cancelled = false;
    const poll = async () => {
      const res = await call();
      if (cancelled) return;
      setState((s) => (res.ok ? { data: res.data, error: null } : { data: keepOnError ? s.data : null, error: res.error }));
    };
    const first = setTimeout(() => void poll(), 0);
    const id = setInterval(() => void poll(), intervalMs);
    return () => {
      cancelled = true;
      clearTimeout(first);
      clearInterval(id);
    };
  }, [call, intervalMs, keepOnError]);
  return state;
}

export interface HealthState {
  health: Health | null;
  error: string | null;
}

export function useHealth(api: ApiClient, intervalMs = 5000): HealthState {
  const call = useCallback(() => api.health(), [api]);
  const { data, error } = usePolled(call, intervalMs, false);
  return { health: data, error };
}

export interface ClusterState {
  cluster: ClusterView | null;
  error: string | null;
}

/** Polls `/api/cluster`: the group's hosts, their roles and partitions (the last view stays on a failed poll). */
export function useCluster(api: ApiClient, intervalMs = 2000): ClusterState {
  const call = useCallback(() => api.cluster(), [api]);
  const { data, error } = usePolled(call, intervalMs, true);
  return { cluster: data, error };
}

const TOKEN_KEY = 'rtap.adminToken';

/** The admin token, kept in sessionStorage (this tab only). */
export function useAdminToken(): [string, (t: string) => void] {
  const [token, setTokenState] = useState<string>(() => {
    try {
      return sessionStorage.getItem(TOKEN_KEY) ?? '';
    } catch {
      return '';
    }
  });
  const setToken = useCallback((t: string) => {
    setTokenState(t);
    try {
      if (t) sessionStorage.setItem(TOKEN_KEY, t);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch {
      // storage unavailable: keep it in memory
    }
  }, []);
  return [token, setToken];
}

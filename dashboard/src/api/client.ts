// HTTP client for the host's API. Every call resolves (never rejects) to a
// result carrying either the data or a human-readable error: the plugin
// control endpoints may not exist yet, and the UI shows their error text.

import { parseCluster, type ClusterView } from '../stream/cluster';
import { parsePluginList, type PluginInfo } from '../stream/plugins';

export type ApiResult<T> = { ok: true; status: number; data: T } | { ok: false; status: number; error: string };

export type HealthStatus = 'ok' | 'degraded' | 'down' | 'unknown';

export interface Health {
  status: HealthStatus;
  components: Record<string, unknown>;
}

export type FetchFn = (input: string, init?: RequestInit) => Promise<Response>;

/** Extracts `{"error": "..."}`, else the body text, else the status line. */
export async function errorText(res: Response): Promise<string> {
  let body = '';
  try {
    body = await res.text();
  } catch {
    // ignore
  }
  const status = `HTTP ${res.status}${res.statusText ? ` ${res.statusText}` : ''}`;
  if (body) {
    try {
      const j: unknown = JSON.parse(body);
      if (j && typeof j === 'object' && 'error' in j) {
        const e = (j as { error: unknown }).error;
        const msg = typeof e === 'string' ? e : JSON.stringify(e);
        return `${status}: ${msg}`;
      }
    } catch {
      // not JSON
    }
    const t = body.trim().replace(/\s+/g, ' ');
    return `${status}: ${t.length > 300 ? `${t.slice(0, 300)}…` : t}`;
  }
  return status;
}

export interface UploadOptions {
  config?: Record<string, unknown>;
  resetState?: boolean;
  /** Run it beside the live version, compared, not emitted. */
  shadow?: boolean;
}

export class ApiClient {
  private readonly fetchFn: FetchFn;
  private readonly base: string;
  private readonly readToken: string;

  /** `readToken`: sent with the reads when the host has one (`--read-token`). */
  constructor(fetchFn: FetchFn = (i, init) => fetch(i, init), base = '', readToken = '') {
    this.fetchFn = fetchFn;
    this.base = base;
    this.readToken = readToken;
  }

  private async request<T>(path: string, init: RequestInit, parse: (body: unknown) => T | null, acceptStatus?: (s: number) => boolean): Promise<ApiResult<T>> {
    let res: Response;
    // Reads carry the read token; changes carry the admin token instead.
    const headers = init.method === 'GET' && this.readToken ? { ...auth(this.readToken), ...(init.headers as Record<string, string> | undefined) } : init.headers;
    try {
      res = await this.fetchFn(this.base + path, { cache: 'no-store', ...init, headers });
    } catch (e) {
      return { ok: false, status: 0, error: `Network error: ${e instanceof Error ? e.message : String(e)}` };
    }
    if (!res.ok && !(acceptStatus?.(res.status) ?? false)) {
      return { ok: false, status: res.status, error: await errorText(res) };
    }
    if (res.status === 204) {
      const data = parse(null);
      return data === null ? { ok: false, status: res.status, error: 'Empty response' } : { ok: true, status: res.status, data };
    }
    let body: unknown;
    try {
      const text = await res.text();
      body = text ? JSON.parse(text) : null;
    } catch {
      return { ok: false, status: res.status, error: `HTTP ${res.status}: response is not JSON` };
    }
    const data = parse(body);
    if (data === null) return { ok: false, status: res.status, error: `HTTP ${res.status}: unexpected response shape` };
    return { ok: true, status: res.status, data };
  }

  health(): Promise<ApiResult<Health>> {
    return this.request(
      '/health',
      { method: 'GET' },
      (b) => {
        if (!b || typeof b !== 'object') return null;
        const o = b as Record<string, unknown>;
        const st = o.status;
        const status: HealthStatus = st === 'ok' || st === 'degraded' || st === 'down' ? st : 'unknown';
        const components = o.components && typeof o.components === 'object' ? (o.components as Record<string, unknown>) : {};
        return { status, components };
      },
      (s) => s === 503,
    );
  }

  plugins(): Promise<ApiResult<PluginInfo[]>> {
    return this.request('/api/plugins', { method: 'GET' }, parsePluginList);
  }

  /** Every host of the group (`GET /api/cluster`). */
  cluster(): Promise<ApiResult<ClusterView>> {
    return this.request('/api/cluster', { method: 'GET' }, parseCluster);
  }

  uploadPlugin(name: string, wasm: Blob | ArrayBuffer, token: string, opts: UploadOptions = {}): Promise<ApiResult<unknown>> {
    const q = new URLSearchParams();
    if (opts.config !== undefined) q.set('config', JSON.stringify(opts.config));
    if (opts.resetState) q.set('state', 'reset');
    if (opts.shadow) q.set('mode', 'shadow');
    const qs = q.toString();
    return this.request(
      `/api/plugins/${encodeURIComponent(name)}${qs ? `?${qs}` : ''}`,
      { method: 'PUT', headers: { ...auth(token), 'Content-Type': 'application/wasm' }, body: wasm },
      anyBody,
    );
  }

  patchConfig(name: string, config: Record<string, unknown>, token: string): Promise<ApiResult<unknown>> {
    return this.request(
      `/api/plugins/${encodeURIComponent(name)}/config`,
      { method: 'PATCH', headers: { ...auth(token), 'Content-Type': 'application/json' }, body: JSON.stringify(config) },
      anyBody,
    );
  }

  rollback(name: string, token: string): Promise<ApiResult<unknown>> {
    return this.request(`/api/plugins/${encodeURIComponent(name)}/rollback`, { method: 'POST', headers: auth(token) }, anyBody);
  }

  promoteShadow(name: string, token: string): Promise<ApiResult<unknown>> {
    return this.request(`/api/plugins/${encodeURIComponent(name)}/shadow/promote`, { method: 'POST', headers: auth(token) }, anyBody);
  }

  discardShadow(name: string, token: string): Promise<ApiResult<unknown>> {
    return this.request(`/api/plugins/${encodeURIComponent(name)}/shadow`, { method: 'DELETE', headers: auth(token) }, anyBody);
  }

  remove(name: string, token: string): Promise<ApiResult<unknown>> {
    return this.request(`/api/plugins/${encodeURIComponent(name)}`, { method: 'DELETE', headers: auth(token) }, anyBody);
  }
}

/**
 * Whether reading needs a token, and whether `token` is it: `GET
 * /api/pipeline` answers 401 without one, 403 with a wrong one. A host
 * that cannot be reached counts as `ok`: the dashboard then shows it as
 * unreachable.
 */
export async function checkReadToken(token: string, fetchFn: FetchFn = (i, init) => fetch(i, init), base = ''): Promise<'ok' | 'needed' | 'wrong'> {
  try {
    const res = await fetchFn(`${base}/api/pipeline`, { cache: 'no-store', headers: auth(token) });
    if (res.status === 401) return 'needed';
    if (res.status === 403) return 'wrong';
    return 'ok';
  } catch {
    return 'ok';
  }
}

function auth(token: string): Record<string, string> {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

const anyBody = (b: unknown): unknown => b ?? {};

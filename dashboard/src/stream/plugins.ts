// The host's `/api/plugins` model: lenient parsing, throughput from
// successive polls, config validation.

export type WindowSpec =
  | { type: 'tumbling'; size_ms: number }
  | { type: 'sliding'; size_ms: number; slide_ms: number }
  | { type: 'session'; gap_ms: number }
  | { type: 'none' }
  | { type: 'unknown'; raw: string };

export interface PluginCounters {
  events_in: number;
  calls: number;
  outputs: number;
  traps: number;
  timeouts: number;
  /** Calls that ran out of their memory cap. */
  out_of_memory: number;
  /** Calls the plugin failed itself or that broke the contract. */
  errors: number;
  dead_lettered: number;
}

/** A plugin's log (`info!`, stdout, stderr), as `/api/plugins` sums it up. */
/** A shadow version running beside the live one (`PUT ?mode=shadow`): its
 * outputs are compared per window and alert id, not emitted. */
export interface ShadowSummary {
  version: string;
  hash: string;
  /** How its state began: a copy of the live state, migrated, or empty and why. */
  state: string;
  /** running or degraded */
  status: string;
  events: number;
  compared: number;
  equal: number;
  different: number;
}

export interface PluginLogSummary {
  /** Lines kept by the host (past its per-plugin rate limit). */
  lines: number;
  /** Lines dropped by the rate limit. */
  dropped: number;
  last: { level: string; stream: string; message: string; time: number } | null;
}

export interface PluginInfo {
  name: string;
  version: string;
  kind: string;
  input: string;
  key_by: string;
  window: WindowSpec;
  hash: string;
  state_schema: string;
  status: string;
  loaded_at: number | null;
  config: unknown;
  counters: PluginCounters;
  previous: { version: string; hash: string } | null;
  logs: PluginLogSummary | null;
  shadow: ShadowSummary | null;
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const num = (v: unknown): number => (typeof v === 'number' && Number.isFinite(v) ? v : 0);
const s = (v: unknown, d = ''): string => (typeof v === 'string' ? v : v == null ? d : String(v));

function parseWindow(v: unknown): WindowSpec {
  if (!isObj(v)) return { type: 'none' };
  switch (v.type) {
    case 'tumbling':
      return { type: 'tumbling', size_ms: num(v.size_ms) };
    case 'sliding':
      return { type: 'sliding', size_ms: num(v.size_ms), slide_ms: num(v.slide_ms) };
    case 'session':
      return { type: 'session', gap_ms: num(v.gap_ms) };
    case 'none':
    case undefined:
      return { type: 'none' };
    default:
      return { type: 'unknown', raw: JSON.stringify(v).slice(0, 80) };
  }
}

function parseLogs(v: unknown): PluginLogSummary | null {
  if (!isObj(v)) return null;
  const l = isObj(v.last) ? v.last : null;
  return {
    lines: num(v.lines),
    dropped: num(v.dropped),
    last: l ? { level: s(l.level), stream: s(l.stream), message: s(l.message), time: num(l.time) } : null,
  };
}

function parseShadow(v: unknown): ShadowSummary | null {
  if (!isObj(v) || typeof v.version !== 'string') return null;
  return {
    version: v.version,
    hash: s(v.hash),
    state: s(v.state),
    status: s(v.status, 'running'),
    events: num(v.events),
    compared: num(v.compared),
    equal: num(v.equal),
    different: num(v.different),
  };
}

export function parsePlugin(v: unknown): PluginInfo | null {
  if (!isObj(v) || typeof v.name !== 'string' || v.name === '') return null;
  const c = isObj(v.counters) ? v.counters : {};
  const prev = isObj(v.previous) ? { version: s(v.previous.version), hash: s(v.previous.hash) } : null;
  return {
    name: v.name,
    version: s(v.version),
    kind: s(v.kind),
    input: s(v.input),
    key_by: s(v.key_by),
    window: parseWindow(v.window),
    hash: s(v.hash),
    state_schema: typeof v.state_schema === 'string' ? v.state_schema : v.state_schema == null ? '' : JSON.stringify(v.state_schema),
    status: s(v.status, 'unknown'),
    loaded_at: typeof v.loaded_at === 'number' && Number.isFinite(v.loaded_at) ? v.loaded_at : null,
    config: v.config ?? {},
    counters: {
      events_in: num(c.events_in),
      calls: num(c.calls),
      outputs: num(c.outputs),
      traps: num(c.traps),
      timeouts: num(c.timeouts),
      out_of_memory: num(c.out_of_memory),
      errors: num(c.errors),
      dead_lettered: num(c.dead_lettered),
    },
    previous: prev,
    logs: parseLogs(v.logs),
    shadow: parseShadow(v.shadow),
  };
}

/** Parses the `/api/plugins` body: an array (or `{ "plugins": [...] }`). */
export function parsePluginList(v: unknown): PluginInfo[] | null {
  const arr = Array.isArray(v) ? v : isObj(v) && Array.isArray(v.plugins) ? v.plugins : null;
  if (!arr) return null;
  const out: PluginInfo[] = [];
  for (const item of arr) {
    const p = parsePlugin(item);
    if (p) out.push(p);
  }
  return out;
}

export interface PluginSnapshot {
  /** Wall-clock time of the poll. */
  at: number;
  plugins: PluginInfo[];
}

export interface PluginRow extends PluginInfo {
  /** events_in per second between the last two polls; null on the first poll or after a counter reset. */
  eventsPerSec: number | null;
  outputsPerSec: number | null;
  /** Failed calls of every kind (traps, timeouts, out of memory, plugin
   * errors) + dead-lettered events. */
  errors: number;
}

/** Joins a poll with the previous one to compute per-plugin rates. */
export function computeRows(prev: PluginSnapshot | null, next: PluginSnapshot): PluginRow[] {
  const before = new Map(prev?.plugins.map((p) => [p.name, p]) ?? []);
  const dt = prev ? (next.at - prev.at) / 1000 : 0;
  return next.plugins.map((p) => {
    const b = before.get(p.name);
    const rate = (now: number, then: number | undefined): number | null =>
      b !== undefined && then !== undefined && dt > 0 && now >= then ? (now - then) / dt : null;
    return {
      ...p,
      eventsPerSec: rate(p.counters.events_in, b?.counters.events_in),
      outputsPerSec: rate(p.counters.outputs, b?.counters.outputs),
      errors:
        p.counters.traps +
        p.counters.timeouts +
        p.counters.out_of_memory +
        p.counters.errors +
        p.counters.dead_lettered,
    };
  });
}

export function describeWindow(w: WindowSpec): string {
  switch (w.type) {
    case 'tumbling':
      return `tumbling ${formatSpan(w.size_ms)}`;
    case 'sliding':
      return `sliding ${formatSpan(w.size_ms)} / ${formatSpan(w.slide_ms)}`;
    case 'session':
      return `session gap ${formatSpan(w.gap_ms)}`;
    case 'none':
      return '—';
    case 'unknown':
      return w.raw;
  }
}

function formatSpan(ms: number): string {
  if (ms >= 3_600_000 && ms % 3_600_000 === 0) return `${ms / 3_600_000} h`;
  if (ms >= 60_000 && ms % 60_000 === 0) return `${ms / 60_000} min`;
  if (ms >= 1000 && ms % 1000 === 0) return `${ms / 1000} s`;
  return `${ms} ms`;
}

export type ConfigValidation = { ok: true; value: Record<string, unknown> } | { ok: false; error: string };

/** A plugin config must be a JSON object. */
export function validateConfigJson(text: string): ConfigValidation {
  if (text.trim() === '') return { ok: false, error: 'Config is empty; use {} for no settings.' };
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    return { ok: false, error: `Invalid JSON: ${e instanceof Error ? e.message : String(e)}` };
  }
  if (!isObj(v)) return { ok: false, error: 'Config must be a JSON object, e.g. {"threshold": 10}.' };
  return { ok: true, value: v };
}

/** Plugin names are `[a-z0-9-]+` (see wit/plugin.wit). */
export function isValidPluginName(name: string): boolean {
  return /^[a-z0-9-]+$/.test(name);
}

/** Guesses a plugin name from a file name: `bot_burst-1.2.0.wasm` → `bot-burst`. */
export function pluginNameFromFile(fileName: string): string {
  const base = fileName.replace(/\.wasm$/i, '').toLowerCase();
  const noVersion = base.replace(/[-_@]v?\d+(\.\d+)*([-+][\w.]+)?$/, '');
  return noVersion.replace(/_/g, '-').replace(/[^a-z0-9-]/g, '');
}

/**
 * One line for the control API's 200 answer: the swap report of PUT / PATCH
 * config / rollback (`{plugin, from_version, to_version, hash,
 * states_migrated, state_reset, stall_us, compile_ms?}`), PUT's
 * `{plugin, unchanged: true, hash}` or DELETE's `{plugin, removed: true}`.
 * Null when the body has none of these shapes.
 */
export function describeChangeReport(v: unknown): string | null {
  if (!isObj(v) || typeof v.plugin !== 'string') return null;
  const name = v.plugin;
  if (v.removed === true) return `${name} removed.`;
  if (v.unchanged === true) return `${name} already runs this build; nothing changed.`;
  if (v.mode === 'shadow' && isObj(v.shadow) && isObj(v.live)) {
    return `${name} ${s(v.shadow.version)} runs as a shadow of ${s(v.live.version)}: compared, not emitted (state: ${s(v.state)}).`;
  }
  if (v.discarded === true) {
    const r = isObj(v.report) ? v.report : {};
    return `${name}: shadow discarded after ${num(r.compared)} compared, ${num(r.different)} different.`;
  }
  if (v.promoted === true) {
    const r = isObj(v.report) ? v.report : {};
    return `${name} ${s(v.from_version)} → ${s(v.to_version)}: the shadow is live (${num(r.compared)} compared, ${num(r.different)} different).`;
  }
  if (typeof v.to_version !== 'string') return null;
  const from = typeof v.from_version === 'string' ? v.from_version : null;
  const parts: string[] = [];
  if (v.state_reset === true) parts.push('state reset');
  else if (typeof v.states_migrated === 'number' && v.states_migrated > 0) parts.push(`${v.states_migrated} state${v.states_migrated === 1 ? '' : 's'} migrated`);
  else if (from !== null) parts.push('state kept');
  if (typeof v.stall_us === 'number') parts.push(`stall ${v.stall_us < 1000 ? `${v.stall_us} µs` : `${(v.stall_us / 1000).toFixed(1)} ms`}`);
  if (typeof v.compile_ms === 'number') parts.push(`compiled in ${v.compile_ms.toFixed(0)} ms`);
  const head = from === null ? `${name} ${v.to_version} added` : from === v.to_version ? `${name} ${v.to_version} reconfigured` : `${name} ${from} → ${v.to_version}`;
  return parts.length > 0 ? `${head} (${parts.join(', ')}).` : `${head}.`;
}

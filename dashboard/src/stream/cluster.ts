// The group's hosts, as `GET /api/cluster` reports them: every host of the
// Kafka consumer group (one host without Kafka), its role, input
// partitions, key groups and lag, and the group's last rebalance.

export type HostRole = 'starting' | 'standby' | 'restoring' | 'active' | 'unknown';

export interface Takeover {
  /** Wall-clock ms when the host began processing. */
  at: number;
  /** `local`, `changelog` or `empty`. */
  stateFrom: string;
  restoreMs: number;
  afterStandby: boolean;
}

export interface ClusterHost {
  id: string;
  api: string;
  role: HostRole;
  /** `live`, or `lost` once its records stopped. */
  status: 'live' | 'lost';
  partitions: number[];
  keyGroups: number[];
  lagTotal: number;
  workers: number;
  eventsIn: number;
  seenMsAgo: number;
  takeover: Takeover | null;
  version: string;
  /** The host that answered. */
  self: boolean;
}

export interface ClusterView {
  group: string | null;
  complete: boolean;
  hosts: ClusterHost[];
  lastRebalance: (Takeover & { host: string }) | null;
}

const ROLES: HostRole[] = ['starting', 'standby', 'restoring', 'active'];

const num = (v: unknown, d = 0): number => (typeof v === 'number' && Number.isFinite(v) ? v : d);
const ints = (v: unknown): number[] => (Array.isArray(v) ? v.filter((x): x is number => typeof x === 'number' && Number.isInteger(x)) : []);

function parseTakeover(v: unknown): Takeover | null {
  if (!v || typeof v !== 'object') return null;
  const o = v as Record<string, unknown>;
  if (typeof o.at !== 'number') return null;
  return {
    at: o.at,
    stateFrom: typeof o.state_from === 'string' ? o.state_from : 'unknown',
    restoreMs: num(o.restore_ms),
    afterStandby: o.after_standby === true,
  };
}

function parseHost(v: unknown): ClusterHost | null {
  if (!v || typeof v !== 'object') return null;
  const o = v as Record<string, unknown>;
  if (typeof o.id !== 'string' || !o.id) return null;
  const lag = o.lag && typeof o.lag === 'object' ? Object.values(o.lag as Record<string, unknown>) : [];
  return {
    id: o.id,
    api: typeof o.api === 'string' ? o.api : '',
    role: ROLES.includes(o.role as HostRole) ? (o.role as HostRole) : 'unknown',
    status: o.status === 'lost' ? 'lost' : 'live',
    partitions: ints(o.partitions),
    keyGroups: ints(o.key_groups),
    lagTotal: lag.reduce<number>((acc, x) => acc + num(x), 0),
    workers: num(o.workers),
    eventsIn: num(o.events_in),
    seenMsAgo: num(o.seen_ms_ago),
    takeover: parseTakeover(o.takeover),
    version: typeof o.version === 'string' ? o.version : '',
    self: o.this === true,
  };
}

/** Parses `GET /api/cluster` leniently; `null` when it is not that shape. */
export function parseCluster(body: unknown): ClusterView | null {
  if (!body || typeof body !== 'object') return null;
  const o = body as Record<string, unknown>;
  if (!Array.isArray(o.hosts)) return null;
  const hosts = o.hosts.map(parseHost).filter((h): h is ClusterHost => h !== null);
  const rb = parseTakeover(o.last_rebalance);
  const rbHost = o.last_rebalance && typeof o.last_rebalance === 'object' ? (o.last_rebalance as Record<string, unknown>).host : null;
  return {
    group: typeof o.group === 'string' ? o.group : null,
    complete: o.complete !== false,
    hosts,
    lastRebalance: rb && typeof rbHost === 'string' ? { ...rb, host: rbHost } : null,
  };
}

/** `[0,1,2,3,7,9,10]` → `0–3, 7, 9–10`; `—` when empty. */
export function fmtRanges(xs: number[]): string {
  if (xs.length === 0) return '—';
  const s = [...new Set(xs)].sort((a, b) => a - b);
  const out: string[] = [];
  let start = s[0]!;
  let prev = start;
  for (const x of s.slice(1).concat([Number.NaN])) {
    if (x === prev + 1) {
      prev = x;
      continue;
    }
    out.push(start === prev ? String(start) : `${start}–${prev}`);
    start = x;
    prev = x;
  }
  return out.join(', ');
}

/** What the last rebalance did, in words. */
export function describeRebalance(r: Takeover & { host: string }): string {
  const verb = r.afterStandby ? 'took over' : 'started';
  if (r.stateFrom === 'empty') return `${r.host} ${verb} with empty state`;
  const from = r.stateFrom === 'changelog' ? 'the changelog' : r.stateFrom === 'local' ? 'its data dir' : r.stateFrom;
  return `${r.host} ${verb}, state restored from ${from} in ${r.restoreMs} ms`;
}

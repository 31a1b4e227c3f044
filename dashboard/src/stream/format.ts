// Number and time formatting for the dashboard. All functions return '—' for
// missing values so a stat box never collapses.

export const DASH = '—';

const isNum = (v: number | null | undefined): v is number => typeof v === 'number' && Number.isFinite(v);

/** Fixed number of decimals, thousands separators. */
export function fmtNumber(v: number | null | undefined, decimals = 0): string {
  if (!isNum(v)) return DASH;
  return v.toLocaleString('en-US', { minimumFractionDigits: decimals, maximumFractionDigits: decimals });
}

/** 3 significant-ish digits with k/M/G suffixes: 950, 1.23k, 45.6k, 1.20M. */
export function fmtCompact(v: number | null | undefined): string {
  if (!isNum(v)) return DASH;
  const a = Math.abs(v);
  const units: [number, string][] = [
    [1e9, 'G'],
    [1e6, 'M'],
    [1e3, 'k'],
  ];
  for (const [n, u] of units) {
    if (a >= n) {
      const x = v / n;
      return `${x.toFixed(Math.abs(x) >= 100 ? 0 : Math.abs(x) >= 10 ? 1 : 2)}${u}`;
    }
  }
  if (Number.isInteger(v)) return String(v);
  return v.toFixed(a >= 100 ? 0 : a >= 10 ? 1 : 2);
}

/** A 0..1 fraction as a percentage. */
export function fmtPercent(fraction: number | null | undefined, decimals = 1): string {
  if (!isNum(fraction)) return DASH;
  return `${(fraction * 100).toFixed(decimals)}%`;
}

/** Milliseconds as ms / s / min / h. */
export function fmtDuration(ms: number | null | undefined): string {
  if (!isNum(ms)) return DASH;
  const a = Math.abs(ms);
  if (a < 1) return `${ms.toFixed(2)} ms`;
  if (a < 10) return `${ms.toFixed(1)} ms`;
  if (a < 1000) return `${ms.toFixed(0)} ms`;
  if (a < 60_000) return `${(ms / 1000).toFixed(a < 10_000 ? 2 : 1)} s`;
  if (a < 3_600_000) return `${(ms / 60_000).toFixed(1)} min`;
  return `${(ms / 3_600_000).toFixed(1)} h`;
}

const pad = (n: number) => String(n).padStart(2, '0');

/** Local wall-clock time HH:MM:SS. */
export function fmtClock(t: number | null | undefined): string {
  if (!isNum(t)) return DASH;
  const d = new Date(t);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** "5 s ago", "3 min ago", "in 2 s" (clock skew). */
export function fmtAge(t: number | null | undefined, now: number): string {
  if (!isNum(t)) return DASH;
  const d = now - t;
  const a = Math.abs(d);
  const span = a < 60_000 ? `${Math.round(a / 1000)} s` : a < 3_600_000 ? `${Math.round(a / 60_000)} min` : `${(a / 3_600_000).toFixed(1)} h`;
  return d >= -500 ? `${span} ago` : `in ${span}`;
}

/** First `n` hex digits of a content hash. */
export function shortHash(h: string | null | undefined, n = 12): string {
  if (!h) return DASH;
  return h.replace(/^sha256:/, '').slice(0, n);
}

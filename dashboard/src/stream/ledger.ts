// What the dashboard has already applied, by identity, so that an output
// arriving twice — in `/api/history` and on `/ws`, or in two history loads
// after reconnects — counts once, and a re-fired window (a late update)
// replaces its earlier value instead of adding to it.
//
// Entries are filed by time (a metric's window end, an alert's time) and
// forgotten once they are `horizonMs` older than the newest time seen, or,
// past `maxEntries`, oldest first (down to 90 % of it): memory stays bounded
// however long the page is open.

import type { Millis } from './types';

export interface LedgerOptions {
  /** Entries older than this before the newest time are forgotten. */
  horizonMs: number;
  /** At most this many entries (the oldest go first). */
  maxEntries: number;
}

export class Ledger<V> {
  readonly options: LedgerOptions;
  private buckets = new Map<Millis, Map<string, V>>();
  private newest = -Infinity;
  private prunedAt = -Infinity;
  private count = 0;

  constructor(options: LedgerOptions) {
    this.options = options;
  }

  get size(): number {
    return this.count;
  }

  get(t: Millis, id: string): V | undefined {
    return this.buckets.get(t)?.get(id);
  }

  /** Records `value` for `id` at `t`; returns the value it replaces. */
  set(t: Millis, id: string, value: V): V | undefined {
    let bucket = this.buckets.get(t);
    if (!bucket) {
      bucket = new Map();
      this.buckets.set(t, bucket);
    }
    const previous = bucket.get(id);
    bucket.set(id, value);
    if (previous === undefined) this.count++;
    if (t > this.newest) this.newest = t;
    // Pruning scans every bucket: do it once per 5 s of newest time, or at the cap.
    if (this.newest - this.prunedAt >= 5_000 || this.count > this.options.maxEntries) this.prune();
    return previous;
  }

  private prune(): void {
    this.prunedAt = this.newest;
    const cutoff = this.newest - this.options.horizonMs;
    for (const [t, bucket] of this.buckets) {
      if (t < cutoff) this.drop(t, bucket);
    }
    if (this.count > this.options.maxEntries) {
      // Down to 90 %, so that a full ledger does not sort on every insert.
      const target = Math.floor(this.options.maxEntries * 0.9);
      const times = [...this.buckets.keys()].sort((a, b) => a - b);
      for (const t of times) {
        if (this.count <= target) break;
        this.drop(t, this.buckets.get(t) as Map<string, V>);
      }
    }
  }

  private drop(t: Millis, bucket: Map<string, V>): void {
    this.count -= bucket.size;
    this.buckets.delete(t);
  }
}

/** Exponential backoff with jitter, capped. */
export interface BackoffPolicy {
  /** Delay before the first retry, before jitter. */
  initialMs: number;
  /** Growth per consecutive failure. */
  factor: number;
  /** Upper bound of any delay, jitter included. */
  maxMs: number;
  /**
   * Fraction of the delay that is randomised, 0..1: the delay is drawn
   * uniformly from `[base * (1 - jitter), base]`.
   */
  jitter: number;
}

export const DEFAULT_BACKOFF: BackoffPolicy = {
  initialMs: 500,
  factor: 2,
  maxMs: 30_000,
  jitter: 0.5,
};

/** Delay before retry number `attempt` (0 = first retry after a failure). */
export function backoffBase(attempt: number, policy: BackoffPolicy = DEFAULT_BACKOFF): number {
  const n = Math.max(0, Math.floor(attempt));
  // Clamp the exponent so factor ** n cannot overflow to Infinity.
  const raw = policy.initialMs * Math.pow(policy.factor, Math.min(n, 64));
  return Math.min(policy.maxMs, Number.isFinite(raw) ? raw : policy.maxMs);
}

export function backoffDelay(
  attempt: number,
  policy: BackoffPolicy = DEFAULT_BACKOFF,
  random: () => number = Math.random,
): number {
  const base = backoffBase(attempt, policy);
  const j = Math.min(1, Math.max(0, policy.jitter));
  const r = Math.min(1, Math.max(0, random()));
  return Math.round(base * (1 - j) + base * j * r);
}

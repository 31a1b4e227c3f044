import { describe, expect, it } from 'vitest';
import { backoffBase, backoffDelay, DEFAULT_BACKOFF } from './backoff';

const policy = { initialMs: 500, factor: 2, maxMs: 30_000, jitter: 0.5 };

describe('backoff', () => {
  it('grows exponentially and is capped', () => {
    expect([0, 1, 2, 3, 4, 5, 6, 7].map((a) => backoffBase(a, policy))).toEqual([500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]);
    expect(backoffBase(10_000, policy)).toBe(30_000);
    expect(backoffBase(-3, policy)).toBe(500);
  });

  it('jitters within [base * (1 - jitter), base], never above the cap', () => {
    expect(backoffDelay(3, policy, () => 0)).toBe(2000);
    expect(backoffDelay(3, policy, () => 1)).toBe(4000);
    expect(backoffDelay(3, policy, () => 0.5)).toBe(3000);
    for (let a = 0; a < 50; a++) {
      const d = backoffDelay(a, policy, Math.random);
      expect(d).toBeGreaterThanOrEqual(backoffBase(a, policy) * 0.5 - 1);
      expect(d).toBeLessThanOrEqual(policy.maxMs);
    }
  });

  it('has sane defaults', () => {
    expect(DEFAULT_BACKOFF.maxMs).toBeGreaterThan(DEFAULT_BACKOFF.initialMs);
    expect(backoffDelay(100)).toBeLessThanOrEqual(DEFAULT_BACKOFF.maxMs);
  });
});

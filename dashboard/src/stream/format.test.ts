import { describe, expect, it } from 'vitest';
import { DASH, fmtAge, fmtCompact, fmtDuration, fmtNumber, fmtPercent, shortHash } from './format';

describe('format', () => {
  it('formats numbers and missing values', () => {
    expect(fmtNumber(1234.567, 1)).toBe('1,234.6');
    expect(fmtNumber(null)).toBe(DASH);
    expect(fmtNumber(NaN)).toBe(DASH);
    expect(fmtCompact(950)).toBe('950');
    expect(fmtCompact(1234)).toBe('1.23k');
    expect(fmtCompact(45_600)).toBe('45.6k');
    expect(fmtCompact(1_200_000)).toBe('1.20M');
    expect(fmtPercent(0.1234)).toBe('12.3%');
    expect(fmtPercent(undefined)).toBe(DASH);
  });

  it('formats durations', () => {
    expect(fmtDuration(0.5)).toBe('0.50 ms');
    expect(fmtDuration(3.21)).toBe('3.2 ms');
    expect(fmtDuration(250)).toBe('250 ms');
    expect(fmtDuration(1500)).toBe('1.50 s');
    expect(fmtDuration(90_000)).toBe('1.5 min');
    expect(fmtDuration(7_200_000)).toBe('2.0 h');
  });

  it('formats ages and hashes', () => {
    expect(fmtAge(1000, 6000)).toBe('5 s ago');
    expect(fmtAge(0, 180_000)).toBe('3 min ago');
    expect(fmtAge(10_000, 0)).toBe('in 10 s');
    expect(fmtAge(null, 0)).toBe(DASH);
    expect(shortHash('sha256:0123456789abcdef0123')).toBe('0123456789ab');
    expect(shortHash('')).toBe(DASH);
  });
});

import { describe, expect, it } from 'vitest';
import { RingBuffer } from './ringBuffer';

describe('RingBuffer', () => {
  it('rejects a non-positive capacity', () => {
    expect(() => new RingBuffer(0)).toThrow(RangeError);
    expect(() => new RingBuffer(1.5)).toThrow(RangeError);
  });

  it('keeps insertion order below capacity', () => {
    const r = new RingBuffer<number>(4);
    r.push(1);
    r.push(2);
    r.push(3);
    expect(r.size).toBe(3);
    expect(r.toArray()).toEqual([1, 2, 3]);
    expect(r.first()).toBe(1);
    expect(r.last()).toBe(3);
  });

  it('is bounded: evicts the oldest and returns it', () => {
    const r = new RingBuffer<number>(3);
    const evicted: (number | undefined)[] = [];
    for (let i = 1; i <= 10; i++) evicted.push(r.push(i));
    expect(r.size).toBe(3);
    expect(r.toArray()).toEqual([8, 9, 10]);
    expect(evicted.slice(0, 3)).toEqual([undefined, undefined, undefined]);
    expect(evicted.slice(3)).toEqual([1, 2, 3, 4, 5, 6, 7]);
  });

  it('stays bounded over a long run', () => {
    const r = new RingBuffer<number>(100);
    for (let i = 0; i < 100_000; i++) r.push(i);
    expect(r.size).toBe(100);
    expect(r.first()).toBe(99_900);
    expect(r.last()).toBe(99_999);
  });

  it('indexes from both ends and iterates oldest first', () => {
    const r = new RingBuffer<string>(3);
    ['a', 'b', 'c', 'd'].forEach((x) => r.push(x));
    expect(r.at(0)).toBe('b');
    expect(r.at(-1)).toBe('d');
    expect(r.at(3)).toBeUndefined();
    expect(r.at(-4)).toBeUndefined();
    expect([...r]).toEqual(['b', 'c', 'd']);
    expect(r.newestFirst()).toEqual(['d', 'c', 'b']);
    expect(r.newestFirst(2)).toEqual(['d', 'c']);
  });

  it('shifts and clears', () => {
    const r = new RingBuffer<number>(2);
    r.push(1);
    r.push(2);
    r.push(3);
    expect(r.shift()).toBe(2);
    expect(r.toArray()).toEqual([3]);
    r.push(4);
    r.push(5);
    expect(r.toArray()).toEqual([4, 5]);
    r.clear();
    expect(r.size).toBe(0);
    expect(r.shift()).toBeUndefined();
    expect(r.toArray()).toEqual([]);
  });

  it('inserts out-of-order items in sorted position, dropping the oldest when full', () => {
    const r = new RingBuffer<number>(4);
    for (const x of [10, 20, 40]) expect(r.insertSorted(x, (v) => v)).toBe(true);
    expect(r.insertSorted(30, (v) => v)).toBe(true);
    expect(r.toArray()).toEqual([10, 20, 30, 40]);
    // Full: an item older than everything is dropped.
    expect(r.insertSorted(5, (v) => v)).toBe(false);
    expect(r.toArray()).toEqual([10, 20, 30, 40]);
    // Full: a middle insert evicts the oldest.
    expect(r.insertSorted(25, (v) => v)).toBe(true);
    expect(r.toArray()).toEqual([20, 25, 30, 40]);
    expect(r.size).toBe(4);
  });
});

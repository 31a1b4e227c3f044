/**
 * Fixed-capacity FIFO: pushing onto a full buffer evicts the oldest item.
 * Index 0 is the oldest item. All operations but `insertSorted` are O(1).
 */
export class RingBuffer<T> {
  readonly capacity: number;
  private buf: (T | undefined)[];
  private head = 0; // index of the oldest item
  private len = 0;

  constructor(capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) {
      throw new RangeError(`RingBuffer capacity must be a positive integer, got ${capacity}`);
    }
    this.capacity = capacity;
    this.buf = new Array<T | undefined>(capacity);
  }

  get size(): number {
    return this.len;
  }

  get isFull(): boolean {
    return this.len === this.capacity;
  }

  /** Appends `item`; returns the evicted oldest item when the buffer was full. */
  push(item: T): T | undefined {
    if (this.len < this.capacity) {
      this.buf[(this.head + this.len) % this.capacity] = item;
      this.len++;
      return undefined;
    }
    const evicted = this.buf[this.head];
    this.buf[this.head] = item;
    this.head = (this.head + 1) % this.capacity;
    return evicted;
  }

  /** Removes and returns the oldest item. */
  shift(): T | undefined {
    if (this.len === 0) return undefined;
    const item = this.buf[this.head];
    this.buf[this.head] = undefined;
    this.head = (this.head + 1) % this.capacity;
    this.len--;
    return item;
  }

  /** Item at `index` (0 = oldest); negative indexes count from the newest (-1 = newest). */
  at(index: number): T | undefined {
    const i = index < 0 ? this.len + index : index;
    if (i < 0 || i >= this.len) return undefined;
    return this.buf[(this.head + i) % this.capacity];
  }

  first(): T | undefined {
    return this.at(0);
  }

  last(): T | undefined {
    return this.at(-1);
  }

  clear(): void {
    this.buf = new Array<T | undefined>(this.capacity);
    this.head = 0;
    this.len = 0;
  }

  /** Oldest → newest. */
  toArray(): T[] {
    const out = new Array<T>(this.len);
    for (let i = 0; i < this.len; i++) out[i] = this.buf[(this.head + i) % this.capacity] as T;
    return out;
  }

  /** Newest → oldest, at most `limit` items. */
  newestFirst(limit: number = this.len): T[] {
    const n = Math.min(limit, this.len);
    const out = new Array<T>(n);
    for (let i = 0; i < n; i++) out[i] = this.buf[(this.head + this.len - 1 - i) % this.capacity] as T;
    return out;
  }

  /**
   * Inserts keeping the buffer sorted by `order` (ascending), assuming it
   * already is. Appending in order is O(1); an out-of-order insert is O(n).
   * When full, the oldest item is evicted — or `item` itself is dropped when
   * it would be the oldest. Returns false when `item` was dropped.
   */
  insertSorted(item: T, order: (x: T) => number): boolean {
    const last = this.last();
    if (last === undefined || order(item) >= order(last)) {
      this.push(item);
      return true;
    }
    const items = this.toArray();
    let i = items.length;
    while (i > 0 && order(items[i - 1] as T) > order(item)) i--;
    if (this.isFull && i === 0) return false;
    items.splice(i, 0, item);
    this.clear();
    for (const x of items.slice(-this.capacity)) this.push(x);
    return true;
  }

  *[Symbol.iterator](): IterableIterator<T> {
    for (let i = 0; i < this.len; i++) yield this.buf[(this.head + i) % this.capacity] as T;
  }
}

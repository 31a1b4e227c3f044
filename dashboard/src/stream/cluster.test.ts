import { describe, expect, it } from 'vitest';
import { describeRebalance, fmtRanges, parseCluster } from './cluster';

const body = {
  group: 'rtap',
  topic: 'rtap-cluster',
  complete: true,
  hosts: [
    {
      id: 'a:3000',
      api: 'http://a:3000',
      role: 'active',
      partitions: [0, 1, 2, 3],
      key_groups: [0, 1, 2],
      lag: { '0': 5, '1': 7 },
      workers: 2,
      events_in: 1000,
      takeover: { at: 50, state_from: 'changelog', restore_ms: 1300, after_standby: true },
      version: '0.1.0',
      beat: 99,
      status: 'live',
      seen_ms_ago: 12,
      this: true,
    },
    { id: 'b:3000', role: 'standby', partitions: [], key_groups: [], lag: {}, status: 'lost', seen_ms_ago: 9000 },
    { id: '' },
    7,
  ],
  last_rebalance: { at: 50, state_from: 'changelog', restore_ms: 1300, after_standby: true, host: 'a:3000' },
};

describe('parseCluster', () => {
  it('parses the documented shape leniently', () => {
    const c = parseCluster(body)!;
    expect(c.group).toBe('rtap');
    expect(c.hosts.map((h) => h.id)).toEqual(['a:3000', 'b:3000']);
    expect(c.hosts[0]).toMatchObject({ role: 'active', status: 'live', lagTotal: 12, self: true, partitions: [0, 1, 2, 3] });
    expect(c.hosts[0]!.takeover).toEqual({ at: 50, stateFrom: 'changelog', restoreMs: 1300, afterStandby: true });
    expect(c.hosts[1]).toMatchObject({ role: 'standby', status: 'lost', self: false, takeover: null, api: '' });
    expect(c.lastRebalance?.host).toBe('a:3000');
  });

  it('refuses what is not a cluster view', () => {
    expect(parseCluster({ error: 'nope' })).toBeNull();
    expect(parseCluster(null)).toBeNull();
    expect(parseCluster({ hosts: [], group: null })).toEqual({ group: null, complete: true, hosts: [], lastRebalance: null });
  });

  it('keeps an unknown role visible as unknown', () => {
    const c = parseCluster({ hosts: [{ id: 'x', role: 'leader' }] })!;
    expect(c.hosts[0]!.role).toBe('unknown');
  });
});

describe('fmtRanges', () => {
  it('folds runs into ranges', () => {
    expect(fmtRanges([])).toBe('—');
    expect(fmtRanges([3])).toBe('3');
    expect(fmtRanges([0, 1, 2, 3, 7, 9, 10])).toBe('0–3, 7, 9–10');
    expect(fmtRanges([10, 9, 9, 0])).toBe('0, 9–10');
  });
});

describe('describeRebalance', () => {
  it('says who took over and how', () => {
    expect(describeRebalance({ at: 1, stateFrom: 'changelog', restoreMs: 1300, afterStandby: true, host: 'b' })).toBe(
      'b took over, state restored from the changelog in 1300 ms',
    );
    expect(describeRebalance({ at: 1, stateFrom: 'empty', restoreMs: 4, afterStandby: false, host: 'a' })).toBe('a started with empty state');
    expect(describeRebalance({ at: 1, stateFrom: 'local', restoreMs: 9, afterStandby: false, host: 'a' })).toBe('a started, state restored from its data dir in 9 ms');
  });
});

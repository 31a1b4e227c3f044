import { describe, expect, it } from 'vitest';
import { computeRows, describeChangeReport, describeWindow, isValidPluginName, parsePluginList, pluginNameFromFile, validateConfigJson } from './plugins';

const raw = {
  name: 'page-views',
  version: '1.0.0',
  kind: 'aggregator',
  input: 'events',
  key_by: 'page',
  window: { type: 'tumbling', size_ms: 5000 },
  hash: 'ab'.repeat(32),
  state_schema: 1,
  status: 'running',
  loaded_at: 1000,
  config: { a: 1 },
  counters: { events_in: 100, calls: 10, outputs: 5, traps: 1, timeouts: 2, out_of_memory: 4, errors: 8, dead_lettered: 3 },
  previous: null,
  future_field: true,
};

describe('parsePluginList', () => {
  it('parses the documented shape leniently', () => {
    const list = parsePluginList([raw, { name: '' }, 7, { name: 'x' }])!;
    expect(list.map((p) => p.name)).toEqual(['page-views', 'x']);
    expect(list[0]).toMatchObject({ version: '1.0.0', state_schema: '1', window: { type: 'tumbling', size_ms: 5000 } });
    expect(list[1]).toMatchObject({ status: 'unknown', window: { type: 'none' }, counters: { events_in: 0 }, previous: null });
    expect(parsePluginList({ plugins: [raw] })).toHaveLength(1);
    expect(parsePluginList({ error: 'nope' })).toBeNull();
    expect(list[0]!.logs).toBeNull();
  });

  it('parses the log summary', () => {
    const logs = { lines: 12, dropped: 3, last: { seq: 9, level: 'info', stream: 'log', message: 'window 0: 4 events', time: 5 } };
    const [p] = parsePluginList([{ ...raw, logs }])!;
    expect(p!.logs).toEqual({ lines: 12, dropped: 3, last: { level: 'info', stream: 'log', message: 'window 0: 4 events', time: 5 } });
    const [q] = parsePluginList([{ ...raw, logs: { lines: 0, dropped: 0, last: null } }])!;
    expect(q!.logs).toEqual({ lines: 0, dropped: 0, last: null });
  });

  it('parses a shadow version beside the live one', () => {
    const shadow = { version: '1.2.0', hash: 'cd'.repeat(32), state: 'a copy of the live state (12 keys)', status: 'degraded', events: 5000, compared: 40, equal: 38, different: 2 };
    const [p] = parsePluginList([{ ...raw, shadow }])!;
    expect(p!.shadow).toEqual(shadow);
    expect(parsePluginList([raw])![0]!.shadow).toBeNull();
    expect(parsePluginList([{ ...raw, shadow: { compared: 3 } }])![0]!.shadow).toBeNull();
  });
});

describe('computeRows', () => {
  it('computes throughput from successive polls and sums errors', () => {
    const p1 = parsePluginList([raw])!;
    const p2 = parsePluginList([{ ...raw, counters: { ...raw.counters, events_in: 1100, outputs: 25 } }])!;
    const first = computeRows(null, { at: 0, plugins: p1 });
    expect(first[0]!.eventsPerSec).toBeNull();
    expect(first[0]!.errors).toBe(18);
    const second = computeRows({ at: 0, plugins: p1 }, { at: 2000, plugins: p2 });
    expect(second[0]!.eventsPerSec).toBe(500);
    expect(second[0]!.outputsPerSec).toBe(10);
  });

  it('reports no rate after a counter reset (e.g. a swap)', () => {
    const p1 = parsePluginList([raw])!;
    const p2 = parsePluginList([{ ...raw, counters: { ...raw.counters, events_in: 5 } }])!;
    expect(computeRows({ at: 0, plugins: p1 }, { at: 1000, plugins: p2 })[0]!.eventsPerSec).toBeNull();
  });
});

describe('helpers', () => {
  it('describes windows', () => {
    expect(describeWindow({ type: 'tumbling', size_ms: 5000 })).toBe('tumbling 5 s');
    expect(describeWindow({ type: 'sliding', size_ms: 60000, slide_ms: 5000 })).toBe('sliding 1 min / 5 s');
    expect(describeWindow({ type: 'session', gap_ms: 1800000 })).toBe('session gap 30 min');
    expect(describeWindow({ type: 'none' })).toBe('—');
  });

  it('validates config JSON', () => {
    expect(validateConfigJson('{"threshold": 10}')).toEqual({ ok: true, value: { threshold: 10 } });
    expect(validateConfigJson('{}')).toEqual({ ok: true, value: {} });
    expect(validateConfigJson('').ok).toBe(false);
    expect(validateConfigJson('{"a":').ok).toBe(false);
    expect(validateConfigJson('[1,2]').ok).toBe(false);
    expect(validateConfigJson('null').ok).toBe(false);
    expect(validateConfigJson('42').ok).toBe(false);
  });

  it('checks and guesses plugin names', () => {
    expect(isValidPluginName('bot-burst')).toBe(true);
    expect(isValidPluginName('Bot_Burst')).toBe(false);
    expect(isValidPluginName('')).toBe(false);
    expect(pluginNameFromFile('bot_burst.wasm')).toBe('bot-burst');
    expect(pluginNameFromFile('page-views-1.2.0.wasm')).toBe('page-views');
    expect(pluginNameFromFile('error-rate.wasm')).toBe('error-rate');
  });
});

describe('describeChangeReport', () => {
  it('summarises the control API answers', () => {
    expect(
      describeChangeReport({ plugin: 'page-views', from_version: '1.0.0', to_version: '1.0.1', hash: 'h', states_migrated: 3, state_reset: false, stall_us: 42, compile_ms: 812.4 }),
    ).toBe('page-views 1.0.0 → 1.0.1 (3 states migrated, stall 42 µs, compiled in 812 ms).');
    expect(describeChangeReport({ plugin: 'bot-burst', from_version: '1.0.0', to_version: '1.0.0', hash: 'h', states_migrated: 0, state_reset: false, stall_us: 2 })).toBe(
      'bot-burst 1.0.0 reconfigured (state kept, stall 2 µs).',
    );
    expect(describeChangeReport({ plugin: 'x', from_version: null, to_version: '0.1.0', states_migrated: 0, state_reset: false, stall_us: 2500 })).toBe('x 0.1.0 added (stall 2.5 ms).');
    expect(describeChangeReport({ plugin: 'x', from_version: '2.0.0', to_version: '1.0.0', state_reset: true })).toBe('x 2.0.0 → 1.0.0 (state reset).');
    expect(describeChangeReport({ plugin: 'x', unchanged: true, hash: 'h' })).toBe('x already runs this build; nothing changed.');
    expect(describeChangeReport({ plugin: 'x', removed: true })).toBe('x removed.');
    expect(describeChangeReport({ plugin: 'x', mode: 'shadow', live: { version: '1.0.0' }, shadow: { version: '1.1.0' }, state: 'empty' })).toBe(
      'x 1.1.0 runs as a shadow of 1.0.0: compared, not emitted (state: empty).',
    );
    expect(describeChangeReport({ plugin: 'x', promoted: true, from_version: '1.0.0', to_version: '1.1.0', report: { compared: 9, different: 1 } })).toBe(
      'x 1.0.0 → 1.1.0: the shadow is live (9 compared, 1 different).',
    );
    expect(describeChangeReport({ plugin: 'x', discarded: true, report: { compared: 9, different: 0 } })).toBe('x: shadow discarded after 9 compared, 0 different.');
    expect(describeChangeReport({})).toBeNull();
    expect(describeChangeReport({ plugin: 'x' })).toBeNull();
    expect(describeChangeReport(null)).toBeNull();
  });
});

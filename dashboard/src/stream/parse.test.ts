import { describe, expect, it } from 'vitest';
import { parseFrame, parseValue } from './parse';
import type { AlertMessage, MetricMessage, PipelineMessage, PluginEventMessage } from './types';

const NOW = 1_764_000_010_000;

function one(frame: string) {
  const r = parseFrame(frame, NOW);
  expect(r).toHaveLength(1);
  return r[0]!;
}

function message<T>(frame: string): T {
  const r = one(frame);
  if (r.kind !== 'message') throw new Error(`expected a message, got ${JSON.stringify(r)}`);
  return r.message as T;
}

describe('parseFrame: valid messages', () => {
  it('parses a single-valued metric', () => {
    const m = message<MetricMessage>(
      '{"type":"metric","plugin":"page-views","name":"page_views","key":"/home","window_start":1764000000000,"window_end":1764000005000,"value":12}',
    );
    expect(m).toEqual({
      type: 'metric',
      plugin: 'page-views',
      name: 'page_views',
      key: '/home',
      window_start: 1764000000000,
      window_end: 1764000005000,
      fields: { value: 12 },
      multi: false,
    });
  });

  it('parses a multi-valued metric and drops non-numeric values', () => {
    const m = message<MetricMessage>(
      '{"type":"metric","plugin":"latency-percentiles","name":"latency_ms","key":"","window_start":0,"window_end":5000,"values":{"p50":12.1,"p95":80.3,"p99":250.0,"note":"x"}}',
    );
    expect(m.fields).toEqual({ p50: 12.1, p95: 80.3, p99: 250 });
    expect(m.multi).toBe(true);
  });

  it('defaults a missing metric key to ""', () => {
    const m = message<MetricMessage>('{"type":"metric","plugin":"a","name":"b","window_start":0,"window_end":1,"value":1}');
    expect(m.key).toBe('');
  });

  it('parses an alert with and without value', () => {
    const a = message<AlertMessage>(
      '{"type":"alert","id":"a1","plugin":"bot-burst","rule":"bot-burst","severity":"warning","key":"user-42","message":"31 events in 1 s","time":1764000003000,"value":31}',
    );
    expect(a).toMatchObject({ id: 'a1', rule: 'bot-burst', severity: 'warning', key: 'user-42', value: 31, time: 1764000003000 });
    const b = message<AlertMessage>('{"type":"alert","id":"a2","plugin":"p","rule":"r","severity":"critical","key":"","message":"m","time":5,"value":null}');
    expect(b.value).toBeNull();
    const c = message<AlertMessage>('{"type":"alert","id":"a3","plugin":"p","rule":"r","severity":"info","message":"m","time":5}');
    expect(c.value).toBeNull();
    expect(c.key).toBe('');
  });

  it('fills alert defaults: unknown severity → info, missing id/time', () => {
    const a = message<AlertMessage>('{"type":"alert","rule":"r","severity":"apocalyptic","key":"k"}');
    expect(a.severity).toBe('info');
    expect(a.time).toBe(NOW);
    expect(a.id).toBe(`r|k|${NOW}`);
    expect(a.plugin).toBe('r');
  });

  it('parses a plugin lifecycle event, including an event name it does not know', () => {
    const p = message<PluginEventMessage>(
      '{"type":"plugin","event":"swapped","plugin":"page-views","version":"1.1.0","hash":"abc","message":"ok","time":42}',
    );
    expect(p).toEqual({ type: 'plugin', event: 'swapped', plugin: 'page-views', version: '1.1.0', hash: 'abc', message: 'ok', time: 42 });
    const q = message<PluginEventMessage>('{"type":"plugin","event":"quarantined","plugin":"x"}');
    expect(q.event).toBe('quarantined');
    expect(q.version).toBeNull();
    expect(q.time).toBe(NOW);
  });

  it('parses pipeline status with nulls and an empty lag object', () => {
    const p = message<PipelineMessage>(
      '{"type":"pipeline","time":1000,"source":"simulator","events_in":123456,"events_per_sec":500.0,"outputs_per_sec":40.0,"watermark":null,"late_events":0,"dead_lettered":0,"e2e_latency_ms":null,"consumer_lag":{},"last_checkpoint":null}',
    );
    expect(p).toMatchObject({ time: 1000, source: 'simulator', events_in: 123456, watermark: null, e2e_latency_ms: null, consumer_lag: {}, last_checkpoint: null });
    const k = message<PipelineMessage>(
      '{"type":"pipeline","time":1000,"source":"kafka","e2e_latency_ms":{"p50":1.2,"p95":3,"p99":8},"consumer_lag":{"0":12,"1":0,"2":"x"},"watermark":990}',
    );
    expect(k.e2e_latency_ms).toEqual({ p50: 1.2, p95: 3, p99: 8 });
    expect(k.consumer_lag).toEqual({ '0': 12, '1': 0 });
    expect(k.watermark).toBe(990);
    expect(k.events_per_sec).toBeNull();
    expect(k.workers).toEqual([]);
  });

  it('parses the workers of a pipeline status, dropping what is not one', () => {
    const p = message<PipelineMessage>(
      '{"type":"pipeline","time":1000,"workers":[{"worker":0,"events_per_sec":1200.5,"busy":0.42,"keys":310,"exchange_queue":17,"events":9},{"worker":1,"busy":7},{"events_per_sec":3},"x"]}',
    );
    expect(p.workers).toEqual([
      { worker: 0, events_per_sec: 1200.5, busy: 0.42, keys: 310, exchange_queue: 17 },
      { worker: 1, events_per_sec: 0, busy: 1, keys: 0, exchange_queue: 0 },
    ]);
  });

  it('ignores unknown fields (forward compatible)', () => {
    const m = message<MetricMessage>(
      '{"type":"metric","plugin":"a","name":"b","key":"","window_start":0,"window_end":1,"value":1,"shard":7,"extra":{"deep":true}}',
    );
    expect(Object.keys(m).sort()).toEqual(['fields', 'key', 'multi', 'name', 'plugin', 'type', 'window_end', 'window_start']);
  });

  it('accepts an array of messages in one frame', () => {
    const r = parseFrame('[{"type":"plugin","event":"loaded","plugin":"a"},{"type":"nope"},42]', NOW);
    expect(r.map((x) => x.kind)).toEqual(['message', 'ignored', 'invalid']);
  });
});

describe('parseFrame: unknown types', () => {
  it('reports unknown types as ignored, not invalid', () => {
    expect(one('{"type":"heartbeat","seq":1}')).toEqual({ kind: 'ignored', type: 'heartbeat' });
    expect(one('{"type":"snapshot"}')).toEqual({ kind: 'ignored', type: 'snapshot' });
  });
});

describe('parseFrame: invalid frames never throw', () => {
  const bad: [string, string][] = [
    ['not json', 'malformed JSON'],
    ['{"type":"metric"', 'malformed JSON'],
    ['', 'malformed JSON'],
    ['null', 'not a JSON object'],
    ['42', 'not a JSON object'],
    ['"metric"', 'not a JSON object'],
    ['{}', 'without a string "type"'],
    ['{"type":7}', 'without a string "type"'],
    ['{"type":"metric","name":"b","window_start":0,"window_end":1,"value":1}', 'without plugin'],
    ['{"type":"metric","plugin":"a","window_start":0,"window_end":1,"value":1}', 'without name'],
    ['{"type":"metric","plugin":"a","name":"b","window_start":"0","window_end":1,"value":1}', 'window_start'],
    ['{"type":"metric","plugin":"a","name":"b","window_start":5,"window_end":1,"value":1}', 'before'],
    ['{"type":"metric","plugin":"a","name":"b","window_start":0,"window_end":1,"value":"12"}', 'without numeric value'],
    ['{"type":"metric","plugin":"a","name":"b","window_start":0,"window_end":1,"values":{"p50":"x"}}', 'no numeric'],
    ['{"type":"alert","id":"x","severity":"critical"}', 'without rule'],
    ['{"type":"plugin","plugin":"x"}', 'without event'],
    ['{"type":"plugin","event":"loaded"}', 'without plugin'],
    ['{"type":"pipeline","events_per_sec":1}', 'without numeric time'],
  ];
  it.each(bad)('%s → invalid (%s)', (frame, reason) => {
    const r = one(frame);
    expect(r.kind).toBe('invalid');
    if (r.kind === 'invalid') expect(r.error).toContain(reason);
  });

  it('rejects non-text frames', () => {
    expect(parseFrame(new ArrayBuffer(4), NOW)[0]!.kind).toBe('invalid');
    expect(parseFrame(undefined, NOW)[0]!.kind).toBe('invalid');
  });

  it('truncates huge strings', () => {
    const r = parseValue({ type: 'alert', rule: 'r', message: 'x'.repeat(100_000), time: 1 }, NOW);
    expect(r.kind).toBe('message');
    if (r.kind === 'message' && r.message.type === 'alert') expect(r.message.message.length).toBeLessThanOrEqual(1001);
  });
});

// Messages of the host's WebSocket stream (`/ws`), as validated by `parse.ts`.
// Only the fields the dashboard uses are kept; unknown fields are dropped.

/** Milliseconds since the Unix epoch. */
export type Millis = number;

export type Severity = 'info' | 'warning' | 'critical';

export interface MetricMessage {
  type: 'metric';
  plugin: string;
  name: string;
  key: string;
  window_start: Millis;
  window_end: Millis;
  /** Single-valued metrics: `{ value: n }`; multi-valued: `{ p50, p95, ... }`. */
  fields: Record<string, number>;
  /** True when the frame carried `values` (multi-valued) rather than `value`. */
  multi: boolean;
}

export interface AlertMessage {
  type: 'alert';
  id: string;
  plugin: string;
  rule: string;
  severity: Severity;
  key: string;
  message: string;
  time: Millis;
  value: number | null;
}

export type PluginEventKind =
  | 'loaded'
  | 'swapped'
  | 'rolled_back'
  | 'config_changed'
  | 'failed'
  | 'degraded'
  | 'recovered'
  | 'removed'
  | 'shadow_started'
  | 'promoted'
  | 'shadow_discarded';

export interface PluginEventMessage {
  type: 'plugin';
  /** One of `PluginEventKind`, or a newer event name the host added. */
  event: string;
  plugin: string;
  version: string | null;
  hash: string | null;
  message: string;
  time: Millis;
}

export interface Percentiles {
  p50: number | null;
  p95: number | null;
  p99: number | null;
}

export interface PipelineMessage {
  type: 'pipeline';
  time: Millis;
  source: string;
  events_in: number | null;
  events_per_sec: number | null;
  outputs_per_sec: number | null;
  watermark: Millis | null;
  late_events: number | null;
  dead_lettered: number | null;
  e2e_latency_ms: Percentiles | null;
  /** Partition → lag; empty when the source is not Kafka. */
  consumer_lag: Record<string, number>;
  last_checkpoint: Millis | null;
  /** Each processing worker over the last second; empty from an older host. */
  workers: WorkerStatus[];
}

export interface WorkerStatus {
  worker: number;
  events_per_sec: number;
  /** Share of the last second spent working, 0..1. */
  busy: number;
  /** Keys held in its key groups (all plugins, at the last commit). */
  keys: number;
  /** Exchange records waiting for its stage 2 at the last round. */
  exchange_queue: number;
}

export type ServerMessage = MetricMessage | AlertMessage | PluginEventMessage | PipelineMessage;

export type ParseResult =
  | { kind: 'message'; message: ServerMessage }
  /** A well-formed object of a type this dashboard does not know (forward compatibility). */
  | { kind: 'ignored'; type: string }
  | { kind: 'invalid'; error: string };

//! The `{"type":"pipeline",…}` status the WebSocket shows once a second:
//! rates since the last one, watermark, lateness, dead letters, batch
//! latency percentiles, consumer lag.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::Runner;
use crate::clock::now_ms;
use crate::metrics::metrics;
use crate::status::Registry;

/// How often the status is published.
const EVERY: Duration = Duration::from_secs(1);

/// The figures since the last status.
pub(super) struct StatusReport {
    registry: Arc<Registry>,
    last: Instant,
    events_at_last: u64,
    outputs_at_last: u64,
    /// Batch latencies (ms) since the last status.
    latencies: Vec<f64>,
    /// Each worker's events, busy time (ns) and exchange records at the
    /// last status.
    workers_at_last: Vec<[u64; 3]>,
}

impl StatusReport {
    pub fn new(registry: &Arc<Registry>) -> Self {
        StatusReport {
            registry: registry.clone(),
            last: Instant::now(),
            events_at_last: 0,
            outputs_at_last: 0,
            latencies: Vec::new(),
            workers_at_last: Vec::new(),
        }
    }

    /// Each worker's figures since the last status (`secs` ago): events/s,
    /// busy share (0‥1), keys held, exchange queue; also into `/metrics`.
    fn workers(&mut self, secs: f64) -> Value {
        let counters = self.registry.workers.lock().expect("registry lock").clone();
        self.workers_at_last.resize(counters.len(), [0; 3]);
        let m = metrics();
        let mut out = Vec::with_capacity(counters.len());
        for (w, (c, last)) in counters.iter().zip(&mut self.workers_at_last).enumerate() {
            let now = [
                c.events.load(Ordering::Relaxed),
                c.busy_ns.load(Ordering::Relaxed),
                c.exchange_in.load(Ordering::Relaxed),
            ];
            let d: Vec<u64> = now.iter().zip(last.iter()).map(|(n, l)| n - l).collect();
            *last = now;
            let keys = c.keys.load(Ordering::Relaxed);
            let queue = c.exchange_queue.load(Ordering::Relaxed);
            let label = w.to_string();
            let label = [label.as_str()];
            m.worker_events.with_label_values(&label).inc_by(d[0]);
            m.worker_busy
                .with_label_values(&label)
                .inc_by(d[1] as f64 / 1e9);
            m.worker_exchange_records
                .with_label_values(&label)
                .inc_by(d[2]);
            m.worker_keys.with_label_values(&label).set(keys as i64);
            m.worker_exchange_queue
                .with_label_values(&label)
                .set(queue as i64);
            out.push(json!({
                "worker": w,
                "events_per_sec": d[0] as f64 / secs,
                "busy": (d[1] as f64 / 1e9 / secs).min(1.0),
                "keys": keys,
                "exchange_in_per_sec": d[2] as f64 / secs,
                "exchange_queue": queue,
                "events": now[0],
            }));
        }
        let v = Value::Array(out);
        *self.registry.worker_status.lock().expect("registry lock") = v.clone();
        v
    }

    /// A batch was processed in `latency` seconds from being read.
    pub fn batch(&mut self, latency: f64) {
        self.latencies.push(latency * 1000.0);
    }

    /// P50, P95 and P99 of the batch latencies since the last status.
    fn percentiles(&mut self) -> Option<Value> {
        if self.latencies.is_empty() {
            return None;
        }
        let l = &mut self.latencies;
        l.sort_by(f64::total_cmp);
        let q = |p: f64| l[((l.len() - 1) as f64 * p).round() as usize];
        let v = json!({"p50": q(0.5), "p95": q(0.95), "p99": q(0.99)});
        l.clear();
        Some(v)
    }

    /// The status, when a second has passed since the last one.
    pub fn due(&mut self, runner: &Runner) -> Option<Value> {
        if self.last.elapsed() < EVERY {
            return None;
        }
        let registry = self.registry.clone();
        let stats = &registry.stats;
        let secs = self.last.elapsed().as_secs_f64();
        let events = stats.events_in.load(Ordering::Relaxed);
        let outputs = stats.outputs.load(Ordering::Relaxed);
        let workers = self.workers(secs);
        let status = json!({
            "type": "pipeline",
            "time": now_ms(),
            "source": runner.source_name,
            "events_in": events,
            "events_per_sec": (events - self.events_at_last) as f64 / secs,
            "outputs_per_sec": (outputs - self.outputs_at_last) as f64 / secs,
            "watermark": runner.wm.current().max(0),
            "max_event_time": runner.wm.max_event_time(),
            "late_events": stats.late_events.load(Ordering::Relaxed),
            "dead_lettered": stats.dead_lettered.load(Ordering::Relaxed),
            "e2e_latency_ms": self.percentiles(),
            "consumer_lag": runner
                .lag_partitions
                .iter()
                .filter_map(|p| {
                    let g = metrics().consumer_lag.get_metric_with_label_values(&[&p.to_string()]).ok()?;
                    Some((p.to_string(), json!(g.get())))
                })
                .collect::<serde_json::Map<_, _>>(),
            "last_checkpoint": Some(stats.last_checkpoint.load(Ordering::Relaxed)).filter(|&t| t > 0),
            "workers": workers,
        });
        self.events_at_last = events;
        self.outputs_at_last = outputs;
        self.last = Instant::now();
        Some(status)
    }
}

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
}

impl StatusReport {
    pub fn new(registry: &Arc<Registry>) -> Self {
        StatusReport {
            registry: registry.clone(),
            last: Instant::now(),
            events_at_last: 0,
            outputs_at_last: 0,
            latencies: Vec::new(),
        }
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
        });
        self.events_at_last = events;
        self.outputs_at_last = outputs;
        self.last = Instant::now();
        Some(status)
    }
}

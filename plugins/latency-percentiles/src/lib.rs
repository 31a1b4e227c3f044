//! Latency percentiles (p50, p95, p99) every 5 s, from a DDSketch.
//!
//! A sketch, not the samples: the state stays a few hundred bytes however
//! many requests a window sees, merges exactly, and every percentile is
//! within 1 % of the exact one. Events without a `latency_ms` are skipped;
//! a window with none emits only `latency_samples = 0`.

use rtap_sdk::prelude::*;

#[derive(Default)]
pub struct LatencyPercentiles;

impl Aggregator for LatencyPercentiles {
    type State = DdSketch;

    fn describe() -> Description {
        Description::aggregator("latency-percentiles", "1.0.0")
            .key_by("")
            .tumbling(5_000)
            .fields(&["latency_ms"])
    }

    fn add(&self, sketch: &mut DdSketch, events: &Events) {
        for &latency in events.float("latency_ms") {
            if !latency.is_nan() {
                sketch.add(latency);
            }
        }
    }

    fn merge(&self, sketch: &mut DdSketch, other: DdSketch) {
        sketch.merge(&other);
    }

    fn finish(&self, sketch: DdSketch, _window: Window, out: &mut Metrics) {
        if let (Some(p50), Some(p95), Some(p99)) = (
            sketch.quantile(0.5),
            sketch.quantile(0.95),
            sketch.quantile(0.99),
        ) {
            out.several("latency_ms", &[("p50", p50), ("p95", p95), ("p99", p99)]);
        }
        out.single("latency_samples", sketch.count() as f64);
    }
}
rtap_sdk::export_aggregator!(LatencyPercentiles);

#[cfg(test)]
mod tests {
    use super::*;
    use rtap_sdk::testing::{TestMetric, run_aggregator};
    use serde_json::{Value, json};

    fn ev(latency: f64, ts: i64) -> Value {
        json!({"event_type": "page_view", "latency_ms": latency, "timestamp": ts})
    }

    fn close(got: f64, want: f64) -> bool {
        (got - want).abs() <= 0.01 * want
    }

    fn find<'a>(out: &'a [TestMetric], name: &str, start: i64) -> &'a TestMetric {
        out.iter()
            .find(|m| m.name == name && m.window.start == start)
            .expect("metric")
    }

    #[test]
    fn percentiles_within_one_percent() {
        let events: Vec<Value> = (1..=1000)
            .map(|i| ev(i as f64, 5_000 + i % 5_000))
            .collect();
        let out = run_aggregator::<LatencyPercentiles>("", &events).unwrap();
        assert_eq!(out.len(), 2);
        let lat = find(&out, "latency_ms", 5_000);
        assert_eq!((lat.key.as_str(), lat.window.end), ("", 10_000));
        let (p50, p95, p99) = (
            lat.value.get("p50").unwrap(),
            lat.value.get("p95").unwrap(),
            lat.value.get("p99").unwrap(),
        );
        assert!(
            close(p50, 500.0) && close(p95, 950.0) && close(p99, 990.0),
            "{p50} {p95} {p99}"
        );
        assert_eq!(
            find(&out, "latency_samples", 5_000).value,
            MetricValue::Single(1000.0)
        );
    }

    #[test]
    fn missing_latency_is_skipped() {
        let events = [
            ev(20.0, 0),
            json!({"event_type": "click", "timestamp": 1}),
            json!({"latency_ms": "x", "timestamp": 2}),
        ];
        let out = run_aggregator::<LatencyPercentiles>("", &events).unwrap();
        let lat = find(&out, "latency_ms", 0);
        assert_eq!(lat.value.get("p99"), Some(20.0));
        assert_eq!(
            find(&out, "latency_samples", 0).value,
            MetricValue::Single(1.0)
        );
        let none =
            run_aggregator::<LatencyPercentiles>("", &[json!({"timestamp": 7_000})]).unwrap();
        assert_eq!(none.len(), 1);
        assert_eq!(
            (none[0].name.as_str(), &none[0].value),
            ("latency_samples", &MetricValue::Single(0.0))
        );
    }

    #[test]
    fn windows_are_separate() {
        let events = [ev(10.0, 4_999), ev(1_000.0, 5_000), ev(12.0, 100)];
        let out = run_aggregator::<LatencyPercentiles>("", &events).unwrap();
        // Lower quantiles: p99 of two samples is the sample of rank floor(0.99 * 1) = 0.
        assert!(close(
            find(&out, "latency_ms", 0).value.get("p99").unwrap(),
            10.0
        ));
        assert!(close(
            find(&out, "latency_ms", 5_000).value.get("p50").unwrap(),
            1_000.0
        ));
        assert_eq!(
            find(&out, "latency_samples", 0).value,
            MetricValue::Single(2.0)
        );
    }
}

//! Critical alert when a latency percentile stays above a threshold.
//!
//! Reads the `latency_ms` metric of `latency-percentiles` (one value per 5 s
//! window) and fires once when the chosen percentile has been above
//! `threshold_ms` for `for_ms` (from the start of the first breaching window
//! to the end of the latest one), like a Prometheus `for:` clause. A window
//! at or below the threshold re-arms the rule.

use rtap_sdk::prelude::*;

/// Operator options.
#[derive(Debug, Clone, PartialEq, Deserialize, Settings)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Alert when the percentile is above this latency (ms)
    #[setting(min = 0.0)]
    pub threshold_ms: f64,
    /// How long it must stay above (ms)
    #[setting(min = 0)]
    pub for_ms: i64,
    /// Which percentile of latency-percentiles/latency_ms
    #[setting(one_of = ["p50", "p95", "p99"])]
    pub percentile: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            threshold_ms: 500.0,
            for_ms: 120_000,
            percentile: "p95".into(),
        }
    }
}

#[derive(Default)]
pub struct HighLatency {
    settings: Settings,
}

impl Detector for HighLatency {
    type State = Sustained;

    fn describe() -> Description {
        Description::detector("high-latency", "1.0.0")
            .on_metrics(&["latency-percentiles/latency_ms"])
            .key_by("")
            .settings::<Settings>()
    }

    fn configure(&mut self, config: &Config) -> Result<(), String> {
        let s: Settings = config.settings()?;
        self.settings = s;
        Ok(())
    }

    fn on_metrics(&self, ctx: &mut Ctx<'_>, breach: &mut Sustained, metrics: &[MetricIn]) {
        let s = &self.settings;
        let mut ordered: Vec<&MetricIn> = metrics.iter().collect();
        ordered.sort_by_key(|m| m.window.start);
        for m in ordered {
            let Some(value) = m.value.get(&s.percentile) else {
                continue;
            };
            let (start, end) = (m.window.start, m.window.end);
            if let Some(since) = breach.update(value > s.threshold_ms, start, end, s.for_ms) {
                let message = format!(
                    "{} latency {value:.1} ms above {} ms for {} s",
                    s.percentile,
                    s.threshold_ms,
                    (end - since) / 1000
                );
                ctx.alert(Alert::critical("high-latency", end, message).with_value(value));
            }
        }
    }
}
rtap_sdk::export_detector!(HighLatency);

#[cfg(test)]
mod tests {
    use super::*;
    use rtap_sdk::testing::{metric, run_metric_detector};

    fn windows(p95s: &[f64]) -> Vec<MetricIn> {
        p95s.iter()
            .enumerate()
            .map(|(i, &p95)| {
                let start = i as i64 * 5_000;
                let v = MetricValue::Several(vec![
                    ("p50".into(), p95 / 2.0),
                    ("p95".into(), p95),
                    ("p99".into(), p95 * 2.0),
                ]);
                metric(
                    "latency-percentiles",
                    "latency_ms",
                    "",
                    start,
                    start + 5_000,
                    v,
                )
            })
            .collect()
    }

    #[test]
    fn fires_once_after_for_ms_and_rearms() {
        let mut p95 = vec![100.0; 2];
        p95.extend([800.0; 30]);
        p95.push(200.0);
        p95.extend([900.0; 24]);
        let alerts = run_metric_detector::<HighLatency>("", &windows(&p95)).unwrap();
        assert_eq!(alerts.len(), 2, "{alerts:?}");
        let a = &alerts[0];
        assert_eq!(a.key, "");
        assert_eq!(
            (a.alert.rule.as_str(), a.alert.severity),
            ("high-latency", Severity::Critical)
        );
        // First breach starts at 10 s; 24 windows later (120 s) it fires.
        assert_eq!(a.alert.time, 10_000 + 120_000);
        assert_eq!(a.alert.value, Some(800.0));
        assert_eq!(
            a.alert.message,
            "p95 latency 800.0 ms above 500 ms for 120 s"
        );
        assert_eq!(alerts[1].alert.time, 33 * 5_000 + 120_000);
    }

    #[test]
    fn short_breach_and_threshold_edge_do_not_fire() {
        let mut p95 = vec![800.0; 23];
        p95.push(500.0);
        p95.extend([800.0; 23]);
        assert!(
            run_metric_detector::<HighLatency>("", &windows(&p95))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn config_percentile_and_other_metrics() {
        let mut ms = windows(&[300.0, 300.0]);
        ms.push(metric(
            "error-rate",
            "latency_ms",
            "",
            0,
            5_000,
            MetricValue::Single(1e6),
        ));
        let cfg = r#"{"percentile": "p99", "threshold_ms": 550, "for_ms": 10000}"#;
        let alerts = run_metric_detector::<HighLatency>(cfg, &ms).unwrap();
        assert_eq!(alerts.len(), 1);
        assert_eq!(
            (alerts[0].alert.time, alerts[0].alert.value),
            (10_000, Some(600.0))
        );
        assert!(run_metric_detector::<HighLatency>(r#"{"percentile": "p90"}"#, &[]).is_err());
        assert!(run_metric_detector::<HighLatency>(r#"{"threshold": 1}"#, &[]).is_err());
        assert!(run_metric_detector::<HighLatency>(r#"{"threshold_ms": -1}"#, &[]).is_err());
    }

    #[test]
    fn out_of_order_windows() {
        let mut ms = windows(&[800.0; 24]);
        ms.swap(3, 20);
        let alerts = run_metric_detector::<HighLatency>(r#"{}"#, &ms).unwrap();
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].alert.time, 120_000);
    }

    #[test]
    fn default_config_matches_defaults() {
        let d = HighLatency::describe();
        let mut h = HighLatency::default();
        h.configure(&Config::from_json(&d.default_config).unwrap())
            .unwrap();
        assert_eq!(h.settings, Settings::default());
        assert!(d.config_schema.contains("\"enum\""));
    }

    /// The config schema and default config operators see (`GET
    /// /api/plugins`). `Settings` derives them; they must stay these.
    const SCHEMA: &str = r#"{
  "type": "object",
  "additionalProperties": false,
  "properties": {
    "threshold_ms": {"type": "number", "minimum": 0, "default": 500, "description": "Alert when the percentile is above this latency (ms)"},
    "for_ms": {"type": "integer", "minimum": 0, "default": 120000, "description": "How long it must stay above (ms)"},
    "percentile": {"type": "string", "enum": ["p50", "p95", "p99"], "default": "p95", "description": "Which percentile of latency-percentiles/latency_ms"}
  }
}"#;
    const DEFAULT: &str = r#"{"threshold_ms": 500, "for_ms": 120000, "percentile": "p95"}"#;

    #[test]
    fn options_derive_the_published_schema_and_default() {
        let json = |text: &str| serde_json::from_str::<serde_json::Value>(text).unwrap();
        let d = HighLatency::describe();
        assert_eq!(json(&d.config_schema), json(SCHEMA));
        assert_eq!(json(&d.default_config), json(DEFAULT));
        run_metric_detector::<HighLatency>(DEFAULT, &[]).unwrap();
    }

    #[test]
    fn out_of_range_options_are_refused_by_name() {
        let refused = |config: &str| run_metric_detector::<HighLatency>(config, &[]).unwrap_err();
        let unknown = refused(r#"{"threshold": 1}"#);
        assert!(
            unknown.starts_with("invalid config: unknown field `threshold`"),
            "{unknown}"
        );
        assert_eq!(
            refused(r#"{"threshold_ms": -1}"#),
            "invalid config: threshold_ms must be at least 0, got -1"
        );
        assert_eq!(
            refused(r#"{"threshold_ms": -0.5}"#),
            "invalid config: threshold_ms must be at least 0, got -0.5"
        );
        assert_eq!(
            refused(r#"{"for_ms": -1}"#),
            "invalid config: for_ms must be at least 0, got -1"
        );
        assert_eq!(
            refused(r#"{"for_ms": 9223372036854775808}"#),
            "invalid config: for_ms must be at most 9223372036854775807, got 9223372036854775808"
        );
        assert_eq!(
            refused(r#"{"percentile": "p90"}"#),
            "invalid config: percentile must be p50, p95 or p99, got `p90`"
        );
        run_metric_detector::<HighLatency>(
            r#"{"threshold_ms": 0, "for_ms": 0, "percentile": "p50"}"#,
            &[],
        )
        .unwrap();
        run_metric_detector::<HighLatency>(
            r#"{"threshold_ms": 1e300, "for_ms": 9223372036854775807, "percentile": "p99"}"#,
            &[],
        )
        .unwrap();
    }
}

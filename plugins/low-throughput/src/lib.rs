//! Warning when the event rate stays below a minimum.
//!
//! Reads `error-rate/events` (events per 5 s window), scales it to events per
//! minute (`events * 60000 / window length`) and fires once when that has
//! been below `min_per_minute` for `for_ms`. A window at or above the minimum
//! re-arms the rule. A window with no event at all emits no metric, so total
//! silence is not seen here: that is the host's source-health check.

use rtap_sdk::prelude::*;

/// Operator options.
#[derive(Debug, Clone, PartialEq, Deserialize, Settings)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Alert when fewer events per minute arrive
    #[setting(min = 0.0)]
    pub min_per_minute: f64,
    /// How long it must stay below (ms)
    #[setting(min = 0)]
    pub for_ms: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            min_per_minute: 8_000.0,
            for_ms: 300_000,
        }
    }
}

#[derive(Default)]
pub struct LowThroughput {
    settings: Settings,
}

impl Detector for LowThroughput {
    type State = Sustained;

    fn describe() -> Description {
        Description::detector("low-throughput", "1.0.0")
            .on_metrics(&["error-rate/events"])
            .key_by("")
            .settings::<Settings>()
    }

    fn configure(&mut self, config: &Config) -> Result<(), String> {
        let s: Settings = config.settings()?;
        self.settings = s;
        Ok(())
    }

    fn on_metrics(&self, ctx: &mut Ctx<'_>, low: &mut Sustained, metrics: &[MetricIn]) {
        let s = &self.settings;
        let mut ordered: Vec<&MetricIn> = metrics.iter().collect();
        ordered.sort_by_key(|m| m.window.start);
        for m in ordered {
            let (start, end) = (m.window.start, m.window.end);
            let Some(events) = m.value.get("").filter(|_| end > start) else {
                continue;
            };
            let per_minute = events * 60_000.0 / (end - start) as f64;
            if let Some(since) = low.update(per_minute < s.min_per_minute, start, end, s.for_ms) {
                let message = format!(
                    "throughput {per_minute:.0} events/min below {} for {} s",
                    s.min_per_minute,
                    (end - since) / 1000
                );
                ctx.alert(Alert::warning("low-throughput", end, message).with_value(per_minute));
            }
        }
    }
}
rtap_sdk::export_detector!(LowThroughput);

#[cfg(test)]
mod tests {
    use super::*;
    use rtap_sdk::testing::{metric, run_metric_detector};

    fn windows(counts: &[f64]) -> Vec<MetricIn> {
        counts
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let start = i as i64 * 5_000;
                metric(
                    "error-rate",
                    "events",
                    "",
                    start,
                    start + 5_000,
                    MetricValue::Single(n),
                )
            })
            .collect()
    }

    #[test]
    fn low_rate_for_five_minutes_warns() {
        // 500 events per 5 s = 6000/min < 8000.
        let alerts = run_metric_detector::<LowThroughput>("", &windows(&[500.0; 61])).unwrap();
        assert_eq!(alerts.len(), 1);
        let a = &alerts[0].alert;
        assert_eq!(
            (a.rule.as_str(), a.severity),
            ("low-throughput", Severity::Warning)
        );
        assert_eq!((a.time, a.value), (300_000, Some(6_000.0)));
        assert_eq!(a.message, "throughput 6000 events/min below 8000 for 300 s");
    }

    #[test]
    fn rate_at_minimum_is_fine_and_resets() {
        // 667 per 5 s = 8004/min: not low.
        let mut counts = vec![500.0; 59];
        counts.push(667.0);
        counts.extend([100.0; 59]);
        assert!(
            run_metric_detector::<LowThroughput>("", &windows(&counts))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn scales_by_window_length_and_config() {
        let ms = [
            metric(
                "error-rate",
                "events",
                "",
                0,
                60_000,
                MetricValue::Single(90.0),
            ),
            metric(
                "error-rate",
                "events",
                "",
                60_000,
                120_000,
                MetricValue::Single(99.0),
            ),
            metric(
                "error-rate",
                "errors",
                "",
                60_000,
                120_000,
                MetricValue::Single(0.0),
            ),
        ];
        let cfg = r#"{"min_per_minute": 100, "for_ms": 120000}"#;
        let alerts = run_metric_detector::<LowThroughput>(cfg, &ms).unwrap();
        assert_eq!(alerts.len(), 1);
        assert_eq!(
            (alerts[0].alert.time, alerts[0].alert.value),
            (120_000, Some(99.0))
        );
        assert!(
            run_metric_detector::<LowThroughput>(r#"{"min_per_minute": "lots"}"#, &[]).is_err()
        );
        let mut h = LowThroughput::default();
        h.configure(&Config::from_json(&LowThroughput::describe().default_config).unwrap())
            .unwrap();
        assert_eq!(h.settings, Settings::default());
    }

    /// The config schema and default config operators see (`GET
    /// /api/plugins`). `Settings` derives them; they must stay these.
    const SCHEMA: &str = r#"{
  "type": "object",
  "additionalProperties": false,
  "properties": {
    "min_per_minute": {"type": "number", "minimum": 0, "default": 8000, "description": "Alert when fewer events per minute arrive"},
    "for_ms": {"type": "integer", "minimum": 0, "default": 300000, "description": "How long it must stay below (ms)"}
  }
}"#;
    const DEFAULT: &str = r#"{"min_per_minute": 8000, "for_ms": 300000}"#;

    #[test]
    fn options_derive_the_published_schema_and_default() {
        let json = |text: &str| serde_json::from_str::<serde_json::Value>(text).unwrap();
        let d = LowThroughput::describe();
        assert_eq!(json(&d.config_schema), json(SCHEMA));
        assert_eq!(json(&d.default_config), json(DEFAULT));
        run_metric_detector::<LowThroughput>(DEFAULT, &[]).unwrap();
    }

    #[test]
    fn out_of_range_options_are_refused_by_name() {
        let refused = |config: &str| run_metric_detector::<LowThroughput>(config, &[]).unwrap_err();
        let unknown = refused(r#"{"min_per_second": 1}"#);
        assert!(
            unknown.starts_with("invalid config: unknown field `min_per_second`"),
            "{unknown}"
        );
        assert_eq!(
            refused(r#"{"min_per_minute": -1}"#),
            "invalid config: min_per_minute must be at least 0, got -1"
        );
        assert_eq!(
            refused(r#"{"for_ms": -1}"#),
            "invalid config: for_ms must be at least 0, got -1"
        );
        assert_eq!(
            refused(r#"{"for_ms": 9223372036854775808}"#),
            "invalid config: for_ms must be at most 9223372036854775807, got 9223372036854775808"
        );
        run_metric_detector::<LowThroughput>(r#"{"min_per_minute": 0, "for_ms": 0}"#, &[]).unwrap();
        run_metric_detector::<LowThroughput>(
            r#"{"min_per_minute": 1e300, "for_ms": 9223372036854775807}"#,
            &[],
        )
        .unwrap();
    }
}

//! Critical alert when the error rate stays above a threshold.
//!
//! Reads `error-rate/error_rate` (the share of `error` events per 5 s window)
//! and fires once when it has been above `threshold` for `for_ms`; a window
//! at or below the threshold re-arms the rule.

use rtap_sdk::prelude::*;

/// Operator options.
#[derive(Debug, Clone, PartialEq, Deserialize, Settings)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Alert when the error rate (fraction of events) is above this
    #[setting(min = 0.0, max = 1.0)]
    pub threshold: f64,
    /// How long it must stay above (ms)
    #[setting(min = 0)]
    pub for_ms: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            threshold: 0.01,
            for_ms: 120_000,
        }
    }
}

#[derive(Default)]
pub struct ErrorRateSpike {
    settings: Settings,
}

impl Detector for ErrorRateSpike {
    type State = Sustained;

    fn describe() -> Description {
        Description::detector("error-rate-spike", "1.0.0")
            .on_metrics(&["error-rate/error_rate"])
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
            let Some(rate) = m.value.get("").filter(|r| !r.is_nan()) else {
                continue;
            };
            let (start, end) = (m.window.start, m.window.end);
            if let Some(since) = breach.update(rate > s.threshold, start, end, s.for_ms) {
                let message = format!(
                    "error rate {:.2} % above {} % for {} s",
                    rate * 100.0,
                    s.threshold * 100.0,
                    (end - since) / 1000
                );
                ctx.alert(Alert::critical("error-rate-spike", end, message).with_value(rate));
            }
        }
    }
}
rtap_sdk::export_detector!(ErrorRateSpike);

#[cfg(test)]
mod tests {
    use super::*;
    use rtap_sdk::testing::{metric, run_metric_detector};

    fn windows(rates: &[f64]) -> Vec<MetricIn> {
        rates
            .iter()
            .enumerate()
            .map(|(i, &r)| {
                let start = 1_000_000 + i as i64 * 5_000;
                metric(
                    "error-rate",
                    "error_rate",
                    "",
                    start,
                    start + 5_000,
                    MetricValue::Single(r),
                )
            })
            .collect()
    }

    #[test]
    fn sustained_spike_fires_once() {
        let mut rates = vec![0.001; 3];
        rates.extend([0.05; 40]);
        let alerts = run_metric_detector::<ErrorRateSpike>("", &windows(&rates)).unwrap();
        assert_eq!(alerts.len(), 1);
        let a = &alerts[0].alert;
        assert_eq!(
            (a.rule.as_str(), a.severity),
            ("error-rate-spike", Severity::Critical)
        );
        assert_eq!(a.time, 1_015_000 + 120_000);
        assert_eq!(a.value, Some(0.05));
        assert_eq!(a.message, "error rate 5.00 % above 1 % for 120 s");
    }

    #[test]
    fn dip_resets_and_rearms() {
        let mut rates = vec![0.02; 20];
        rates.push(0.01);
        rates.extend([0.02; 24]);
        rates.push(0.0);
        rates.extend([0.5; 24]);
        let alerts = run_metric_detector::<ErrorRateSpike>("", &windows(&rates)).unwrap();
        let times: Vec<i64> = alerts.iter().map(|a| a.alert.time).collect();
        assert_eq!(times, vec![1_000_000 + 45 * 5_000, 1_000_000 + 70 * 5_000]);
    }

    #[test]
    fn config_and_ignored_metrics() {
        let mut ms = windows(&[0.2, 0.2, 0.2]);
        ms.insert(
            1,
            metric(
                "error-rate",
                "events",
                "",
                0,
                5_000,
                MetricValue::Single(1e9),
            ),
        );
        let alerts =
            run_metric_detector::<ErrorRateSpike>(r#"{"threshold": 0.1, "for_ms": 15000}"#, &ms)
                .unwrap();
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].alert.time, 1_015_000);
        assert!(run_metric_detector::<ErrorRateSpike>(r#"{"threshold": 2}"#, &[]).is_err());
        assert!(run_metric_detector::<ErrorRateSpike>(r#"{"for": 1}"#, &[]).is_err());
        let mut h = ErrorRateSpike::default();
        h.configure(&Config::from_json(&ErrorRateSpike::describe().default_config).unwrap())
            .unwrap();
        assert_eq!(h.settings, Settings::default());
    }

    /// The config schema and default config operators see (`GET
    /// /api/plugins`). `Settings` derives them; they must stay these.
    const SCHEMA: &str = r#"{
  "type": "object",
  "additionalProperties": false,
  "properties": {
    "threshold": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.01, "description": "Alert when the error rate (fraction of events) is above this"},
    "for_ms": {"type": "integer", "minimum": 0, "default": 120000, "description": "How long it must stay above (ms)"}
  }
}"#;
    const DEFAULT: &str = r#"{"threshold": 0.01, "for_ms": 120000}"#;

    #[test]
    fn options_derive_the_published_schema_and_default() {
        let json = |text: &str| serde_json::from_str::<serde_json::Value>(text).unwrap();
        let d = ErrorRateSpike::describe();
        assert_eq!(json(&d.config_schema), json(SCHEMA));
        assert_eq!(json(&d.default_config), json(DEFAULT));
        run_metric_detector::<ErrorRateSpike>(DEFAULT, &[]).unwrap();
    }

    #[test]
    fn out_of_range_options_are_refused_by_name() {
        let refused =
            |config: &str| run_metric_detector::<ErrorRateSpike>(config, &[]).unwrap_err();
        let unknown = refused(r#"{"for": 1}"#);
        assert!(
            unknown.starts_with("invalid config: unknown field `for`"),
            "{unknown}"
        );
        assert_eq!(
            refused(r#"{"threshold": 1.01}"#),
            "invalid config: threshold must be within 0..=1, got 1.01"
        );
        assert_eq!(
            refused(r#"{"threshold": -0.01}"#),
            "invalid config: threshold must be within 0..=1, got -0.01"
        );
        assert_eq!(
            refused(r#"{"for_ms": -1}"#),
            "invalid config: for_ms must be at least 0, got -1"
        );
        assert_eq!(
            refused(r#"{"for_ms": 9223372036854775808}"#),
            "invalid config: for_ms must be at most 9223372036854775807, got 9223372036854775808"
        );
        run_metric_detector::<ErrorRateSpike>(r#"{"threshold": 0, "for_ms": 0}"#, &[]).unwrap();
        run_metric_detector::<ErrorRateSpike>(
            r#"{"threshold": 1, "for_ms": 9223372036854775807}"#,
            &[],
        )
        .unwrap();
    }
}

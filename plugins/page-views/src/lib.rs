//! Page views per page in tumbling 5 s windows: the smallest useful
//! aggregator, and the README's example.

use rtap_sdk::prelude::*;

/// `test-variant` builds the same logic under another version (hot-swap tests).
const VERSION: &str = if cfg!(feature = "test-variant") {
    "1.0.1"
} else {
    "1.0.0"
};

#[derive(Default)]
pub struct PageViews;

impl Aggregator for PageViews {
    type State = u64;
    fn describe() -> Description {
        Description::aggregator("page-views", VERSION)
            .key_by("page")
            .tumbling(5_000)
    }
    fn add(&self, count: &mut u64, events: &Events) {
        *count += events.len() as u64;
    }
    fn merge(&self, count: &mut u64, other: u64) {
        *count += other;
    }
    fn finish(&self, count: u64, _window: Window, out: &mut Metrics) {
        out.single("page_views", count as f64);
    }
}
rtap_sdk::export_aggregator!(PageViews);

#[cfg(test)]
mod tests {
    use super::*;
    use rtap_sdk::testing::run_aggregator;
    use serde_json::json;

    #[test]
    fn counts_per_page_and_window() {
        let events = [
            json!({"page": "/home", "timestamp": 1_000}),
            json!({"page": "/cart", "timestamp": 2_000}),
            json!({"page": "/home", "timestamp": 4_999}),
            json!({"page": "/home", "timestamp": 5_000}),
        ];
        let out = run_aggregator::<PageViews>("", &events).unwrap();
        let got: Vec<_> = out
            .iter()
            .map(|m| {
                (
                    m.key.as_str(),
                    m.window.start,
                    m.window.end,
                    m.name.as_str(),
                    m.value.clone(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("/cart", 0, 5_000, "page_views", MetricValue::Single(1.0)),
                ("/home", 0, 5_000, "page_views", MetricValue::Single(2.0)),
                (
                    "/home",
                    5_000,
                    10_000,
                    "page_views",
                    MetricValue::Single(1.0)
                ),
            ]
        );
    }

    #[test]
    fn missing_page_is_the_empty_key() {
        let out =
            run_aggregator::<PageViews>("{}", &[json!({"timestamp": "2024-05-01T00:00:03Z"})])
                .unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].key, "");
        assert_eq!(out[0].window.start, 1_714_521_600_000);
        assert_eq!(out[0].value, MetricValue::Single(1.0));
    }

    #[test]
    fn no_events_no_metrics_and_no_config() {
        assert!(run_aggregator::<PageViews>("{}", &[]).unwrap().is_empty());
        let d = PageViews::describe();
        assert!(d.fields.is_empty(), "counting needs no column");
        assert_eq!(d.default_config, "{}");
    }
}

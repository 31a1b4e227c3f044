//! Page views per page in tumbling 5 s windows: the `page_view` events
//! only, the seed's "page views per second" (clicks, carts, purchases and
//! errors carry a page too, and are not views). The smallest useful
//! aggregator, and the README's example.
//!
//! Until 1.1 every event with a page was counted. The state (a count) is
//! the same, so a swap from 1.0 keeps it.

use rtap_sdk::prelude::*;

/// `test-variant` builds the same logic under another version (hot-swap tests).
const VERSION: &str = if cfg!(feature = "test-variant") {
    "1.1.1"
} else {
    "1.1.0"
};

#[derive(Default)]
pub struct PageViews;

impl Aggregator for PageViews {
    type State = u64;
    fn describe() -> Description {
        Description::aggregator("page-views", VERSION)
            .key_by("page")
            .tumbling(5_000)
            .fields(&["event_type"])
    }
    fn add(&self, views: &mut u64, events: &Events) {
        *views += events.text("event_type").count("page_view") as u64;
    }
    fn merge(&self, views: &mut u64, other: u64) {
        *views += other;
    }
    /// A window whose events were all something else emits nothing, as
    /// a count of the filtered stream would.
    fn finish(&self, views: u64, _window: Window, out: &mut Metrics) {
        if views > 0 {
            out.single("page_views", views as f64);
        }
    }
}
rtap_sdk::export_aggregator!(PageViews);

#[cfg(test)]
mod tests {
    use super::*;
    use rtap_sdk::testing::run_aggregator;
    use serde_json::{Value, json};
    use std::collections::BTreeMap;

    fn ev(event_type: &str, page: &str, ts: i64) -> Value {
        json!({"event_type": event_type, "page": page, "timestamp": ts})
    }

    /// (key, window start, window end, value) of every output.
    fn counts(events: &[Value]) -> Vec<(String, i64, i64, f64)> {
        run_aggregator::<PageViews>("", events)
            .unwrap()
            .into_iter()
            .map(|m| {
                assert_eq!(m.name, "page_views");
                (
                    m.key,
                    m.window.start,
                    m.window.end,
                    m.value.get("").unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn counts_page_views_per_page_and_window() {
        let events = [
            ev("page_view", "/home", 1_000),
            ev("page_view", "/cart", 2_000),
            ev("click", "/home", 2_500),
            ev("page_view", "/home", 4_999),
            ev("add_to_cart", "/cart", 4_000),
            ev("page_view", "/home", 5_000),
        ];
        assert_eq!(
            counts(&events),
            vec![
                ("/cart".into(), 0, 5_000, 1.0),
                ("/home".into(), 0, 5_000, 2.0),
                ("/home".into(), 5_000, 10_000, 1.0),
            ]
        );
    }

    /// Every event type of the seed, and near misses, on many pages and
    /// windows, in a scrambled order: only `page_view` events count, and
    /// the outputs equal a count made here without the plugin.
    #[test]
    fn only_page_view_events_are_counted() {
        let types = [
            "page_view",
            "click",
            "add_to_cart",
            "purchase",
            "error",
            "session_start",
            "session_end",
            "PAGE_VIEW",
            "page_views",
            "",
        ];
        let pages = ["/", "/products", "/cart", "/checkout", "/product/1"];
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let mut events = Vec::new();
        let mut want: BTreeMap<(String, i64), f64> = BTreeMap::new();
        for _ in 0..5_000 {
            let ty = types[next(types.len() as u64) as usize];
            let page = pages[next(pages.len() as u64) as usize];
            let ts = next(60_000) as i64;
            if ty == "page_view" {
                *want
                    .entry((page.to_string(), ts / 5_000 * 5_000))
                    .or_default() += 1.0;
            }
            events.push(ev(ty, page, ts));
        }
        // Events without a type are not page views either.
        events.push(json!({"page": "/", "timestamp": 7}));
        let got: BTreeMap<(String, i64), f64> = counts(&events)
            .into_iter()
            .map(|(page, start, end, n)| {
                assert_eq!(end - start, 5_000);
                ((page, start), n)
            })
            .collect();
        assert_eq!(got, want);
        let views: f64 = want.values().sum();
        assert!(
            (300.0..700.0).contains(&views) && want.len() == 60,
            "{views} views in {} windows",
            want.len()
        );
    }

    #[test]
    fn a_window_without_page_views_emits_nothing() {
        let events = [
            ev("click", "/home", 1_000),
            ev("purchase", "/checkout", 6_000),
            ev("page_view", "/checkout", 7_000),
        ];
        assert_eq!(
            counts(&events),
            vec![("/checkout".into(), 5_000, 10_000, 1.0)]
        );
    }

    #[test]
    fn missing_page_is_the_empty_key() {
        let out =
            counts(&[json!({"event_type": "page_view", "timestamp": "2024-05-01T00:00:03Z"})]);
        assert_eq!(
            out,
            vec![("".into(), 1_714_521_600_000, 1_714_521_605_000, 1.0)]
        );
    }

    #[test]
    fn no_events_no_metrics_and_no_config() {
        assert!(counts(&[]).is_empty());
        let d = PageViews::describe();
        assert_eq!(d.fields, ["event_type"], "reads the event type only");
        assert_eq!(d.default_config, "{}");
        assert!(run_aggregator::<PageViews>(r#"{"types": ["click"]}"#, &[]).is_err());
    }
}

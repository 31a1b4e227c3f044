//! page-views 1.2.0-diff: the shipped page-views with one deliberate change
//! for the shadow tests — a window that starts on a 20 s boundary reports
//! 1 000 more. The state is the same, so it may shadow (and replace)
//! page-views with a copy of its state; exactly those windows differ.
use rtap_sdk::prelude::*;

#[derive(Default)]
pub struct PageViews;

impl Aggregator for PageViews {
    type State = u64;
    fn describe() -> Description {
        Description::aggregator("page-views", "1.2.0-diff")
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
    fn finish(&self, views: u64, window: Window, out: &mut Metrics) {
        if views > 0 {
            let extra = if window.start % 20_000 == 0 { 1_000 } else { 0 };
            out.single("page_views", (views + extra) as f64);
        }
    }
}
rtap_sdk::export_aggregator!(PageViews);

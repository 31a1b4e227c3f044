//! page-views 1.4.0 panics on every event: the upload's smoke test on
//! recent events must refuse it with the panic's message.
use rtap_sdk::prelude::*;

#[derive(Default)]
pub struct PageViews;

impl Aggregator for PageViews {
    type State = u64;
    fn describe() -> Description {
        Description::aggregator("page-views", "1.4.0")
            .key_by("page")
            .tumbling(5_000)
    }
    fn add(&self, count: &mut u64, events: &Events) {
        if !events.is_empty() {
            panic!("page-views 1.4.0 cannot count {} events", events.len());
        }
        *count += 0;
    }
    fn merge(&self, count: &mut u64, other: u64) {
        *count += other;
    }
    fn finish(&self, count: u64, _: Window, out: &mut Metrics) {
        out.single("page_views", count as f64);
    }
}
rtap_sdk::export_aggregator!(PageViews);

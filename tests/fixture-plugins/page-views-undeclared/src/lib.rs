//! page-views 1.2.0 reads `page` without declaring it in `fields`: every
//! call panics. The upload's smoke test must refuse it with that message.
use rtap_sdk::prelude::*;

#[derive(Default)]
pub struct PageViews;

impl Aggregator for PageViews {
    type State = u64;
    fn describe() -> Description {
        Description::aggregator("page-views", "1.2.0")
            .key_by("page")
            .tumbling(5_000)
    }
    fn add(&self, count: &mut u64, events: &Events) {
        let pages = events.text("page");
        *count += (0..events.len())
            .filter(|&i| pages.get(i).is_some())
            .count() as u64;
    }
    fn merge(&self, count: &mut u64, other: u64) {
        *count += other;
    }
    fn finish(&self, count: u64, _: Window, out: &mut Metrics) {
        out.single("page_views", count as f64);
    }
}
rtap_sdk::export_aggregator!(PageViews);

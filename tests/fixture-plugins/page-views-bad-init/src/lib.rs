//! A page-views whose init traps: the swap must be refused.
use rtap_sdk::prelude::*;

#[derive(Default)]
pub struct PageViews;

impl Aggregator for PageViews {
    type State = u64;
    fn describe() -> Description {
        Description::aggregator("page-views", "9.9.9")
            .key_by("page")
            .tumbling(5_000)
            .fields(&["event_type"])
    }
    fn configure(&mut self, _config: &Config) -> Result<(), String> {
        panic!("page-views-bad-init: init always traps");
    }
    fn add(&self, n: &mut u64, events: &Events) {
        *n += events.text("event_type").count("page_view") as u64;
    }
    fn merge(&self, n: &mut u64, o: u64) {
        *n += o;
    }
    fn finish(&self, n: u64, _w: Window, out: &mut Metrics) {
        out.single("page_views", n as f64);
    }
}
rtap_sdk::export_aggregator!(PageViews);

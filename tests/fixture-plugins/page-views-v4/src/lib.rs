//! page-views 3.0.0: state schema 3 and no migration: a swap must be refused
//! unless the caller resets the state.
use rtap_sdk::prelude::*;

#[derive(Default)]
pub struct PageViews;

impl Aggregator for PageViews {
    type State = (u64, u64);
    fn describe() -> Description {
        Description::aggregator("page-views", "3.0.0")
            .key_by("page")
            .tumbling(5_000)
            .fields(&["event_type"])
            .state_schema(3)
    }
    fn add(&self, s: &mut (u64, u64), events: &Events) {
        s.0 += events.text("event_type").count("page_view") as u64;
    }
    fn merge(&self, s: &mut (u64, u64), o: (u64, u64)) {
        s.0 += o.0;
    }
    fn finish(&self, s: (u64, u64), _w: Window, out: &mut Metrics) {
        if s.0 > 0 {
            out.single("page_views", s.0 as f64);
        }
    }
}
rtap_sdk::export_aggregator!(PageViews);

//! page-views 1.3.0 changes its state from a counter to a struct but keeps
//! state schema 1: the states 1.0.0 wrote would not decode. The upload must
//! be refused, naming the schema to bump.
use rtap_sdk::prelude::*;

#[derive(Default)]
pub struct PageViews;

#[derive(Default, Serialize, Deserialize)]
pub struct Counts {
    views: u64,
    batches: u32,
}

impl Aggregator for PageViews {
    type State = Counts;
    fn describe() -> Description {
        Description::aggregator("page-views", "1.3.0")
            .key_by("page")
            .tumbling(5_000)
    }
    fn add(&self, s: &mut Counts, events: &Events) {
        s.views += events.len() as u64;
        s.batches += 1;
    }
    fn merge(&self, s: &mut Counts, o: Counts) {
        s.views += o.views;
        s.batches += o.batches;
    }
    fn finish(&self, s: Counts, _: Window, out: &mut Metrics) {
        out.single("page_views", s.views as f64);
    }
}
rtap_sdk::export_aggregator!(PageViews);

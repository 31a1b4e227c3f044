//! A page-views whose migration loops forever: the dry-run must hit the
//! deadline and the swap be refused.
use rtap_sdk::prelude::*;

#[derive(Default)]
pub struct PageViews;

impl Aggregator for PageViews {
    type State = (u64, u8);
    fn describe() -> Description {
        Description::aggregator("page-views", "2.0.1")
            .key_by("page")
            .tumbling(5_000)
            .fields(&["event_type"])
            .state_schema(2)
            .migrates_from(&[1])
    }
    fn add(&self, s: &mut (u64, u8), events: &Events) {
        s.0 += events.text("event_type").count("page_view") as u64;
    }
    fn merge(&self, s: &mut (u64, u8), o: (u64, u8)) {
        s.0 += o.0;
    }
    fn finish(&self, s: (u64, u8), _w: Window, out: &mut Metrics) {
        out.single("page_views", s.0 as f64);
    }
    fn migrate(_from: u32, _state: &[u8]) -> Result<(u64, u8), String> {
        let mut x = 0u64;
        loop {
            x = std::hint::black_box(x.wrapping_add(1));
        }
    }
}
rtap_sdk::export_aggregator!(PageViews);

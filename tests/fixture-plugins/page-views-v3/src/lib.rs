//! page-views 2.0.0: the state becomes a struct (schema 2); migrates from the
//! plain counter of schema 1. Same output.
use rtap_sdk::prelude::*;

#[derive(Default)]
pub struct PageViews;

#[derive(Default, Serialize, Deserialize)]
pub struct Counts {
    pub views: u64,
    pub batches: u32,
}

impl Aggregator for PageViews {
    type State = Counts;
    fn describe() -> Description {
        Description::aggregator("page-views", "2.0.0")
            .key_by("page")
            .tumbling(5_000)
            .fields(&["event_type"])
            .state_schema(2)
            .migrates_from(&[1])
    }
    fn add(&self, s: &mut Counts, events: &Events) {
        s.views += events.text("event_type").count("page_view") as u64;
        s.batches += 1;
    }
    fn merge(&self, s: &mut Counts, o: Counts) {
        s.views += o.views;
        s.batches += o.batches;
    }
    fn finish(&self, s: Counts, _w: Window, out: &mut Metrics) {
        if s.views > 0 {
            out.single("page_views", s.views as f64);
        }
    }
    fn migrate(from: u32, state: &[u8]) -> Result<Counts, String> {
        match from {
            1 => Ok(Counts {
                views: rtap_sdk::decode_state::<u64>(state)?,
                batches: 0,
            }),
            other => Err(format!("cannot migrate from schema {other}")),
        }
    }
}
rtap_sdk::export_aggregator!(PageViews);

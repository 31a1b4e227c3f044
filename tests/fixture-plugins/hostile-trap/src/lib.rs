//! Panics (a Wasm trap) when a batch holds an event for page `/trap`.
use rtap_sdk::prelude::*;

#[derive(Default)]
pub struct Trap;

impl Aggregator for Trap {
    type State = u64;
    fn describe() -> Description {
        Description::aggregator("hostile-trap", "1.0.0")
            .tumbling(5_000)
            .fields(&["page"])
    }
    fn add(&self, n: &mut u64, events: &Events) {
        let pages = events.text("page");
        if let Some(i) = (0..events.len()).find(|&i| pages.is(i, "/trap")) {
            panic!("hostile-trap: refusing event {i} for page /trap");
        }
        *n += events.len() as u64;
    }
    fn merge(&self, n: &mut u64, o: u64) {
        *n += o;
    }
    fn finish(&self, n: u64, _w: Window, out: &mut Metrics) {
        out.single("count", n as f64);
    }
}
rtap_sdk::export_aggregator!(Trap);

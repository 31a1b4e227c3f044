//! Emits 200 000 metrics for every window: the host must refuse the flood.
use rtap_sdk::prelude::*;

#[derive(Default)]
pub struct Flood;

impl Aggregator for Flood {
    type State = u64;
    fn describe() -> Description {
        Description::aggregator("hostile-output", "1.0.0").tumbling(5_000)
    }
    fn add(&self, n: &mut u64, events: &Events) {
        *n += events.len() as u64;
    }
    fn merge(&self, n: &mut u64, o: u64) {
        *n += o;
    }
    fn finish(&self, _n: u64, _w: Window, out: &mut Metrics) {
        for _ in 0..200_000 {
            out.single("flood", 1.0);
        }
    }
}
rtap_sdk::export_aggregator!(Flood);

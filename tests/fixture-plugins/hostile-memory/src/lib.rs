//! Allocates without bound when a batch holds an event for page `/bomb`: the
//! host's memory cap must stop it.
use rtap_sdk::prelude::*;

#[derive(Default)]
pub struct Bomb;

impl Aggregator for Bomb {
    type State = u64;
    fn describe() -> Description {
        Description::aggregator("hostile-memory", "1.0.0")
            .tumbling(5_000)
            .fields(&["page"])
    }
    fn add(&self, n: &mut u64, events: &Events) {
        let pages = events.text("page");
        if (0..events.len()).any(|i| pages.is(i, "/bomb")) {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
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
rtap_sdk::export_aggregator!(Bomb);

//! Loops forever when a batch holds an event for page `/loop`: the host's
//! epoch deadline must stop it.
use rtap_sdk::prelude::*;

#[derive(Default)]
pub struct Loop;

impl Aggregator for Loop {
    type State = u64;
    fn describe() -> Description {
        Description::aggregator("hostile-loop", "1.0.0")
            .tumbling(5_000)
            .fields(&["page"])
    }
    fn add(&self, n: &mut u64, events: &Events) {
        let pages = events.text("page");
        if (0..events.len()).any(|i| pages.is(i, "/loop")) {
            let mut x = 0u64;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
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
rtap_sdk::export_aggregator!(Loop);

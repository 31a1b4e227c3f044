//! Thirty metrics per user per 1 s tumbling window (`m0` … `m29`, each the
//! window's event count): with 4 096 windows finishing in one call, past the
//! 100 000 metrics a call may return.
use rtap_sdk::prelude::*;

#[derive(Default)]
pub struct Many;

impl Aggregator for Many {
    type State = u64;
    fn describe() -> Description {
        Description::aggregator("many-metrics", "1.0.0")
            .key_by("user_id")
            .tumbling(1_000)
    }
    fn add(&self, n: &mut u64, events: &Events) {
        *n += events.len() as u64;
    }
    fn merge(&self, n: &mut u64, o: u64) {
        *n += o;
    }
    fn finish(&self, n: u64, _w: Window, out: &mut Metrics) {
        for i in 0..30 {
            out.single(&format!("m{i}"), n as f64);
        }
    }
}
rtap_sdk::export_aggregator!(Many);

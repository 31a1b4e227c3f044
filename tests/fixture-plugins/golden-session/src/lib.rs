//! Count and latency sum per user over sessions with a 3 s gap.
use rtap_sdk::prelude::*;

#[derive(Default)]
pub struct Golden;

impl Aggregator for Golden {
    type State = (u64, f64);
    fn describe() -> Description {
        Description::aggregator("golden-session", "1.0.0")
            .key_by("user_id")
            .session(3_000)
            .fields(&["latency_ms"])
    }
    fn add(&self, s: &mut (u64, f64), events: &Events) {
        s.0 += events.len() as u64;
        s.1 += events
            .float("latency_ms")
            .iter()
            .filter(|v| !v.is_nan())
            .sum::<f64>();
    }
    fn merge(&self, s: &mut (u64, f64), o: (u64, f64)) {
        s.0 += o.0;
        s.1 += o.1;
    }
    fn finish(&self, s: (u64, f64), _w: Window, out: &mut Metrics) {
        out.single("count", s.0 as f64);
        out.single("latency_sum", s.1);
    }
}
rtap_sdk::export_aggregator!(Golden);

//! Counts events per 5 s window and logs on every call: `info!` and
//! `println!`/`eprintln!` once per call, `debug!` once per event. Logging
//! must never make it fail, however much it writes.
use rtap_sdk::prelude::*;

#[derive(Default)]
pub struct Chatty;

impl Aggregator for Chatty {
    type State = u64;
    fn describe() -> Description {
        Description::aggregator("chatty", "1.0.0").tumbling(5_000)
    }
    fn add(&self, n: &mut u64, events: &Events) {
        info!("add: {} events on top of {n}", events.len());
        println!("stdout: add {} events", events.len());
        eprintln!("stderr: add {} events", events.len());
        for i in 0..events.len() {
            debug!("event {i} of {}", events.len());
        }
        *n += events.len() as u64;
    }
    fn merge(&self, n: &mut u64, o: u64) {
        *n += o;
    }
    fn finish(&self, n: u64, w: Window, out: &mut Metrics) {
        info!("window {}: {n} events", w.start);
        out.single("count", n as f64);
    }
}
rtap_sdk::export_aggregator!(Chatty);
